"""Benchmark of `reconciler plan` and `reconciler apply` on generated jobs repos.

For each size it makes (once, then reuses) a copy of the generated jobs repo of
`jobsrepo.py` under `benchmarks/.work/plan-N/` with no remote and two commits on main:
`base` (the generated repo) and its child, which changes one job file (an update).
Stores are SQLite files in a temp dir (`--db sqlite:///...`), copied from templates
before each run, outside the measurement. It measures, as whole child processes, the
median over `--runs` of wall time, CPU time (user + system of the child) and peak RSS:

- floor: `git cat-file --batch` reading every blob of main's tree;
- cold plan: `plan --ref base` with an empty local cache (`.reconciler/cache` deleted)
  against a store applied at `base`: every job a no-op, but nothing parsed locally;
  the store's facts make this warm-ish;
- cold plan, empty store: the same with a freshly migrated store: every job a create;
- plan after one change: `plan` of main's tip against the store at `base`, the local
  cache as a plan of `base` left it (the developer's loop);
- apply of one change: `apply --yes` of main's tip, store at `base`, same cache;
- apply of all jobs: `apply --yes` of main's tip into a freshly migrated store, with an
  empty local cache.

It prints a table with ratios to the floor and replaces its section in
`benchmarks/RESULTS.md`.

    .venv/bin/python benchmarks/plan_bench.py [--jobs 1000 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jobsrepo import (
    GENERATOR_VERSION,
    GIT_ENV,
    JOBS_PER_FOLDER,
    RESULTS,
    ROOT,
    WORK,
    Sample,
    ensure_repo,
    job_yaml,
    machine,
    measure,
    median_sample,
    today,
    write_blob_list,
    write_results,
)

SECTION = "## plan"
SETUP_VERSION = 1
"""Bump when the plan repo's setup changes, so cached copies are rebuilt."""

CHANGED_JOB = 42
"""The job whose file the second commit changes (its timeout)."""

TARGETS: dict[str, tuple[float | None, float | None]] = {
    # measurement -> (wall s, peak RSS MiB) at 10,000 jobs
    "cold plan": (5.0, 400.0),
    "cold plan, empty store": (5.0, 400.0),
    "plan after one change": (0.6, None),
    "apply of one change": (1.0, None),
    "apply of all jobs": (30.0, None),
}


# -- the repo and the stores ----------------------------------------------------------


def _git(
    repo: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "gc.auto=0", *args],
        input=stdin,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV, **(env or {})},
    ).stdout.strip()


def changed_path(n: int = CHANGED_JOB) -> str:
    return f"jobs/f{n // JOBS_PER_FOLDER:03d}/job{n:05d}.yaml"


def ensure_plan_repo(jobs: int) -> Path:
    """A copy of the generated repo without a remote: main = base + one changed job."""
    source = ensure_repo(jobs)
    repo = WORK / f"plan-{jobs}"
    stamp = repo / ".git" / "plan-bench.json"
    wanted = {"jobs": jobs, "generator": GENERATOR_VERSION, "setup": SETUP_VERSION}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return repo
    print(f"setting up {repo} ...", file=sys.stderr)
    if repo.exists():
        shutil.rmtree(repo)
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(source), str(repo)], check=True)
    _git(repo, "remote", "remove", "origin")
    base = _git(repo, "rev-parse", "HEAD")
    _git(repo, "tag", "base", base)
    path = changed_path()
    text = job_yaml(CHANGED_JOB).replace("timeoutSeconds: ", "timeoutSeconds: 1", 1)  # 642 -> 1642
    blob = _git(repo, "hash-object", "-w", "--stdin", stdin=text)
    index = {"GIT_INDEX_FILE": str(repo / ".git" / "plan-bench.index")}
    _git(repo, "read-tree", base, env=index)
    _git(repo, "update-index", "--cacheinfo", f"100644,{blob},{path}", env=index)
    tree = _git(repo, "write-tree", env=index)
    child = _git(repo, "commit-tree", tree, "-p", base, "-m", f"change {path}")
    _git(repo, "update-ref", "refs/heads/main", child)
    _git(repo, "gc", "-q")
    stamp.write_text(json.dumps(wanted))
    return repo


@dataclass(frozen=True, slots=True, kw_only=True)
class Fixtures:
    """Template stores and caches to copy before each run."""

    repo: Path
    tmp: Path
    empty_db: Path
    base_db: Path
    base_cache: Path

    @property
    def cache(self) -> Path:
        return self.repo / ".reconciler" / "cache"

    @property
    def run_db(self) -> Path:
        return self.tmp / "run.db"

    def db_url(self) -> str:
        return f"sqlite:///{self.run_db}"

    def use_db(self, template: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.run_db}{suffix}").unlink(missing_ok=True)
            if Path(f"{template}{suffix}").exists():
                shutil.copyfile(f"{template}{suffix}", f"{self.run_db}{suffix}")

    def empty_cache(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)

    def use_base_cache(self) -> None:
        self.empty_cache()
        shutil.copytree(self.base_cache, self.cache)


def _run(argv: list[str], *, codes: tuple[int, ...] = (0,)) -> str:
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode not in codes:
        raise SystemExit(f"{shlex.join(argv)} exited {out.returncode}:\n{out.stderr[-4000:]}")
    return out.stdout


def make_fixtures(repo: Path, tmp: Path, reconciler: str) -> Fixtures:
    """Migrate an empty store; apply `base` to another (through a saved plan, as main is
    one commit ahead); record the cache a plan of `base` leaves."""
    fx = Fixtures(
        repo=repo,
        tmp=tmp,
        empty_db=tmp / "empty.db",
        base_db=tmp / "base.db",
        base_cache=tmp / "base-cache",
    )
    # In a child: the benchmark's own RSS must stay small, as Linux carries a parent's
    # peak RSS over fork and exec into the child's ru_maxrss.
    migrate = "import sys; from reconciler.store import Store; Store.open(sys.argv[1]).close()"
    _run([sys.executable, "-c", migrate, f"sqlite:///{fx.empty_db}"])
    fx.use_db(fx.empty_db)
    fx.empty_cache()
    common = ["--repo", str(repo), "--db", fx.db_url()]
    saved = tmp / "base-plan.json"
    _run([reconciler, "plan", *common, "--ref", "base", "--out", str(saved)])
    _run([reconciler, "apply", str(saved), *common, "--yes", "--as", "bench"])
    shutil.copyfile(fx.run_db, fx.base_db)
    fx.empty_cache()
    _run([reconciler, "plan", *common, "--ref", "base"])
    shutil.copytree(fx.cache, fx.base_cache)
    return fx


# -- measuring ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    prepare: Callable[[], None]
    argv: list[str]
    expect: str
    """Text the first (checking) run must print."""
    codes: tuple[int, ...] = (0,)


def scenarios(fx: Fixtures, reconciler: str, jobs: int) -> list[Scenario]:
    common = ["--repo", str(fx.repo), "--db", fx.db_url()]
    plan = [reconciler, "plan", *common, "--detailed-exitcode"]
    apply = [reconciler, "apply", *common, "--yes", "--as", "bench"]

    def prepare(db: Path, cache: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            fx.use_db(db)
            cache()

        return run

    return [
        Scenario(
            name="cold plan",
            prepare=prepare(fx.base_db, fx.empty_cache),
            argv=[*plan, "--ref", "base"],
            expect="No changes",
        ),
        Scenario(
            name="cold plan, empty store",
            prepare=prepare(fx.empty_db, fx.empty_cache),
            argv=[*plan, "--ref", "base"],
            expect=f'"create": {jobs}',
            codes=(2,),
        ),
        Scenario(
            name="plan after one change",
            prepare=prepare(fx.base_db, fx.use_base_cache),
            argv=plan,
            expect='"update": 1',
            codes=(2,),
        ),
        Scenario(
            name="apply of one change",
            prepare=prepare(fx.base_db, fx.use_base_cache),
            argv=apply,
            expect="0 created, 1 updated, 0 deleted",
        ),
        Scenario(
            name="apply of all jobs",
            prepare=prepare(fx.empty_db, fx.empty_cache),
            argv=apply,
            expect=f"{jobs} created, 0 updated, 0 deleted",
        ),
    ]


def check(s: Scenario) -> None:
    """Run `s` once, unmeasured; exit unless it does what it claims."""
    s.prepare()
    argv = [*s.argv, "-o", "json"] if s.expect.startswith('"') else s.argv
    out = _run(argv, codes=s.codes)
    if s.expect not in out:
        raise SystemExit(f"{s.name}: {shlex.join(argv)} did not print {s.expect!r}:\n{out[-3000:]}")


@dataclass(frozen=True, slots=True)
class Row:
    jobs: int
    samples: dict[str, Sample]


def bench(jobs: int, runs: int, reconciler: str) -> Row:
    repo = ensure_plan_repo(jobs)
    floor_argv = ["git", "-C", str(repo), "cat-file", "--batch"]
    shas = write_blob_list(repo)
    with tempfile.TemporaryDirectory(prefix="plan-bench-") as tmp:
        fx = make_fixtures(repo, Path(tmp), reconciler)
        measure(floor_argv, stdin=shas)  # warm the page cache
        samples = {"floor": median_sample([measure(floor_argv, stdin=shas) for _ in range(runs)])}
        for s in scenarios(fx, reconciler, jobs):
            check(s)
            taken = []
            for _ in range(runs):
                s.prepare()
                taken.append(measure(s.argv, codes=s.codes))
            samples[s.name] = median_sample(taken)
            print(f"{jobs:>6} {s.name}: {samples[s.name].wall:.3f} s", file=sys.stderr)
        fx.empty_cache()
    return Row(jobs=jobs, samples=samples)


# -- reporting ------------------------------------------------------------------------


def _target(name: str, jobs: int) -> str:
    wall, rss = TARGETS.get(name, (None, None))
    if jobs != 10_000 or wall is None:
        return ""
    return f"<= {wall:g} s" + (f", <= {rss:g} MiB" if rss is not None else "")


def table(rows: list[Row]) -> str:
    lines = [
        "| jobs | measurement | wall s | CPU s | peak RSS MiB | wall / floor | target |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        floor = r.samples["floor"].wall
        for name, s in r.samples.items():
            ratio = "1x" if name == "floor" else f"{s.wall / floor:.0f}x" if floor else "-"
            lines.append(
                f"| {r.jobs:,} | {name} | {s.wall:.3f} | {s.cpu:.3f} | {s.rss_mib:.0f} "
                f"| {ratio} | {_target(name, r.jobs)} |"
            )
    return "\n".join(lines)


def section(rows: list[Row], command: str, runs: int) -> str:
    return (
        f"{SECTION}\n\n"
        f"Date: {today()}  \n"
        f"Machine: {machine()}  \n"
        f"Command: `{command}`  \n"
        f"Median of {runs} runs, each a whole process; CPU is user + system of the child, "
        "RSS its peak; reconciler's bytecode compiled beforehand. SQLite store in a temp dir, "
        "copied from a template before each run. "
        "Floor: `git cat-file --batch` reading every blob of main's tree. Cold plan: "
        "`plan --ref base`, local cache deleted, store applied at `base` (all no-op; the "
        "store's facts spare the parsing) or freshly migrated (all create). Plan after one "
        "change: main's tip (one job file changed) against the store at `base`, cache as a "
        "plan of `base` left it. Apply of one change: the same, `apply --yes`. Apply of all "
        "jobs: into a freshly migrated store, cache deleted.\n\n"
        f"{table(rows)}\n\n"
        "For context only (not measured here): `terraform plan` of 10,000 similar resources "
        "takes ~34 s and 1.7 GiB; `terraform apply` of 10,000 from empty takes over an hour.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    reconciler = str(Path(sys.executable).parent / "reconciler")
    # Bytecode as an installed package has it, even where PYTHONDONTWRITEBYTECODE is set
    # (else every run compiles reconciler's sources, ~0.1 s).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    compile_argv = [sys.executable, "-m", "compileall", "-q", str(ROOT / "reconciler")]
    subprocess.run(compile_argv, check=True, env=env, stdout=subprocess.DEVNULL)
    rows = [bench(jobs, args.runs, reconciler) for jobs in args.jobs]
    print(table(rows))
    if not args.no_write:
        command = ".venv/bin/python benchmarks/plan_bench.py " + shlex.join(
            ["--jobs", *map(str, args.jobs), "--runs", str(args.runs)]
        )
        write_results(SECTION, section(rows, command, args.runs))
        print(f"updated {RESULTS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
