"""High availability: three real `reconciler serve` replicas against one PostgreSQL schema
and one jobs repo. Exactly one leads; killing it with SIGKILL hands the lease to another
within the lease TTL plus one tick, and no scheduled time is decided twice or lost; a
leader paused with SIGSTOP past its lease is replaced, and when it resumes its writes are
refused and it steps down. On SQLite `serve` refuses a second replica.

Time is the clock file's: the replicas only move when the test moves it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from reconciler.store import Store
from reconciler.store.fires import FireStore
from reconciler.store.leases import Lease, LeaseStore
from reconciler.store.transaction import APPLICATION_NAME_PREFIX
from tests import pg
from tests.conftest import commit_tree, make_jobs_repo
from tests.integration.test_serve_exactly_once import (
    ClockFile,
    Sched,
    Serve,
    check_ledger,
    clean_env,
    last_time,
    reconciler,
    says,
    start_serve,
    wait_for,
)

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TTL = 6.0
"""The lease TTL in clock seconds; a standby ticks every third of it."""
STEP = 0.5
SCHEDULES = [
    Sched("every", "minutely", "* * * * *"),
    Sched("tight", "tight", "*/2 * * * *", deadline=15),
]
FILES = {
    "jobs/every.yaml": "command: {cmd: 'true'}\n"
    'schedules:\n  - {id: minutely, cron: "* * * * *"}\n',
    "jobs/tight.yaml": "command: {cmd: 'true'}\n"
    'schedules:\n  - {id: tight, cron: "*/2 * * * *", startingDeadlineSeconds: 15}\n',
}
BIG_JOBS = 400
"""Jobs in the commit whose apply the paused leader is in the middle of."""


@dataclass
class Cluster:
    repo: Path
    url: str
    clock: ClockFile
    env: dict[str, str]
    log_dir: Path
    replicas: dict[str, Serve]

    def lease(self) -> Lease | None:
        with Store.open(self.url, migrate=False) as store:
            return LeaseStore(store).read("leader")

    def leader(self) -> str | None:
        lease = self.lease()
        if lease is None or not lease.is_held_at(self.clock.now):
            return None
        return lease.holder

    def walk(self, seconds: float, step: float = STEP, pause: float = 0.06) -> None:
        """Move the clock forward in steps, giving the replicas time to tick."""
        target = self.clock.now + timedelta(seconds=seconds)
        while self.clock.now < target:
            self.clock.set(min(target, self.clock.now + timedelta(seconds=step)))
            time.sleep(pause)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    pg.skip_without_postgres()
    with pg.postgres_schema_url() as url, ExitStack() as stack:
        repo = make_jobs_repo(tmp_path / "jobs", FILES)
        clock = ClockFile(tmp_path / "clock", START)
        env = clean_env(RECONCILER_CLOCK_FILE=str(clock.path), RECONCILER_DB=url)
        applied = reconciler("apply", "--yes", "--as", "ci", env=env, cwd=repo)
        assert applied.returncode == 0, applied.stderr
        replicas = {}
        for name in ("r1", "r2", "r3"):
            serve = start_serve(
                "--repo",
                str(repo),
                "--interval",
                "1",
                "--lease-ttl",
                str(TTL),
                "--record-only",
                "--replica-id",
                f"{name}-{time.monotonic_ns()}",
                env=env,
                log=tmp_path / f"{name}.log",
            )
            stack.callback(stop, serve)
            replicas[name] = serve
        yield Cluster(repo, url, clock, env, tmp_path, replicas)


def stop(serve: Serve) -> None:
    if serve.alive():
        serve.kill()


def holder_replica(cluster: Cluster, holder: str) -> str:
    (name,) = [n for n, s in cluster.replicas.items() if holder.startswith(f"{n}-")]
    return name


def led_by(cluster: Cluster, name: str) -> int:
    return cluster.replicas[name].output().count("became leader")


def test_one_leader_of_three_a_killed_leader_is_replaced_within_ttl_plus_a_tick_exactly_once(
    cluster: Cluster,
) -> None:
    for serve in cluster.replicas.values():
        wait_for("the replicas to start", says(serve, "serving"))
    holder = wait_for("a leader", cluster.leader)
    first = holder_replica(cluster, holder)
    cluster.walk(3 * 60 + 10, step=3)  # three minutes of fires
    assert cluster.leader() == holder
    assert [led_by(cluster, n) for n in sorted(cluster.replicas)].count(1) == 1
    assert sum(led_by(cluster, n) for n in cluster.replicas) == 1, "more than one leader"
    status = reconciler("status", "--output", "json", env=cluster.env, cwd=cluster.repo)
    assert status.returncode == 0, status.stderr
    assert f'"replica": "{holder}"' in status.stdout
    assert f'"pid": {cluster.replicas[first].pid}' in status.stdout

    cluster.replicas[first].kill()
    lease = cluster.lease()
    assert lease is not None
    assert lease.holder == holder
    # Walk to the expiry plus one standby tick (a third of the TTL) and one clock step: by
    # then another replica must lead; the clock stops there, so it cannot have been later.
    bound = (lease.expires_at - cluster.clock.now).total_seconds() + TTL / 3 + STEP
    cluster.walk(bound)
    successor = wait_for("another replica to take over", cluster.leader)
    assert successor != holder
    lease = cluster.lease()
    assert lease is not None
    assert lease.token > 1
    cluster.walk(3 * 60, step=3)
    end = cluster.clock.now
    wait_for_decided(cluster, end)
    stats = check_ledger(cluster.url, SCHEDULES, START, end, "failover")
    assert stats.outcomes["FIRED"] >= 6
    print(  # noqa: T201
        f"failover: {first} killed, {holder_replica(cluster, successor)} led within "
        f"{bound:.1f} clock s; ledger {dict(stats.outcomes)}"
    )


def wait_for_decided(cluster: Cluster, end: datetime) -> None:
    """Wait until the leader decided every schedule's times up to `end` (its last one)."""

    def done() -> bool:
        with Store.open(cluster.url, migrate=False) as store:
            cursors = FireStore(store).read_cursors()
        at = {(str(j), str(k)): c.cursor_at for (j, k), c in cursors.items()}
        return all(
            (s.job, s.schedule) in at and at[s.job, s.schedule] >= last_time(s, START, end)
            for s in SCHEDULES
        )

    wait_for("every scheduled time to be decided", done)


def test_a_leader_paused_past_its_lease_has_its_writes_refused_and_steps_down(
    cluster: Cluster,
) -> None:
    for serve in cluster.replicas.values():
        wait_for("the replicas to start", says(serve, "serving"))
    holder = wait_for("a leader", cluster.leader)
    paused = holder_replica(cluster, holder)
    serve = cluster.replicas[paused]
    cluster.walk(2 * 60 + 10, step=3)
    # A commit whose apply takes a while: pause the leader inside its apply transaction.
    for i in range(BIG_JOBS):
        path = cluster.repo / "jobs" / "big" / f"b{i:03d}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"command: {{cmd: 'echo {i}'}}\n", encoding="utf-8")
    big = commit_tree(cluster.repo, "many jobs")
    cluster.clock.advance(1.5)  # the leader syncs on its next tick
    wait_for("the leader to be inside its apply", applying, timeout=30)
    os.kill(serve.pid, signal.SIGSTOP)
    try:
        assert f"applied {big[:12]}" not in serve.output()
        lease = cluster.lease()
        assert lease is not None
        assert lease.holder == holder
        cluster.walk((lease.expires_at - cluster.clock.now).total_seconds() + TTL / 3 + STEP)
        successor = wait_for("another replica to take over", cluster.leader)
        assert successor != holder
    finally:
        os.kill(serve.pid, signal.SIGCONT)
    # Its apply reaches the fence before committing, is refused and rolled back.
    wait_for("the resumed replica to step down", lambda: "stepping down" in serve.output())
    wait_for("the new leader to apply the commit", lambda: applied_commit(cluster) == big, 60)
    cluster.walk(2 * 60, step=3)
    assert serve.alive()
    assert cluster.leader() == successor
    assert f"applied {big[:12]}" not in serve.output()
    end = cluster.clock.now
    wait_for_decided(cluster, end)
    stats = check_ledger(cluster.url, SCHEDULES, START, end, "sigstop")
    with Store.open(cluster.url, migrate=False) as store:
        applies = [a for a in store.list_applies() if a.commit == big]
    assert len(applies) == 1, applies
    (line,) = [x for x in serve.output().splitlines() if "stepping down" in x]
    print(  # noqa: T201
        f"sigstop: {paused} paused inside its apply, resumed: {line.split(' ', 3)[-1]}; "
        f"ledger {dict(stats.outcomes)}"
    )


def applying() -> bool:
    """Whether a session holds the state lock for an apply (PostgreSQL's application_name)."""
    with psycopg.connect(pg.pg_conninfo(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
            (APPLICATION_NAME_PREFIX + "%",),
        ).fetchone()
    return row is not None and row[0] > 0


def applied_commit(cluster: Cluster) -> str | None:
    with Store.open(cluster.url, migrate=False) as store:
        return store.read_state().commit


def test_serve_on_sqlite_refuses_a_second_replica(tmp_path: Path) -> None:
    repo = make_jobs_repo(tmp_path / "jobs", FILES)
    clock = ClockFile(tmp_path / "clock", START)
    env = clean_env(RECONCILER_CLOCK_FILE=str(clock.path))
    first = start_serve("--repo", str(repo), "--record-only", env=env, log=tmp_path / "1.log")
    try:
        wait_for("the first serve to lead", lambda: "became leader" in first.output())
        second = reconciler("serve", "--repo", str(repo), "--record-only", env=env)
        assert second.returncode == 1
        assert "single replica" in second.stderr
        assert first.alive()
        assert first.terminate() == 0
    finally:
        if first.alive():
            first.kill()
