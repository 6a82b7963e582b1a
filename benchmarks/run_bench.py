"""Benchmark of local runs: dispatch latency, throughput and the memory of supervision.

Sets up a temp jobs repo (`reconciler.yaml` with `targets.local.maxConcurrentRuns: 8`, a
command job `noop` whose first instruction writes `date +%s%N` to the path in its
`--out` argument, `maxConcurrentRuns: 1000`, and a job `nap` that sleeps), applies it
with the CLI, then in this one process opens the store and a `Runner(watching=True)`,
as `serve` does, and measures:

- dispatch latency: `--latency-runs` sequential runs of `noop`; t0 = `time.time_ns()`
  just before `Runner.start`, latency = the time the job wrote - t0. Each run is
  watched to its end (`Runner.reconcile` every `--poll-ms`) before the next starts.
  Also the time `start` takes and the time until SUCCEEDED is recorded;
- the floor beside it: `subprocess.Popen` of the same shell command, same count;
- throughput: `--tp-runs` runs of `noop` enqueued as fast as possible (8 slots on the
  host), then `Runner.reconcile` in a loop (a `--poll-ms` pause between ticks) until
  every one is terminal; runs/s = runs / wall time from the first enqueue to the last
  terminal run; how many SUCCEEDED;
- memory: with 8 `nap` runs running, the PSS and RSS of each run's supervisor
  (`/proc/PID/smaps_rollup`), and the RSS of this (watching) process after the
  throughput part, with its peak.

Latency figures are medians over `--runs` repetitions (each repetition = all the
sequential runs, and the floor); throughput the median over `--tp-reps`. It prints a
table against the targets and replaces its section of `benchmarks/RESULTS.md`.

    .venv/bin/python benchmarks/run_bench.py [--runs 5] [--tp-reps 5]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jobsrepo import GIT_ENV, RESULTS, ROOT, machine, today, write_results
from sqlalchemy import func, select

from reconciler.clock import SystemClock
from reconciler.ids import RunId
from reconciler.runs.dispatch import Runner
from reconciler.runs.record import Run
from reconciler.runs.state import RunState
from reconciler.store import Store
from reconciler.store.runs import NOT_TERMINAL, RunStore
from reconciler.store.tables import runs as runs_table

SECTION = "## runs"
HOST_SLOTS = 8
NOOP_CMD = 'date +%s%N > "$2"'  # $1 is --out, $2 its value
SETTINGS = f"targets:\n  local: {{maxConcurrentRuns: {HOST_SLOTS}}}\n"
NOOP_JOB = f"""\
command:
  cmd: '{NOOP_CMD}'
arguments:
  out: /dev/null
maxConcurrentRuns: 1000
"""
NAP_JOB = """\
command:
  cmd: 'exec sleep 60'
maxConcurrentRuns: 1000
taskKillGracePeriodSeconds: 1
"""
TARGETS = {
    "p50": 30.0,  # ms
    "p99": 100.0,  # ms
    "throughput": 50.0,  # runs/s
    "pss": 20.0,  # MiB per run
}

# -- set-up ---------------------------------------------------------------------------


def make_repo(root: Path) -> Path:
    """A committed jobs repo with the noop and nap jobs, applied with the CLI."""
    repo = root / "repo"
    (repo / "jobs").mkdir(parents=True)
    (repo / ".gitignore").write_text(".reconciler/\n")
    (repo / "reconciler.yaml").write_text(SETTINGS)
    (repo / "jobs" / "noop.yaml").write_text(NOOP_JOB)
    (repo / "jobs" / "nap.yaml").write_text(NAP_JOB)
    env = {**os.environ, **GIT_ENV}
    git = ["git", "-C", str(repo), "-c", "gc.auto=0"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=env)
    subprocess.run([*git, "add", "-A"], check=True, env=env)
    subprocess.run([*git, "commit", "-q", "-m", "bench jobs"], check=True, env=env)
    reconciler = str(Path(sys.executable).parent / "reconciler")
    subprocess.run(
        [reconciler, "apply", "--yes", "--repo", str(repo)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return repo


@contextmanager
def open_runner(repo: Path) -> Iterator[Runner]:
    url = f"sqlite:///{repo / '.reconciler' / 'state.db'}"
    with Store.open(url) as store:
        yield Runner(
            repo=repo,
            store=store,
            runs=RunStore(store),
            clock=SystemClock(),
            db_url=url,
            watching=True,
        )


def count_states(runner: Runner, trigger: str) -> dict[str, int]:
    """How many runs started with `trigger` are in each state."""
    query = (
        select(runs_table.c.state, func.count())
        .where(runs_table.c.trigger == trigger)
        .group_by(runs_table.c.state)
    )
    with runner.store.engine.connect() as conn:
        return {state: int(n) for state, n in conn.execute(query)}


def count_unfinished(runner: Runner) -> int:
    query = (
        select(func.count())
        .select_from(runs_table)
        .where(runs_table.c.state.in_([s.value for s in NOT_TERMINAL]))
    )
    with runner.store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def watch_until_finished(runner: Runner, run_id: RunId, poll: float) -> Run:
    while True:
        runner.reconcile()
        run = runner.runs.get(run_id)
        assert run is not None
        if run.state.is_terminal:
            return run
        time.sleep(poll)


# -- measuring ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds of one repetition, by percentile."""

    p50: float
    p99: float
    max: float


def latency_of(samples_ns: list[int]) -> Latency:
    ms = sorted(s / 1e6 for s in samples_ns)
    return Latency(
        p50=statistics.median(ms),
        p99=ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))],
        max=ms[-1],
    )


@dataclass(frozen=True, slots=True)
class Dispatch:
    job: Latency  # t0 -> the job's first instruction
    start_call: Latency  # t0 -> Runner.start returned
    recorded: Latency  # t0 -> SUCCEEDED recorded by reconcile


def bench_dispatch(runner: Runner, out_dir: Path, n: int, poll: float) -> Dispatch:
    job, start_call, recorded = [], [], []
    for i in range(n):
        out = out_dir / f"dispatch-{i}"
        t0 = time.time_ns()
        run = runner.start("noop", arguments={"out": str(out)}, ref=None, trigger="bench")
        t1 = time.time_ns()
        final = watch_until_finished(runner, run.id, poll)
        t2 = time.time_ns()
        if final.state is not RunState.SUCCEEDED:
            raise SystemExit(f"run {run.id} ended {final.state.value}: {final.error_message}")
        job.append(int(out.read_text()) - t0)
        start_call.append(t1 - t0)
        recorded.append(t2 - t0)
        out.unlink()
    return Dispatch(
        job=latency_of(job), start_call=latency_of(start_call), recorded=latency_of(recorded)
    )


def bench_floor(out_dir: Path, n: int) -> Latency:
    samples = []
    for i in range(n):
        out = out_dir / f"floor-{i}"
        argv = ["/bin/sh", "-c", NOOP_CMD, "reconciler", "--out", str(out)]
        t0 = time.time_ns()
        proc = subprocess.Popen(argv, cwd=out_dir)
        proc.wait()
        samples.append(int(out.read_text()) - t0)
        out.unlink()
    return latency_of(samples)


@dataclass(frozen=True, slots=True)
class Throughput:
    runs_per_s: float
    wall_s: float
    enqueue_s: float
    succeeded: int


def bench_throughput(runner: Runner, n: int, poll: float, tag: str) -> Throughput:
    trigger = f"bench-throughput-{tag}"
    t0 = time.perf_counter()
    for _ in range(n):
        runner.start("noop", arguments={}, ref=None, trigger=trigger)
    enqueued = time.perf_counter()
    while True:
        runner.reconcile()
        if count_unfinished(runner) == 0:
            break
        time.sleep(poll)
    wall = time.perf_counter() - t0
    states = count_states(runner, trigger)
    return Throughput(
        runs_per_s=n / wall,
        wall_s=wall,
        enqueue_s=enqueued - t0,
        succeeded=states.get("SUCCEEDED", 0),
    )


@dataclass(frozen=True, slots=True)
class Memory:
    supervisor_pss_mib: float  # median over the runs
    supervisor_rss_mib: float
    host_pss_mib: float  # all supervisors together
    runs: int


def smaps_rollup(pid: int) -> dict[str, int]:
    """Fields of /proc/PID/smaps_rollup, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value)
    return fields


def bench_memory(runner: Runner, poll: float) -> Memory:
    started = [
        runner.start("nap", arguments={}, ref=None, trigger="bench-memory")
        for _ in range(HOST_SLOTS)
    ]
    deadline = time.monotonic() + 30
    while True:
        runner.reconcile()
        current = [runner.runs.get(run.id) for run in started]
        if all(r is not None and r.state.value == "RUNNING" for r in current):
            break
        if time.monotonic() > deadline:
            raise SystemExit("the nap runs did not all reach RUNNING in 30 s")
        time.sleep(poll)
    time.sleep(0.2)  # let each supervisor settle in its poll loop
    pids = [r.supervisor_pid for r in current if r is not None and r.supervisor_pid]
    rollups = [smaps_rollup(pid) for pid in pids]
    runner.stop("nap", [r.id for r in started])
    for run in started:
        watch_until_finished(runner, run.id, poll)
    pss = [r["Pss"] / 1024 for r in rollups]
    return Memory(
        supervisor_pss_mib=statistics.median(pss),
        supervisor_rss_mib=statistics.median(r["Rss"] / 1024 for r in rollups),
        host_pss_mib=sum(pss),
        runs=len(rollups),
    )


def own_rss_mib() -> tuple[float, float]:
    """RSS and peak RSS of this process, MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


# -- reporting ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Results:
    dispatch: list[Dispatch]
    floor: list[Latency]
    throughput: list[Throughput]
    memory: Memory
    watcher_rss_mib: float
    watcher_peak_mib: float


def med(values: list[float]) -> float:
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def table(r: Results, latency_runs: int, tp_runs: int) -> str:
    job_p50 = med([d.job.p50 for d in r.dispatch])
    job_p99 = med([d.job.p99 for d in r.dispatch])
    tp = med([t.runs_per_s for t in r.throughput])
    succeeded = min(t.succeeded for t in r.throughput)
    pss = r.memory.supervisor_pss_mib

    def lat(name: str, pick: Callable[[Dispatch], Latency]) -> str:
        ls = [pick(d) for d in r.dispatch]
        return (
            f"| {name} | {med([x.p50 for x in ls]):.1f} | {med([x.p99 for x in ls]):.1f} "
            f"| {med([x.max for x in ls]):.1f} |"
        )

    lines = [
        f"Latency of {latency_runs} sequential runs, ms (median over repetitions of each "
        "percentile):",
        "",
        "| measurement | p50 | p99 | max |",
        "|---|---:|---:|---:|",
        lat("start() -> job's first instruction", lambda d: d.job),
        lat("start() call returns", lambda d: d.start_call),
        lat("start() -> SUCCEEDED recorded", lambda d: d.recorded),
        f"| floor: Popen -> first instruction | {med([f.p50 for f in r.floor]):.1f} "
        f"| {med([f.p99 for f in r.floor]):.1f} | {med([f.max for f in r.floor]):.1f} |",
        "",
        "| figure | measured | target | met |",
        "|---|---:|---:|---|",
        f"| dispatch p50 | {job_p50:.0f} ms | <= {TARGETS['p50']:.0f} ms "
        f"| {verdict(job_p50 <= TARGETS['p50'])} |",
        f"| dispatch p99 | {job_p99:.0f} ms | <= {TARGETS['p99']:.0f} ms "
        f"| {verdict(job_p99 <= TARGETS['p99'])} |",
        f"| throughput ({tp_runs:,} runs, {HOST_SLOTS} slots) | {tp:.0f} runs/s "
        f"| >= {TARGETS['throughput']:.0f} runs/s | {verdict(tp >= TARGETS['throughput'])} |",
        f"| of which SUCCEEDED (least of the repetitions) | {succeeded:,} | {tp_runs:,} "
        f"| {verdict(succeeded == tp_runs)} |",
        f"| supervisor PSS per run (median of {r.memory.runs}) | {pss:.1f} MiB "
        f"| <= {TARGETS['pss']:.0f} MiB | {verdict(pss <= TARGETS['pss'])} |",
        f"| supervisor RSS per run | {r.memory.supervisor_rss_mib:.1f} MiB | | |",
        f"| supervisors' PSS, {r.memory.runs} runs | {r.memory.host_pss_mib:.1f} MiB | | |",
        f"| watching process RSS (peak) | {r.watcher_rss_mib:.0f} MiB "
        f"({r.watcher_peak_mib:.0f}) | | |",
        "",
        "Throughput by repetition: "
        + ", ".join(
            f"{t.runs_per_s:.1f} runs/s ({t.wall_s:.1f} s, enqueue {t.enqueue_s:.1f} s)"
            for t in r.throughput
        ),
    ]
    return "\n".join(lines)


def section(r: Results, command: str, args: argparse.Namespace) -> str:
    return (
        f"{SECTION}\n\n"
        f"Date: {today()}  \n"
        f"Machine: {machine()}  \n"
        f"Command: `{command}`  \n"
        f"One process, as `serve`: SQLite store, `Runner(watching=True)`, a command job "
        f"(`{NOOP_CMD}`), {HOST_SLOTS} slots on the host. Latency: median over "
        f"{args.runs} repetitions of {args.latency_runs} sequential runs; throughput: "
        f"median of {args.tp_reps} repetitions; reconcile every {args.poll_ms:g} ms.\n\n"
        f"{table(r, args.latency_runs, args.tp_runs)}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="latency repetitions")
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--tp-reps", type=int, default=5, help="throughput repetitions")
    parser.add_argument("--tp-runs", type=int, default=1000)
    parser.add_argument("--poll-ms", type=float, default=2.0)
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    if min(args.runs, args.tp_reps, args.latency_runs, args.tp_runs) < 1:
        parser.error("counts must be at least 1")
    poll = args.poll_ms / 1000
    with tempfile.TemporaryDirectory(prefix="run-bench-") as tmp:
        root = Path(tmp)
        repo = make_repo(root)
        out_dir = root / "out"
        out_dir.mkdir()
        with open_runner(repo) as runner:
            bench_dispatch(runner, out_dir, 10, poll)  # warm imports and caches
            dispatch, floor = [], []
            for rep in range(args.runs):
                dispatch.append(bench_dispatch(runner, out_dir, args.latency_runs, poll))
                floor.append(bench_floor(out_dir, args.latency_runs))
                print(f"latency {rep + 1}/{args.runs}: {dispatch[-1].job}", file=sys.stderr)
            throughput = []
            for rep in range(args.tp_reps):
                throughput.append(bench_throughput(runner, args.tp_runs, poll, str(rep)))
                print(f"throughput {rep + 1}/{args.tp_reps}: {throughput[-1]}", file=sys.stderr)
            rss, peak = own_rss_mib()
            memory = bench_memory(runner, poll)
    results = Results(
        dispatch=dispatch,
        floor=floor,
        throughput=throughput,
        memory=memory,
        watcher_rss_mib=rss,
        watcher_peak_mib=peak,
    )
    print(table(results, args.latency_runs, args.tp_runs))
    if not args.no_write:
        command = ".venv/bin/python benchmarks/run_bench.py " + shlex.join(
            [
                "--runs",
                str(args.runs),
                "--tp-reps",
                str(args.tp_reps),
                "--latency-runs",
                str(args.latency_runs),
                "--tp-runs",
                str(args.tp_runs),
            ]
        )
        write_results(SECTION, section(results, command, args))
        print(f"updated {RESULTS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
