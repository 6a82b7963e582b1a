"""The run dispatcher (`reconciler.runs.dispatch.Runner`) in this process, with real
supervisors, processes, DuckDB and git: queue decisions (per job, per host, one SQL run
per DuckDB catalog), queue timeouts, retries and their deadline, bookmarks in pause mode,
the local target's refusals, and the slot hand-off by the finisher on SQLite and
PostgreSQL.

A runner built with `watching=True` has no finisher: only the test's `reconcile` calls
record what happened, so queue states are deterministic. Jobs that must stay running
wait for a "gate" file (their first argument) that the test creates.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.clock import Clock, FakeClock, SystemClock
from reconciler.errors import TargetError
from reconciler.ids import JobId
from reconciler.runs.dispatch import ConcurrentRunsExceeded, Runner
from reconciler.runs.record import Run
from reconciler.runs.resolve import check_local_target
from reconciler.runs.state import RunState
from reconciler.store import Store
from reconciler.store.runs import RunStore
from reconciler.sync.apply import apply_main
from reconciler.targets.local.launcher import (
    kill_group,
    process_alive,
    read_status,
    wait_status,
)
from tests import pg
from tests.conftest import make_jobs_repo

DEADLINE = 30.0
GATE = 'i=0; while [ ! -e "$2" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done'


def gated(**fields: str) -> str:
    lines = [
        "arguments: {gate: /nonexistent}",
        f"command: {{cmd: '{GATE}; echo released'}}",
        "taskKillGracePeriodSeconds: 1",
    ]
    lines += [f"{key}: {value}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Fixture:
    """A jobs repo applied to a store, and the runner of this host over both."""

    runner: Runner
    tmp: Path

    @property
    def runs(self) -> RunStore:
        return self.runner.runs

    def gate(self, name: str) -> Path:
        return self.tmp / f"gate-{name}"

    def start(self, job: str, gate: str | None = None, **kwargs: Any) -> Run:
        arguments = {"gate": str(self.gate(gate))} if gate is not None else {}
        return self.runner.start(job, arguments=arguments, ref=None, trigger="manual:ci", **kwargs)

    def get(self, run: Run) -> Run:
        latest = self.runs.get(run.id)
        assert latest is not None
        return latest

    def all_runs(self, job: str) -> list[Run]:
        """Oldest first."""
        page, _ = self.runs.list_runs([JobId(job)], include_drafts=True, max_results=200)
        return page[::-1]

    def wait_for(self, what: str, check: Callable[[], Any], *, reconcile: bool) -> Any:
        """Poll `check` (reconciling first when `reconcile`) until it is truthy."""
        deadline = time.monotonic() + DEADLINE
        while True:
            if reconcile:
                self.runner.reconcile()
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {DEADLINE} s waiting for {what}")
            time.sleep(0.05)

    def wait_state(self, run: Run, *states: RunState, reconcile: bool) -> Run:
        def reached() -> Run | None:
            latest = self.get(run)
            return latest if latest.state in states else None

        found: Run = self.wait_for(f"{run.id} in {states}", reached, reconcile=reconcile)
        return found

    def wait_exited(self, run: Run) -> None:
        """Until the run's supervisor says the job ended (nothing recorded yet)."""
        status = wait_status(self.runner.run_dir(run.id), phase="exited", timeout=DEADLINE)
        assert status is not None
        assert status.phase == "exited"


@pytest.fixture
def make_fixture(tmp_path: Path) -> Iterator[Callable[..., Fixture]]:
    stores: list[Store] = []
    runners: list[Runner] = []
    counter = iter(range(100))

    def factory(
        files: dict[str, str],
        *,
        db_url: str | None = None,
        watching: bool = False,
        clock: Clock | None = None,
    ) -> Fixture:
        tmp = tmp_path / f"f{next(counter)}"
        repo = make_jobs_repo(tmp / "jobs", files)
        url = db_url or f"sqlite:///{tmp / 'state.db'}"
        store = Store.open(url)
        stores.append(store)
        apply_main(repo, store, user="ci", now=datetime.now(UTC), lock_timeout=10)
        runner = Runner(
            repo=repo,
            store=store,
            runs=RunStore(store),
            clock=clock or SystemClock(),
            db_url=url,
            watching=watching,
        )
        runners.append(runner)
        return Fixture(runner=runner, tmp=tmp)

    yield factory
    for runner in runners:  # kill what a failed test left running
        runs_dir = runner.state_dir / "runs"
        for run_dir in runs_dir.iterdir() if runs_dir.exists() else []:
            status = read_status(run_dir)
            if status is None or status.phase == "exited":
                continue
            if process_alive(status.supervisor_pid, status.supervisor_start):
                os.kill(status.supervisor_pid, signal.SIGKILL)
            if status.pgid is not None:
                kill_group(status.pgid)
    for store in stores:
        store.close()


# --- refusals ---------------------------------------------------------------------------

REFUSED = {
    "jobs/image.yaml": "command: {cmd: 'echo hi', image: 'alpine:3'}\n",
    "jobs/forcepull.yaml": "command: {cmd: 'echo hi', forcePull: true}\n",
    "jobs/privileged.yaml": "command: {cmd: 'echo hi', privileged: true}\n",
    "jobs/parameters.yaml": "command: {cmd: 'echo hi', parameters: [{key: a, value: b}]}\n",
    "jobs/artifacts.yaml": "command: {cmd: 'echo hi', artifacts: [{uri: 'https://x.example/a'}]}\n",
    "jobs/streaming.yaml": "streaming: {command: {cmd: 'sleep 100'}, desiredState: running}\n",
    "jobs/catdir.yaml": "sql: {query: q, catalog: dir}\n",
    "jobs/catjunk.yaml": "sql: {query: q, catalog: junk}\n",
    "queries/q.sql": "SELECT 1;\n",
}


def test_what_the_local_target_cannot_run_is_refused_naming_the_field_before_recording(
    make_fixture: Callable[..., Fixture], tmp_path: Path
) -> None:
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "junk.duckdb").write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    settings = (
        "catalogs:\n"
        f"  dir: {{engine: duckdb, path: {tmp_path / 'a-dir'}}}\n"
        f"  junk: {{engine: duckdb, path: {tmp_path / 'junk.duckdb'}}}\n"
    )
    fx = make_fixture({**REFUSED, "reconciler.yaml": settings})
    expected = {
        "image": "image: command.image is not supported by the local target",
        "forcepull": "forcepull: command.forcePull is not supported",
        "privileged": "privileged: command.privileged is not supported",
        "parameters": "parameters: command.parameters is not supported",
        "artifacts": "artifacts: command.artifacts is not supported",
        "streaming": "streaming: streaming jobs cannot be run yet",
        "catdir": f"catalog {tmp_path / 'a-dir'} is a directory",
        "catjunk": "exists but is not a DuckDB database",
    }
    for job, message in expected.items():
        with pytest.raises(TargetError) as refused:
            fx.start(job)
        assert message in str(refused.value), job
        assert fx.all_runs(job) == []
    runs_dir = fx.runner.state_dir / "runs"
    assert not runs_dir.exists() or list(runs_dir.iterdir()) == []


def test_command_user_is_refused_unless_reconciler_runs_as_root() -> None:
    definition = {"command": {"cmd": "id", "user": "svc"}}
    with pytest.raises(TargetError, match=r"job: command\.user \('svc'\) needs reconciler"):
        check_local_target("job", definition, is_root=False)
    check_local_target("job", definition, is_root=True)
    check_local_target("job", {"command": {"cmd": "id", "privileged": False}}, is_root=False)


# --- the queue --------------------------------------------------------------------------

SQL_FILES = {
    "reconciler.yaml": (
        "catalogs:\n"
        "  main: {engine: duckdb, path: main.duckdb, default: true}\n"
        "  other: {engine: duckdb, path: other.duckdb}\n"
    ),
    "queries/load.sql": (
        "CREATE TABLE IF NOT EXISTS loads (job VARCHAR);\n"
        "INSERT INTO loads VALUES ($job);\n"
        "SELECT count(*) AS n FROM loads;\n"
    ),
    "jobs/first.yaml": "arguments: {job: first}\nsql: {query: load}\n",
    "jobs/second.yaml": "arguments: {job: second}\nsql: {query: load}\n",
    "jobs/elsewhere.yaml": "arguments: {job: elsewhere}\nsql: {query: load, catalog: other}\n",
}


def test_two_sql_runs_on_one_catalog_never_run_at_once_and_another_catalog_is_free(
    make_fixture: Callable[..., Fixture],
) -> None:
    fx = make_fixture(SQL_FILES, watching=True)
    first = fx.start("first")
    assert first.state is RunState.RUNNING
    second = fx.start("second")
    assert second.state is RunState.WAITING
    assert fx.runner._blocked(second, [fx.get(first)])
    elsewhere = fx.start("elsewhere")
    assert elsewhere.state is RunState.RUNNING  # its catalog is another file
    assert not fx.runner._blocked(elsewhere, [fx.get(first)])

    done = fx.wait_state(second, RunState.SUCCEEDED, RunState.FAILED, reconcile=True)
    assert done.state is RunState.SUCCEEDED, done.error_message
    first_done = fx.get(first)
    assert first_done.state is RunState.SUCCEEDED
    assert first_done.completed_on is not None
    assert done.started_on is not None
    assert done.started_on >= first_done.completed_on
    assert first_done.details["result"]["preview"] == [[1]]
    assert done.details["result"]["preview"] == [[2]]  # the same catalog file, after first
    assert fx.wait_state(elsewhere, RunState.SUCCEEDED, reconcile=True)


def test_the_host_cap_of_reconciler_yaml_applies_across_jobs(
    make_fixture: Callable[..., Fixture],
) -> None:
    fx = make_fixture(
        {
            "reconciler.yaml": "targets: {local: {maxConcurrentRuns: 1}}\n",
            "jobs/one.yaml": gated(),
            "jobs/two.yaml": gated(),
        },
        watching=True,
    )
    one = fx.start("one", gate="one")
    two = fx.start("two", gate="two")
    assert (one.state, two.state) == (RunState.RUNNING, RunState.WAITING)
    fx.gate("two").touch()
    fx.runner.reconcile()
    assert fx.get(two).state is RunState.WAITING
    fx.gate("one").touch()
    fx.wait_state(one, RunState.SUCCEEDED, reconcile=True)
    fx.wait_state(two, RunState.SUCCEEDED, reconcile=True)


def test_a_run_waiting_longer_than_queue_timeout_seconds_expires(
    make_fixture: Callable[..., Fixture],
) -> None:
    clock = FakeClock()
    fx = make_fixture({"jobs/q.yaml": gated(queueTimeoutSeconds="1")}, watching=True, clock=clock)
    first = fx.start("q", gate="q")
    waiting = fx.start("q", gate="q")
    assert waiting.state is RunState.WAITING
    fx.runner.pump()
    assert fx.get(waiting).state is RunState.WAITING
    clock.advance(1)
    fx.runner.pump()
    expired = fx.get(waiting)
    assert expired.state is RunState.EXPIRED
    assert "queueTimeoutSeconds (1 s)" in (expired.error_message or "")
    assert expired.started_on is None
    assert not (fx.runner.run_dir(waiting.id) / "status.json").exists()  # never started
    fx.gate("q").touch()
    fx.wait_state(first, RunState.SUCCEEDED, reconcile=True)


def test_stopping_a_waiting_run_ends_it_without_starting_it(
    make_fixture: Callable[..., Fixture],
) -> None:
    fx = make_fixture({"jobs/q.yaml": gated()}, watching=True)
    first = fx.start("q", gate="q")
    waiting = fx.start("q", gate="q")
    result = fx.runner.stop("q", [waiting.id])
    assert (result.stopped, result.errors) == ([waiting.id], [])
    stopped = fx.get(waiting)
    assert (stopped.state, stopped.error_message) == (RunState.STOPPED, "stopped while waiting")
    fx.gate("q").touch()
    fx.wait_state(first, RunState.SUCCEEDED, reconcile=True)
    assert fx.get(waiting).state is RunState.STOPPED


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_finisher_hands_the_slot_to_the_waiting_run_and_no_queue_records_nothing(
    make_fixture: Callable[..., Fixture], backend: str
) -> None:
    files = {"jobs/one.yaml": gated()}
    if backend == "sqlite":
        fx = make_fixture(files)
        _hand_off(fx)
        return
    pg.skip_without_postgres()
    with pg.postgres_schema_url() as url:
        fx = make_fixture(files, db_url=url)
        try:
            _hand_off(fx)
        finally:
            fx.runner.store.close()


def _hand_off(fx: Fixture) -> None:
    first = fx.start("one", gate="one")
    second = fx.start("one", gate="one")
    assert (first.state, second.state) == (RunState.RUNNING, RunState.WAITING)
    with pytest.raises(ConcurrentRunsExceeded, match="ConcurrentRunsExceeded: one: no free slot"):
        fx.start("one", no_queue=True)
    assert [r.id for r in fx.all_runs("one")] == [first.id, second.id]
    assert sorted(p.name for p in (fx.runner.state_dir / "runs").iterdir()) == sorted(
        [first.id, second.id]
    )
    fx.gate("one").touch()
    # No reconcile here: the first run's finisher records it and starts the second.
    done = fx.wait_state(second, RunState.SUCCEEDED, reconcile=False)
    before = fx.get(first)
    assert before.state is RunState.SUCCEEDED
    assert before.completed_on is not None
    assert done.started_on is not None
    assert done.started_on >= before.completed_on


# --- retries ----------------------------------------------------------------------------

FAILING = "command: {cmd: 'exit 1'}\n"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_on_failure_makes_three_chained_attempts_recorded_by_finishers(
    make_fixture: Callable[..., Fixture], backend: str
) -> None:
    files = {"jobs/flaky.yaml": FAILING + "restart: {policy: ON_FAILURE, maxAttempts: 3}\n"}
    if backend == "sqlite":
        _three_attempts(make_fixture(files))
        return
    pg.skip_without_postgres()
    with pg.postgres_schema_url() as url:
        fx = make_fixture(files, db_url=url)
        try:
            _three_attempts(fx)
        finally:
            fx.runner.store.close()


def _three_attempts(fx: Fixture) -> None:
    fx.start("flaky")
    runs = fx.wait_for(
        "three finished attempts",
        lambda: (
            rs
            if len(rs := fx.all_runs("flaky")) == 3 and all(r.state.is_terminal for r in rs)
            else None
        ),
        reconcile=False,
    )
    assert [(r.attempt, r.state, r.exit_code) for r in runs] == [
        (0, RunState.FAILED, 1),
        (1, RunState.FAILED, 1),
        (2, RunState.FAILED, 1),
    ]
    assert [r.trigger for r in runs] == ["manual:ci", "retry", "retry"]
    assert [r.previous_run_id for r in runs] == [None, runs[0].id, runs[1].id]
    assert runs[2].predecessors == ({"jobName": "flaky", "runId": runs[1].id},)


def test_restart_never_runs_once(make_fixture: Callable[..., Fixture]) -> None:
    fx = make_fixture({"jobs/once.yaml": FAILING}, watching=True)
    run = fx.start("once")
    fx.wait_state(run, RunState.FAILED, reconcile=True)
    fx.runner.reconcile()
    assert [r.id for r in fx.all_runs("once")] == [run.id]


def test_active_deadline_seconds_stops_retries(make_fixture: Callable[..., Fixture]) -> None:
    clock = FakeClock()
    restart = "restart: {policy: ON_FAILURE, maxAttempts: 5, activeDeadlineSeconds: 60}\n"
    fx = make_fixture({"jobs/flaky.yaml": FAILING + restart}, watching=True, clock=clock)
    first = fx.start("flaky")
    fx.wait_exited(first)
    clock.advance(30)
    fx.runner.reconcile()  # within the deadline: attempt 1 starts
    runs = fx.all_runs("flaky")
    assert [(r.attempt, r.state.is_terminal) for r in runs] == [(0, True), (1, False)]
    fx.wait_exited(runs[1])
    clock.advance(31)  # 61 s after the first attempt started
    fx.runner.reconcile()
    runs = fx.all_runs("flaky")
    assert [(r.attempt, r.state) for r in runs] == [(0, RunState.FAILED), (1, RunState.FAILED)]


# --- bookmarks --------------------------------------------------------------------------

BOOKMARK_CMD = (
    "command:\n"
    "  cmd: >-\n"
    '    echo "in=$(cat "$RECONCILER_BOOKMARK_IN")";\n'
    '    echo \'{"seen": 2}\' > "$RECONCILER_BOOKMARK_OUT"\n'
)


def test_bookmark_pause_reads_the_bookmark_but_does_not_commit(
    make_fixture: Callable[..., Fixture],
) -> None:
    fx = make_fixture({"jobs/paused.yaml": "bookmark: pause\n" + BOOKMARK_CMD}, watching=True)
    fx.runs.commit_bookmark(JobId("paused"), {"seen": 1}, run_id=None, at=datetime.now(UTC))
    run = fx.start("paused")
    done = fx.wait_state(run, RunState.SUCCEEDED, reconcile=True)
    assert (fx.runner.run_dir(run.id) / "stdout.log").read_text() == 'in={"seen": 1}\n'
    bookmark = fx.runs.get_bookmark(JobId("paused"))
    assert bookmark is not None
    assert bookmark.value == {"seen": 1}
    assert "bookmark" not in done.details


def test_bookmark_enable_commits_a_succeeded_runs_value_but_not_a_drafts(
    make_fixture: Callable[..., Fixture],
) -> None:
    fx = make_fixture({"jobs/marked.yaml": "bookmark: enable\n" + BOOKMARK_CMD}, watching=True)
    draft = fx.runner.start("marked", arguments={}, ref="main", trigger="manual:ci")
    assert draft.draft_ref == "main"
    fx.wait_state(draft, RunState.SUCCEEDED, reconcile=True)
    assert fx.runs.get_bookmark(JobId("marked")) is None
    run = fx.start("marked")
    done = fx.wait_state(run, RunState.SUCCEEDED, reconcile=True)
    assert done.details["bookmark"] == {"committed": {"seen": 2}}
    bookmark = fx.runs.get_bookmark(JobId("marked"))
    assert bookmark is not None
    assert (bookmark.value, bookmark.run_id) == ({"seen": 2}, run.id)


# --- arguments --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_argument_flags_reach_the_job_in_the_same_order_on_every_store(
    make_fixture: Callable[..., Fixture], backend: str
) -> None:
    files = {
        "jobs/args.yaml": "arguments: {zone: eu, day: yesterday}\ncommand: {cmd: 'echo \"$*\"'}\n"
    }
    if backend == "sqlite":
        _argument_order(make_fixture(files, watching=True))
        return
    pg.skip_without_postgres()
    with pg.postgres_schema_url() as url:
        fx = make_fixture(files, db_url=url, watching=True)
        try:
            _argument_order(fx)
        finally:
            fx.runner.store.close()


def _argument_order(fx: Fixture) -> None:
    run = fx.runner.start(
        "args", arguments={"b": "2", "day": "today", "ab": "3"}, ref=None, trigger="manual:ci"
    )
    fx.wait_state(run, RunState.SUCCEEDED, reconcile=True)
    out = (fx.runner.run_dir(run.id) / "stdout.log").read_text()
    assert out == "--ab 3 --b 2 --day today --zone eu\n"  # by name: JSONB keeps no key order
