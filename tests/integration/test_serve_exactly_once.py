"""Exactly once under SIGKILL: real `reconciler serve` processes on one SQLite store are
killed at random moments while the clock file moves through a window full of scheduled
times; afterwards every scheduled time of the window has exactly one fire-ledger row (or
is counted in a catch-up's overflow), no time is decided twice, a FIRED row has exactly
one run, no run is duplicated, and nothing is MISSED for `deadline` before its deadline.

Also the helpers the other `serve` test modules share: the clock file, starting and
killing `serve`, polling with deadlines, and the ledger check.

Knobs: `RECONCILER_SERVE_KILL_TRIALS` (default 50) and `RECONCILER_SERVE_KILL_SEED` (the
random seed, printed).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

from reconciler.schedule import next_fire_times
from reconciler.store import Store
from reconciler.store.fires import Fire, FireStore
from reconciler.store.tables import runs as runs_table
from tests.conftest import commit_tree, make_jobs_repo

RECONCILER = str(Path(sys.executable).parent / "reconciler")
KILL_TRIALS = int(os.environ.get("RECONCILER_SERVE_KILL_TRIALS", "50"))
DEADLINE = 30.0
"""Seconds any one wait may take before the test fails instead of hanging."""

T = TypeVar("T")


# --- helpers shared by the serve tests -----------------------------------------------------


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class ClockFile:
    """The `RECONCILER_CLOCK_FILE` of a test: written atomically, only moved forward."""

    def __init__(self, path: Path, start: datetime) -> None:
        self.path = path
        self.now = start
        self.set(start)

    def set(self, at: datetime) -> None:
        self.now = at
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(iso(at) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)  # a reader never sees a half-written instant

    def advance(self, seconds: float) -> datetime:
        self.set(self.now + timedelta(seconds=seconds))
        return self.now


def wait_for(what: str, check: Callable[[], T | None], timeout: float = DEADLINE) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.03)


def says(serve: Serve, text: str) -> Callable[[], bool]:
    """A check for `wait_for`: whether `serve`'s output contains `text` yet."""
    return lambda: text in serve.output()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without RECONCILER_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env.update(extra)
    return env


@dataclass
class Serve:
    """One `reconciler serve` process, its output in a log file."""

    proc: subprocess.Popen[bytes]
    log: Path
    offset: int = 0
    """Where this process's output starts in `log` (several processes may share one)."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        with self.log.open("rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL the process and its group (git children too); wait for it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=DEADLINE)

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM; the exit code (fails the test if it takes longer than `timeout` s)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"serve did not exit within {timeout} s of SIGTERM:\n{self.output()}")

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_serve(*args: str, env: Mapping[str, str], log: Path, cwd: Path | None = None) -> Serve:
    """Start `reconciler serve ARGS` in its own process group, appending output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [RECONCILER, "serve", *args],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Serve(proc=proc, log=log, offset=offset)


@contextlib.contextmanager
def serving(
    *args: str, env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> Iterator[Serve]:
    """`start_serve`, killed at the end if the test left it running."""
    serve = start_serve(*args, env=env, log=log, cwd=cwd)
    try:
        yield serve
    finally:
        if serve.alive():
            serve.kill()


def reconciler(
    *args: str, env: Mapping[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RECONCILER, *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


@dataclass(frozen=True, slots=True)
class Sched:
    job: str
    schedule: str
    cron: str
    tz: str = "UTC"
    deadline: int | None = None


@dataclass
class LedgerStats:
    outcomes: Counter[str] = field(default_factory=Counter)
    overflow: int = 0
    runs: int = 0
    expected: int = 0
    decisions: int = 0


def read_fires(url: str) -> list[Fire]:
    with Store.open(url, migrate=False) as store:
        return FireStore(store).list()


def read_runs(url: str) -> list[Any]:
    with Store.open(url, migrate=False) as store, store.engine.connect() as conn:
        return list(
            conn.execute(
                select(
                    runs_table.c.id, runs_table.c.trigger, runs_table.c.job_id, runs_table.c.state
                )
            )
        )


def last_time(s: Sched, start: datetime, end: datetime) -> datetime:
    """The last scheduled time of `s` in (start, end] (`start` when there is none)."""
    times = [t for t in next_fire_times(s.cron, s.tz, start, 2000) if t <= end]
    return times[-1] if times else start


def check_ledger(
    url: str, schedules: list[Sched], start: datetime, end: datetime, where: str = ""
) -> LedgerStats:
    """Assert the exactly-once properties of the ledger for scheduled times in (start, end]."""
    fires = read_fires(url)
    runs = read_runs(url)
    stats = LedgerStats(runs=len(runs), decisions=len({f.decided_at for f in fires}))
    keys = Counter(f.key for f in fires)
    twice = [k for k, n in keys.items() if n > 1]
    assert not twice, f"{where}: decided twice: {twice[:5]}"
    by_schedule: dict[tuple[str, str], list[Fire]] = {}
    for f in fires:
        by_schedule.setdefault((f.job_id, f.schedule_id), []).append(f)
        stats.outcomes[f.outcome] += 1
        stats.overflow += f.overflow_count
    known = {(s.job, s.schedule) for s in schedules}
    assert set(by_schedule) <= known, (
        f"{where}: fires of unknown schedules {set(by_schedule) - known}"
    )
    for s in schedules:
        expected = [t for t in next_fire_times(s.cron, s.tz, start, 2000) if t <= end]
        stats.expected += len(expected)
        rows = by_schedule.get((s.job, s.schedule), [])
        times = [f.scheduled_at for f in rows]
        stray = sorted(set(times) - set(expected))
        assert not stray, f"{where}: {s.job}/{s.schedule}: rows at unscheduled times {stray[:5]}"
        overflow = sum(f.overflow_count for f in rows)
        missing = len(expected) - len(rows)
        assert missing == overflow, (
            f"{where}: {s.job}/{s.schedule}: {len(expected)} scheduled times in the window, "
            f"{len(rows)} rows + {overflow} counted in overflow; lost: "
            f"{sorted(set(expected) - set(times))[:10]}"
        )
        fired_per_decision = Counter(f.decided_at for f in rows if f.outcome == "FIRED")
        assert max(fired_per_decision.values(), default=0) <= 1, f"{where}: a fire storm"
        for f in rows:
            late = (f.decided_at - f.scheduled_at).total_seconds()
            assert late >= 0, f"{where}: {f} decided before its time"
            if f.outcome == "MISSED" and f.reason == "deadline":
                assert s.deadline is not None
                assert late > s.deadline, (
                    f"{where}: {f} MISSED for deadline {late} s after its time "
                    f"(deadline {s.deadline} s)"
                )
            if f.outcome == "FIRED" and s.deadline is not None:
                assert late <= s.deadline, f"{where}: {f} fired past its deadline"
            assert (f.run_id is not None) == (f.outcome == "FIRED"), f"{where}: {f}"
    fired = {f.run_id: f for f in fires if f.outcome == "FIRED"}
    assert len(fired) == stats.outcomes["FIRED"], f"{where}: one run id for two FIRED rows"
    scheduled_runs = [r for r in runs if r.trigger.startswith("schedule:")]
    ids = Counter(r.id for r in scheduled_runs)
    assert set(ids) == set(fired), (
        f"{where}: runs without a FIRED row {sorted(set(ids) - set(fired))[:5]}, "
        f"FIRED rows without a run {sorted(map(str, set(fired) - set(ids)))[:5]}"
    )
    for r in scheduled_runs:
        f = fired[r.id]
        assert (r.job_id, r.trigger) == (f.job_id, f"schedule:{f.schedule_id}"), f"{where}: {r}"
    return stats


# --- the kill trials -------------------------------------------------------------------------

START = datetime(2026, 3, 2, 0, 50, tzinfo=UTC)
LEASE_TTL = 8.0
"""Clock seconds; clock steps are mostly longer, so a killed leader's lease soon expires."""
SCHEDULES = [
    Sched("every", "minutely", "* * * * *"),
    Sched("five", "five", "*/5 * * * *"),
    Sched("fixed", "nightly", "30 1 * * *"),
    Sched("fixed", "berlin", "15 2 * * *", tz="Europe/Berlin"),
    Sched("tight", "tight", "*/2 * * * *", deadline=20),
    Sched("multi", "odd", "7,37 * * * *"),
    Sched("multi", "thirds", "*/3 * * * *", deadline=100),
]


def job_files(revision: int) -> dict[str, str]:
    files: dict[str, str] = {"reconciler.yaml": "timezone: UTC\n"}
    for job in sorted({s.job for s in SCHEDULES}):
        lines = [f"description: {job} r{revision}", "command: {cmd: 'true'}", "schedules:"]
        for s in (s for s in SCHEDULES if s.job == job):
            extra = f", timezone: {s.tz}" if s.tz != "UTC" else ""
            if s.deadline is not None:
                extra += f", startingDeadlineSeconds: {s.deadline}"
            lines.append(f'  - {{id: {s.schedule}, cron: "{s.cron}"{extra}}}')
        files[f"jobs/{job}.yaml"] = "\n".join(lines) + "\n"
    return files


def test_every_scheduled_time_is_decided_exactly_once_across_sigkills_of_serve(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("RECONCILER_SERVE_KILL_SEED", str(random.randrange(2**32))))
    rng = random.Random(seed)
    repo = make_jobs_repo(tmp_path / "jobs", job_files(0))
    url = f"sqlite:///{tmp_path / 'state.db'}"
    clock = ClockFile(tmp_path / "clock", START)
    env = clean_env(RECONCILER_CLOCK_FILE=str(clock.path), RECONCILER_DB=url)
    applied = reconciler("apply", "--yes", "--as", "ci", env=env, cwd=repo)
    assert applied.returncode == 0, applied.stderr
    args = ("--repo", str(repo), "--interval", "1", "--lease-ttl", str(LEASE_TTL), "--record-only")
    log = tmp_path / "serve.log"
    started = time.monotonic()
    big_jump_at = KILL_TRIALS // 2
    commits = 0
    steps = 0
    startup_kills = 0
    for trial in range(KILL_TRIALS):
        if trial % 10 == 5:  # a description-only change: an apply that kills may interrupt
            commits += 1
            for path, text in job_files(commits).items():
                (repo / path).write_text(text, encoding="utf-8")
            commit_tree(repo, f"revision {commits}")
        if trial == big_jump_at:
            clock.advance(150 * 60)  # downtime: a catch-up past the 100-row cap
        serve = start_serve(*args, env=env, log=log)
        if rng.random() < 0.15:  # killed while starting (imports, opening the store)
            time.sleep(rng.uniform(0.0, 1.0))
            serve.kill()
            startup_kills += 1
            continue
        wait_for(f"trial {trial}: serve to start", says(serve, "serving"))
        for _ in range(rng.randint(1, 4)):
            clock.advance(rng.choice((5, 10, 20, 31, 45, 60, 90, 150)))
            steps += 1
            time.sleep(rng.uniform(0.02, 0.3))
        assert serve.alive(), f"trial {trial}: serve exited:\n{serve.output()}"
        serve.kill()
    killed = time.monotonic() - started
    # One last serve, not killed, decides everything up to the end of the window.
    end = clock.advance(LEASE_TTL + 1)
    last_due = {s: last_time(s, START, end) for s in SCHEDULES}
    with serving(*args, env=env, log=log) as last:

        def caught_up() -> bool:
            with Store.open(url, migrate=False) as store:
                cursors = FireStore(store).read_cursors()
            at = {(str(j), str(k)): c.cursor_at for (j, k), c in cursors.items()}
            return all(
                (s.job, s.schedule) in at and at[s.job, s.schedule] >= due
                for s, due in last_due.items()
            )

        wait_for("the last serve to lead", says(last, "became leader"))
        wait_for("the last serve to decide up to the end of the window", caught_up)
        code = last.terminate()
        assert code == 0, f"exit {code} on SIGTERM:\n{last.output()[-3000:]}"
    elapsed = time.monotonic() - started
    where = f"seed {seed}"
    stats = check_ledger(url, SCHEDULES, START, end, where)
    states = Counter(r.state for r in read_runs(url))
    assert stats.outcomes["FIRED"] > 0
    assert stats.overflow > 0, f"{where}: the big jump should overflow the 100-row cap"
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    print(  # noqa: T201 - the statistics belong in the test output
        f"serve kill trials (seed {seed}): {KILL_TRIALS} SIGKILLs in {killed:.1f} s "
        f"({elapsed:.1f} s with the final check; {startup_kills} while starting), "
        f"{steps} clock steps over "
        f"{(end - START).total_seconds() / 3600:.1f} h, {commits} commits applied; "
        f"{stats.expected} scheduled times: {dict(stats.outcomes)} rows, "
        f"{stats.overflow} in overflow, decided at {stats.decisions} distinct instants; "
        f"runs by state {dict(states)}"
    )
