"""The jobs repos the benchmarks run on, and how they measure a process.

`ensure_repo(jobs)` generates (once, then reuses) a committed, packed jobs repo of
`jobs` jobs under `benchmarks/.work/`: settings, teams, a profile, a reusable schedule
and per job a ~30-line YAML file and a SQL file, 100 jobs per folder. `measure` runs a
whole child process and reads its wall time, CPU time and peak RSS (`os.wait4`).
Used by `validate_bench.py` and `plan_bench.py`; not a test fixture.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
RESULTS = HERE / "RESULTS.md"
GENERATOR_VERSION = 2
"""Bump when the generated repo changes, so cached repos are rebuilt."""

JOBS_PER_FOLDER = 100
TEAMS = ("sales", "finance", "marketing", "platform", "risk")
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
CRONS = ("0 2 * * *", "*/15 * * * *", "30 6 * * 1-5", "0 */6 * * *", "5 4 1 * *")
POLICIES = ("ALLOW", "FORBID", "REPLACE")
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
}

# -- the generated repo ---------------------------------------------------------------

SETTINGS = """\
# yaml-language-server: $schema=schemas/reconciler.json
timezone: UTC
defaultProfile: default
catalogs:
  warehouse: {engine: duckdb, path: catalogs/warehouse.duckdb, default: true}
  scratch: {engine: duckdb, path: catalogs/scratch.duckdb}
targets:
  local: {maxConcurrentRuns: 8}
limits: {maxTimeoutSeconds: 86400, defaultTimeoutSeconds: 3600, maxWorkers: 50}
retentionDays: 90
"""

PROFILE = """\
mode: standalone
engine: duckdb
driver: {instanceType: m5.large, diskGiB: 50}
config: {THREADS: "4"}
"""

HOURLY = """\
cron: "0 * * * *"
timezone: UTC
concurrencyPolicy: FORBID
"""


def teams_yaml() -> str:
    lines = ["admins: [carol]", "teams:"]
    lines += [f"  {team}: {{members: [{team}-lead, {team}-dev]}}" for team in TEAMS]
    return "\n".join(lines) + "\n"


def job_yaml(n: int) -> str:
    """About 30 lines: a SQL snapshot job with two schedules (one reusable)."""
    team = TEAMS[n % len(TEAMS)]
    shared = TEAMS[(n + 1) % len(TEAMS)]
    return f"""\
# yaml-language-server: $schema=../../schemas/job.json
description: >-
  Nightly rollup number {n} of the {team} team's orders,
  written to the warehouse catalog
team: {team}
sharedWith: [{shared}]
suspended: false
sql:
  file: job{n:05d}.sql
  catalog: {"warehouse" if n % 3 else "scratch"}
profile: default
arguments:
  day: today
  region: eu-{n % 7}
  limit: {100 + n % 50}
timeoutSeconds: {600 + n % 3000}
taskKillGracePeriodSeconds: 30
restart:
  policy: ON_FAILURE
  maxAttempts: 3
  activeDeadlineSeconds: 600
maxConcurrentRuns: 1
labels:
  owner: data-eng
  tier: "{n % 3}"
  cost-center: cc-{n % 11}
schedules:
  - id: main
    cron: "{CRONS[n % len(CRONS)]}"
    timezone: {ZONES[n % len(ZONES)]}
    startingDeadlineSeconds: 900
    concurrencyPolicy: {POLICIES[n % len(POLICIES)]}
  - use: hourly
"""


def job_sql(n: int) -> str:
    return (
        f"-- rollup {n}\n"
        "SELECT status, count(*) AS orders\n"
        "FROM orders\n"
        f"WHERE region = 'eu-{n % 7}' AND day = current_date\n"
        "GROUP BY status\nORDER BY status;\n"
    )


def generate(repo: Path, jobs: int) -> None:
    """Write and commit a jobs repo of `jobs` jobs at `repo` (replacing what is there)."""
    if repo.exists():
        shutil.rmtree(repo)
    (repo / "profiles").mkdir(parents=True)
    (repo / "schedules").mkdir()
    (repo / "reconciler.yaml").write_text(SETTINGS)
    (repo / "teams.yaml").write_text(teams_yaml())
    (repo / "profiles" / "default.yaml").write_text(PROFILE)
    (repo / "schedules" / "hourly.yaml").write_text(HOURLY)
    for n in range(jobs):
        folder = repo / "jobs" / f"f{n // JOBS_PER_FOLDER:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"job{n:05d}.yaml").write_text(job_yaml(n))
        (folder / f"job{n:05d}.sql").write_text(job_sql(n))
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    git = ["git", "-C", str(repo), "-c", "gc.auto=0"]
    subprocess.run([*git, "commit", "-q", "-m", f"{jobs} jobs"], check=True, env=env)
    # Packed, as a clone is, whatever the size (and no automatic gc running in the
    # background while we measure).
    subprocess.run([*git, "gc", "-q"], check=True, env=env)


def ensure_repo(jobs: int) -> Path:
    """The generated repo of `jobs` jobs, built only when missing or out of date."""
    repo = WORK / f"jobs-{jobs}"
    stamp = repo / ".git" / "bench.json"
    wanted = {"jobs": jobs, "generator": GENERATOR_VERSION}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return repo
    print(f"generating {jobs} jobs in {repo} ...", file=sys.stderr)
    generate(repo, jobs)
    stamp.write_text(json.dumps(wanted))
    return repo


# -- measuring ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    wall: float
    cpu: float
    rss_mib: float


def measure(argv: list[str], *, stdin: Path | None = None, codes: tuple[int, ...] = (0,)) -> Sample:
    """Run `argv` once (stdin from a file, stdout discarded); its wall time, CPU time and
    peak RSS. Exits with the child's stderr when its exit code is not in `codes`."""
    with tempfile.TemporaryFile() as err:
        with open(stdin or os.devnull, "rb") as source:
            start = time.perf_counter()
            proc = subprocess.Popen(argv, stdin=source, stdout=subprocess.DEVNULL, stderr=err)
            # wait4 (not proc.wait) so the child's own rusage is ours to read
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code not in codes:
            err.seek(0)
            raise SystemExit(f"{shlex.join(argv)} exited {code}:\n{err.read().decode()}")
    return Sample(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        rss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
    )


def write_blob_list(repo: Path) -> Path:
    """Every blob SHA of HEAD's tree, one a line, in a file next to the repo."""
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    shas = [line.split()[2] for line in out.splitlines() if line.split()[1] == "blob"]
    listing = repo.parent / f"{repo.name}.blobs"
    listing.write_text("".join(f"{sha}\n" for sha in shas))
    return listing


def median_sample(samples: list[Sample]) -> Sample:
    return Sample(
        wall=statistics.median(s.wall for s in samples),
        cpu=statistics.median(s.cpu for s in samples),
        rss_mib=statistics.median(s.rss_mib for s in samples),
    )


def git_version() -> str:
    return subprocess.run(
        ["git", "--version"], check=True, capture_output=True, text=True
    ).stdout.strip()


def machine() -> str:
    """The machine, as the RESULTS.md sections state it."""
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{git_version()}; load average {os.getloadavg()[0]:.1f} before the runs "
        "(other work shares the machine)"
    )


def today() -> str:
    return dt.date.today().isoformat()


def write_results(section: str, text: str) -> None:
    """Replace this benchmark's section of RESULTS.md (up to the next `## `), or append it."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = old.find(f"\n{section}\n")
    if start == -1:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + 1)
        rest = old[end:] if end != -1 else "\n"
        new = old[: start + 1] + text + rest
    RESULTS.write_text(new)
