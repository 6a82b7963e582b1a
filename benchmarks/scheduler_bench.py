"""Benchmark of the scheduler: `serve` firing 1,000 and 10,000 schedules on the real
clock, against APScheduler 3.x on the same cron triggers.

Per case (jobs x pattern) it generates a jobs repo of small command jobs with one
schedule each (`spread`: job i at `{i % 60} * * * *`, bursts of N/60 every minute;
`burst`: `* * * * *`, all N due at the same instant every minute), with
`targets.local.maxConcurrentRuns` = N (record-only runs hold no resources; with 8
slots the queue, not the scheduler, would be measured), applies it with
`reconciler apply --yes` (SQLite store) and then:

1. runs `reconciler serve --record-only --interval 60` as a child process until every
   schedule has a cursor (it decided once), picks the first whole minute M1 at least
   `LEAD` seconds later, and measures `--minutes` k minutes, the span
   [M1 - 0.5 s, M1 + k min - 0.5 s], which holds the k fire instants M1..Mk; then
   SIGTERM. Fires expected are the cron times in {M1..Mk} of every job. From the
   ledger (`fires`, read with sqlite3): recorded (FIRED rows), other outcomes, dropped
   (expected without a FIRED row). Lateness, two figures:
   - *committed*: when the row became visible to another connection minus its
     scheduled time. A probe thread in this process polls `SELECT max(id) FROM fires`
     every `PROBE_S` (WAL: readers do not block the writer); a row's commit time is
     the first poll that saw its id. This is the issue's "durable ledger row
     committed minus scheduled time", over-stated by at most one poll interval.
   - *decided*: the stored `lateness_ms`, the tick's clock reading before deciding
     minus the scheduled time (before the transaction, so it understates).
   CPU: user + system (+ reaped children) of the serve process over the span, from
   /proc/PID/stat, per minute; peak RSS from `os.wait4`.
2. then (sequentially, not concurrently) APScheduler 3.x in a child process of this
   script (`--apscheduler-child`): a BackgroundScheduler with defaults (thread pool of
   10, misfire grace 1 s, no coalescing; logging unconfigured, stderr discarded), one
   job per schedule with `CronTrigger.from_crontab(cron, timezone=UTC)`, added before
   `start()`. Each job records `time.time()`; its scheduled time is that start time
   floored to the minute (every cron time here is a whole minute and a start more than
   a minute late would be a misfire anyway). Lateness = job start minus scheduled
   time; dropped = expected without a start (EVENT_JOB_MISSED counted as misfires).
   Same span rule, CPU from the child's own rusage over the span.

`--reps R` runs serve R times per case (the store reset to what `apply` left between
runs, so each later run's first tick also catches up the minutes since the apply:
MISSED rows before the span, and a higher peak RSS) and prints the medians of the
per-run figures; APScheduler still runs once per case.

    .venv/bin/python benchmarks/scheduler_bench.py [--jobs 1000 10000] [--minutes 3]
        [--pattern spread burst] [--no-apscheduler] [--reps 5] [--json out.json]
    .venv/bin/python benchmarks/scheduler_bench.py --profile-fire 10000

`--profile-fire N` instead prints a cProfile of one `Replica.fire` of N due schedules
(burst), in process, on a temp store. Requires the `bench` extra (APScheduler).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from jobsrepo import GIT_ENV

SECTION = "## scheduler"
LEAD = 5.0
"""Seconds between serve (or APScheduler) being ready and the first measured minute."""
PROBE_S = 0.002
"""The commit probe's poll interval."""
SETTLE_S = 0.5
"""The span starts this long before M1 and ends this long before M1 + k minutes."""
READY_TIMEOUT = 600.0
TICK = os.sysconf("SC_CLK_TCK")
TARGETS = {
    ("burst", 10000): "all recorded, none dropped, p99 <= 250 ms",
    ("spread", 10000): "p99 <= 100 ms and below APScheduler's",
}


def cron_of(pattern: str, i: int) -> str:
    if pattern == "spread":
        return f"{i % 60} * * * *"
    if pattern == "burst":
        return "* * * * *"
    raise ValueError(pattern)


def expected_fires(pattern: str, jobs: int, minutes: list[int]) -> int:
    """Fires due at the whole minutes `minutes` (epoch seconds / 60)."""
    if pattern == "burst":
        return jobs * len(minutes)
    return sum(sum(1 for i in range(jobs) if i % 60 == m % 60) for m in minutes)


# -- set-up ---------------------------------------------------------------------------


def make_repo(root: Path, pattern: str, jobs: int) -> Path:
    """A committed jobs repo of `jobs` command jobs with one schedule each, applied."""
    repo = root / "repo"
    (repo / "jobs").mkdir(parents=True)
    (repo / ".gitignore").write_text(".reconciler/\n")
    (repo / "reconciler.yaml").write_text(
        f"timezone: UTC\ntargets:\n  local: {{maxConcurrentRuns: {jobs}}}\n"
    )
    for i in range(jobs):
        folder = repo / "jobs" / f"f{i // 100:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"j{i:05d}.yaml").write_text(
            "command:\n  cmd: 'true'\n"
            f'schedules:\n  - id: main\n    cron: "{cron_of(pattern, i)}"\n    timezone: UTC\n'
        )
    env = {**os.environ, **GIT_ENV}
    git = ["git", "-C", str(repo), "-c", "gc.auto=0"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=env)
    subprocess.run([*git, "add", "-A"], check=True, env=env)
    subprocess.run([*git, "commit", "-q", "-m", f"{jobs} {pattern} jobs"], check=True, env=env)
    subprocess.run(
        [reconciler_exe(), "apply", "--yes", "--repo", str(repo)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return repo


def reconciler_exe() -> str:
    return str(Path(sys.executable).parent / "reconciler")


# -- figures --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lateness:
    """Milliseconds."""

    p50: float
    p99: float
    max: float

    @staticmethod
    def of(ms: list[float]) -> Lateness | None:
        if not ms:
            return None
        ms = sorted(ms)
        return Lateness(
            p50=statistics.median(ms),
            p99=ms[min(len(ms) - 1, math.ceil(0.99 * len(ms)) - 1)],
            max=ms[-1],
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    scheduler: str
    pattern: str
    jobs: int
    minutes: int
    expected: int
    recorded: int
    dropped: int
    other: str  # other outcomes (serve: MISSED/SKIPPED rows; APScheduler: misfire events)
    lateness: Lateness | None  # serve: committed; APScheduler: job start
    decided: Lateness | None  # serve only: stored lateness_ms
    cpu_per_min: float
    rss_mib: float


def cpu_of(pid: int) -> float:
    """CPU seconds of `pid` and its reaped children (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / TICK


def sleep_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.5))


def span_for(ready: float, minutes: int) -> tuple[float, float, list[int]]:
    """(span start, span end, the measured whole minutes as epoch minutes)."""
    first = math.ceil((ready + LEAD) / 60)
    wanted = list(range(first, first + minutes))
    return first * 60 - SETTLE_S, (first + minutes) * 60 - SETTLE_S, wanted


class CommitProbe(threading.Thread):
    """Polls the ledger's highest row id; `seen` holds (time, max id) at each change."""

    def __init__(self, db: Path) -> None:
        super().__init__(name="commit-probe", daemon=True)
        self.db = db
        self.seen: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        last = -1
        while not self.stop.is_set():
            (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM fires").fetchone()
            if top != last:
                self.seen.append((time.time(), top))
                last = top
            time.sleep(PROBE_S)
        conn.close()

    def committed_at(self, row_id: int) -> float | None:
        """When a poll first saw `row_id` (ids grow with commits)."""
        for at, top in self.seen:  # few entries: one per commit
            if top >= row_id:
                return at
        return None


def epoch(text: str) -> float:
    from datetime import UTC, datetime

    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def run_serve(repo: Path, pattern: str, jobs: int, minutes: int) -> Outcome:
    db = repo / ".reconciler" / "state.db"
    log = repo.parent / "serve.log"
    argv = [reconciler_exe(), "serve", "--record-only", "--interval", "60", "--repo", str(repo)]
    with log.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=repo)
    try:
        ready = wait_ready(db, jobs, proc)
        start, end, wanted = span_for(ready, minutes)
        probe = CommitProbe(db)
        probe.start()
        sleep_until(start)
        cpu0 = cpu_of(proc.pid)
        sleep_until(end)
        cpu1 = cpu_of(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        probe.stop.set()
        probe.join()
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"serve exited {proc.returncode}; see {log}")
    conn = sqlite3.connect(db)
    lo, hi = wanted[0] * 60, wanted[-1] * 60
    rows = conn.execute(
        "SELECT id, scheduled_at, outcome, lateness_ms FROM fires ORDER BY id"
    ).fetchall()
    conn.close()
    committed, decided, outcomes = [], [], {}
    for row_id, scheduled_text, outcome, lateness_ms in rows:
        scheduled = epoch(scheduled_text)
        if not lo <= scheduled <= hi:
            continue
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome != "FIRED":
            continue
        at = probe.committed_at(row_id)
        if at is None:
            raise SystemExit(f"the probe never saw fire row {row_id}")
        committed.append((at - scheduled) * 1000)
        decided.append(float(lateness_ms))
    expected = expected_fires(pattern, jobs, wanted)
    fired = outcomes.pop("FIRED", 0)
    return Outcome(
        scheduler="serve",
        pattern=pattern,
        jobs=jobs,
        minutes=minutes,
        expected=expected,
        recorded=fired,
        dropped=expected - fired,
        other=", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "-",
        lateness=Lateness.of(committed),
        decided=Lateness.of(decided),
        cpu_per_min=(cpu1 - cpu0) / minutes,
        rss_mib=usage.ru_maxrss / 1024,
    )


def wait_ready(db: Path, jobs: int, proc: subprocess.Popen[bytes]) -> float:
    """When every schedule has a cursor (serve decided once)."""
    deadline = time.time() + READY_TIMEOUT
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited {proc.returncode} before it was ready")
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            (n,) = conn.execute("SELECT count(*) FROM schedule_cursors").fetchone()
            conn.close()
        except sqlite3.Error:
            n = 0
        if n >= jobs:
            return time.time()
        time.sleep(0.2)
    raise SystemExit("serve was not ready in time")


# -- APScheduler ----------------------------------------------------------------------


def run_apscheduler(pattern: str, jobs: int, minutes: int) -> Outcome:
    argv = [sys.executable, __file__, "--apscheduler-child", pattern, str(jobs), str(minutes)]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("the APScheduler child failed")
        out.seek(0)
        doc = json.loads(out.read())
    expected = expected_fires(pattern, jobs, doc["wanted"])
    return Outcome(
        scheduler="APScheduler",
        pattern=pattern,
        jobs=jobs,
        minutes=minutes,
        expected=expected,
        recorded=len(doc["lateness_ms"]),
        dropped=expected - len(doc["lateness_ms"]),
        other=f"misfire events {doc['missed']}",
        lateness=Lateness.of(doc["lateness_ms"]),
        decided=None,
        cpu_per_min=doc["cpu"] / minutes,
        rss_mib=usage.ru_maxrss / 1024,
    )


def apscheduler_child(pattern: str, jobs: int, minutes: int) -> None:
    from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    starts: list[float] = []
    missed: list[float] = []

    def job() -> None:
        starts.append(time.time())

    def on_missed(event: JobExecutionEvent) -> None:
        missed.append(event.scheduled_run_time.timestamp())

    scheduler = BackgroundScheduler()
    scheduler.add_listener(on_missed, EVENT_JOB_MISSED)
    for i in range(jobs):
        scheduler.add_job(job, CronTrigger.from_crontab(cron_of(pattern, i), timezone="UTC"))
    scheduler.start()
    start, end, wanted = span_for(time.time(), minutes)
    sleep_until(start)
    cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    sleep_until(end)
    cpu1 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    scheduler.shutdown(wait=False)
    lo, hi = wanted[0] * 60, wanted[-1] * 60
    lateness = []
    for at in list(starts):
        scheduled = math.floor(at / 60) * 60
        if lo <= scheduled <= hi:
            lateness.append((at - scheduled) * 1000)
    doc = {
        "wanted": wanted,
        "lateness_ms": lateness,
        "missed": sum(1 for t in missed if lo <= t <= hi),
        "cpu": cpu1 - cpu0,
    }
    sys.stdout.write(json.dumps(doc))
    sys.stdout.flush()
    os._exit(0)  # do not wait for the pool's queued work


# -- profile --------------------------------------------------------------------------


def profile_fire(jobs: int) -> None:
    """cProfile of one `Replica.fire` with `jobs` schedules due at once (burst)."""
    import cProfile
    import pstats
    from datetime import UTC, datetime, timedelta

    from reconciler.clock import FakeClock
    from reconciler.loop.replica import LoopConfig, Replica
    from reconciler.runs.dispatch import Runner
    from reconciler.store import Store
    from reconciler.store.runs import RunStore

    with tempfile.TemporaryDirectory(prefix="sched-prof-") as tmp:
        repo = make_repo(Path(tmp), "burst", jobs)
        url = f"sqlite:///{repo / '.reconciler' / 'state.db'}"
        with Store.open(url) as store:
            applied = store.read_state()
            assert applied.commit is not None
            now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=2)
            clock = FakeClock(current=now - timedelta(seconds=30))
            runner = Runner(
                repo=repo,
                store=store,
                runs=RunStore(store),
                clock=clock,
                db_url=url,
                watching=True,
                record_only=True,
            )
            replica = Replica(
                repo=repo,
                store=store,
                runner=runner,
                clock=clock,
                config=LoopConfig(replica_id="bench", lease_ttl=3600),
            )
            replica._renew(clock.now())
            replica.fire(clock.now())  # cursors and live jobs, nothing due
            idle = cProfile.Profile()
            t0 = time.perf_counter()
            idle.enable()
            replica.fire(clock.now())
            idle.disable()
            print(f"idle fire (nothing due): {time.perf_counter() - t0:.3f} s")
            clock.current = now + timedelta(milliseconds=1)
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.enable()
            replica.fire(clock.now())
            prof.disable()
            print(f"burst fire of {jobs}: {time.perf_counter() - t0:.3f} s")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
            pstats.Stats(idle).sort_stats("tottime").print_stats(12)
            clock.current = now + timedelta(minutes=1, milliseconds=1)
            t0 = time.perf_counter()
            replica.fire(clock.now())
            print(f"burst fire of {jobs}, not profiled: {time.perf_counter() - t0:.3f} s")
            t0 = time.perf_counter()
            replica.fire(clock.now() + timedelta(seconds=1))
            print(f"fire deciding all, nothing due, not profiled: {time.perf_counter() - t0:.3f} s")
            t0 = time.perf_counter()
            replica.fire(clock.now() + timedelta(seconds=2))
            print(f"steady idle fire, not profiled: {time.perf_counter() - t0:.3f} s")
            print(f"run rows, one INSERT each vs one executemany: {bulk_runs(store, jobs)}")


def bulk_runs(store: object, n: int) -> str:
    """Seconds to insert `n` scheduled-run rows in one transaction (rolled back), one
    statement per row as `RunStore.insert` does, and as one executemany."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from reconciler.runs.scheduled import scheduled_run
    from reconciler.store.runs import RunStore, _column_values
    from reconciler.store.tables import runs as runs_table

    now = datetime.now(UTC)

    def batch() -> list:
        return [
            scheduled_run(
                job_id=f"j{i}",
                schedule_id="main",
                scheduled_at=now,
                definition={"command": {"cmd": "true"}},
                commit="0" * 40,
                version="0" * 40,
                settings={},
                catalog_path=None,
                host="h",
                runs_dir=Path("/tmp"),
                now=now,
            )
            for i in range(n)
        ]

    engine = store.engine  # type: ignore[attr-defined]
    run_store = RunStore(store)  # type: ignore[arg-type]
    times = []
    for bulk in (False, True):
        rows = batch()
        with engine.connect() as conn:
            tx = conn.begin()
            t0 = time.perf_counter()
            if bulk:
                values = [
                    _column_values({f: getattr(r, f) for f in r.__dataclass_fields__}) for r in rows
                ]
                conn.execute(insert(runs_table), values)
            else:
                for r in rows:
                    run_store.insert(r, conn=conn)
            times.append(time.perf_counter() - t0)
            tx.rollback()
    return f"{times[0]:.3f} s vs {times[1]:.3f} s"


# -- report ---------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def table(rows: list[Outcome]) -> str:
    head = (
        "| pattern | jobs | scheduler | minutes | expected | recorded | dropped | other "
        "| p50 ms | p99 ms | max ms | decided p50 / p99 / max ms | CPU s/min | peak RSS MiB |\n"
        "|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---:|\n"
    )
    lines = []
    for o in rows:
        lat = o.lateness
        dec = o.decided
        lines.append(
            f"| {o.pattern} | {o.jobs:,} | {o.scheduler} | {o.minutes} | {o.expected:,} "
            f"| {o.recorded:,} | {o.dropped:,} | {o.other} "
            f"| {ms(lat and lat.p50)} | {ms(lat and lat.p99)} | {ms(lat and lat.max)} "
            f"| {'-' if dec is None else ' / '.join(ms(x) for x in (dec.p50, dec.p99, dec.max))} "
            f"| {o.cpu_per_min:.2f} | {o.rss_mib:.0f} |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--minutes", type=int, default=3)
    parser.add_argument("--pattern", nargs="+", default=["spread", "burst"])
    parser.add_argument("--no-apscheduler", action="store_true")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the outcomes as JSON here")
    parser.add_argument("--apscheduler-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--profile-fire", type=int, metavar="N")
    args = parser.parse_args()
    if args.apscheduler_child:
        pattern, jobs, minutes = args.apscheduler_child
        apscheduler_child(pattern, int(jobs), int(minutes))
        return
    if args.profile_fire:
        profile_fire(args.profile_fire)
        return
    rows: list[Outcome] = []
    for jobs in args.jobs:
        for pattern in args.pattern:
            with tempfile.TemporaryDirectory(prefix=f"sched-{pattern}-{jobs}-") as tmp:
                print(f"{pattern} x {jobs:,}: applying ...", file=sys.stderr)
                repo = make_repo(Path(tmp), pattern, jobs)
                template = (repo / ".reconciler" / "state.db").read_bytes()
                for rep in range(args.reps):
                    if rep:
                        reset_store(repo, template)
                    print(f"  serve, run {rep + 1} of {args.reps} ...", file=sys.stderr)
                    rows.append(run_serve(repo, pattern, jobs, args.minutes))
                    print(table(rows[-1:]), file=sys.stderr)
            if not args.no_apscheduler:
                print(f"  APScheduler {pattern} x {jobs:,} ...", file=sys.stderr)
                rows.append(run_apscheduler(pattern, jobs, args.minutes))
                print(table(rows[-1:]), file=sys.stderr)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([outcome_doc(o) for o in rows], indent=1))
    if args.reps > 1:
        print(medians(rows))


def reset_store(repo: Path, template: bytes) -> None:
    """The store as `apply` left it (no ledger rows, no cursors, no runs)."""
    state = repo / ".reconciler"
    for name in ("state.db-wal", "state.db-shm"):
        (state / name).unlink(missing_ok=True)
    (state / "state.db").write_bytes(template)


def outcome_doc(o: Outcome) -> dict[str, object]:
    from dataclasses import asdict

    return asdict(o)


def medians(rows: list[Outcome]) -> str:
    serve = [o for o in rows if o.scheduler == "serve"]
    out = []
    for key in sorted({(o.pattern, o.jobs) for o in serve}):
        runs = [o for o in serve if (o.pattern, o.jobs) == key and o.lateness is not None]
        out.append(
            f"{key[0]} x {key[1]:,}: {len(runs)} runs; median p50 "
            f"{statistics.median(o.lateness.p50 for o in runs if o.lateness):.1f} ms, p99 "
            f"{statistics.median(o.lateness.p99 for o in runs if o.lateness):.1f} ms, max "
            f"{statistics.median(o.lateness.max for o in runs if o.lateness):.1f} ms; "
            f"dropped {[o.dropped for o in runs]}; CPU/min "
            f"{statistics.median(o.cpu_per_min for o in runs):.2f}"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()
