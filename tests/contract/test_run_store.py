"""The run store's contract (runs, bookmarks, the queue lock), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import insert, select

from reconciler.errors import IllegalTransition, StoreError
from reconciler.ids import CommitSha, JobId, RunId
from reconciler.runs.record import Run
from reconciler.runs.state import RunState
from reconciler.store import Store
from reconciler.store.engine import create_store_engine
from reconciler.store.migrate import HEAD_REVISION, read_revision
from reconciler.store.runs import RunStore
from reconciler.store.tables import bookmarks, metadata, runs
from tests.migrations import migrate_to

T0 = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
C1 = CommitSha("1" * 40)
C2 = CommitSha("2" * 40)
JOB_A = JobId("sales.daily")
JOB_B = JobId("sales.hourly")
JOIN_TIMEOUT = 20.0


def run_id(n: int) -> RunId:
    return RunId(f"jr_{n:032x}")


def make_run(n: int, *, job_id: JobId = JOB_A, minute: int | None = None, **changes: Any) -> Run:
    created = T0 + timedelta(minutes=n if minute is None else minute)
    values: dict[str, Any] = {
        "id": run_id(n),
        "job_id": job_id,
        "attempt": 0,
        "previous_run_id": None,
        "trigger": "manual:alice",
        "commit": C1,
        "version": C1,
        "draft_ref": None,
        "state": RunState.WAITING,
        "created_at": created,
        "last_modified_on": created,
    }
    values.update(changes)
    return Run(**values)


@contextmanager
def opened(url: str) -> Iterator[RunStore]:
    store = Store.open(url)
    try:
        yield RunStore(store)
    finally:
        store.close()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store.open(store_url) as store:
        yield store


@pytest.fixture
def run_store(store: Store) -> RunStore:
    return RunStore(store)


def join(thread: threading.Thread) -> None:
    thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive(), "the thread did not finish"


# --- runs ------------------------------------------------------------------------------


def test_a_run_round_trips_every_field_with_json_and_aware_utc_datetimes(
    store: Store, run_store: RunStore
) -> None:
    berlin = timezone(timedelta(hours=2))
    run = Run(
        id=run_id(1),
        job_id=JOB_A,
        attempt=2,
        previous_run_id=run_id(0),
        trigger="schedule:nightly",
        commit=C2,
        version=C1,
        draft_ref="refs/heads/draft",
        state=RunState.RUNNING,
        created_at=datetime(2026, 7, 1, 12, 0, 0, 123456, tzinfo=berlin),
        last_modified_on=datetime(2026, 7, 1, 12, 0, 5, tzinfo=berlin),
        started_on=datetime(2026, 7, 1, 10, 0, 1, 1, tzinfo=UTC),
        completed_on=datetime(2026, 7, 1, 10, 0, 9, tzinfo=UTC),
        arguments={"--day": "2026-07-01", "--token": "****"},
        error_message="exit status 3: ünïcödé",
        execution_time=8,
        timeout=3600,
        profile={"name": "big", "hash": "ab" * 32, "libraries": ["duckdb==1.1"]},
        snapshots={"sql": {"path": "jobs/sales/daily.sql", "hash": "cd" * 32}},
        predecessors=({"jobId": "sales.raw", "runId": run_id(9)},),
        exit_code=3,
        log_location="file:///var/log/reconciler/jr_1.log",
        target="local:host-a",
        supervisor_pid=4242,
        details={"host": "host-a", "preview": [[1, "a", None, 2.5, True]], "nested": {"k": []}},
    )
    run_store.insert(run)

    got = run_store.get(run.id)

    assert got == run
    assert got is not None
    for value in (got.created_at, got.last_modified_on, got.started_on, got.completed_on):
        assert value is not None
        assert value.tzinfo is UTC
    assert got.created_at.isoformat() == "2026-07-01T10:00:00.123456+00:00"
    assert got.predecessors == ({"jobId": "sales.raw", "runId": run_id(9)},)
    with store.engine.connect() as conn:
        assert conn.execute(select(runs.c.host).where(runs.c.id == run.id)).scalar() == "host-a"
    assert run_store.get(run_id(404)) is None


def test_defaults_round_trip_as_empty_json_and_null_columns(run_store: RunStore) -> None:
    run = make_run(1)
    run_store.insert(run)
    got = run_store.get(run.id)
    assert got == run
    assert got is not None
    assert (got.profile, got.snapshots, got.predecessors, got.details) == (None, None, (), {})


def test_inserting_a_run_id_twice_is_a_store_error_naming_the_run(run_store: RunStore) -> None:
    run_store.insert(make_run(1))
    with pytest.raises(StoreError, match=f"inserting run {run_id(1)}"):
        run_store.insert(make_run(1, job_id=JOB_B))
    assert run_store.get(run_id(1)) == make_run(1)


def test_a_conditional_update_returns_the_changed_run_and_mirrors_the_host(
    store: Store, run_store: RunStore
) -> None:
    run_store.insert(make_run(1))
    later = T0 + timedelta(hours=1)

    moved = run_store.update(
        run_id(1),
        expect=RunState.WAITING,
        changes={
            "state": RunState.STARTING,
            "started_on": later,
            "last_modified_on": later,
            "supervisor_pid": 77,
            "details": {"host": "host-b", "why": "slot freed"},
        },
    )

    assert moved == make_run(1).with_changes(
        state=RunState.STARTING,
        started_on=later,
        last_modified_on=later,
        supervisor_pid=77,
        details={"host": "host-b", "why": "slot freed"},
    )
    assert run_store.get(run_id(1)) == moved
    assert [r.id for r in run_store.active(host="host-b")] == [run_id(1)]
    with store.engine.connect() as conn:
        assert conn.execute(select(runs.c.host)).scalar() == "host-b"


def test_an_update_from_a_state_the_run_is_not_in_returns_none_and_writes_nothing(
    run_store: RunStore,
) -> None:
    run_store.insert(make_run(1, state=RunState.RUNNING))
    result = run_store.update(
        run_id(1),
        expect=[RunState.WAITING, RunState.STARTING],
        changes={"state": RunState.ERROR, "error_message": "lost"},
    )
    assert result is None
    assert run_store.get(run_id(1)) == make_run(1, state=RunState.RUNNING)
    assert run_store.update(run_id(404), expect=RunState.WAITING, changes={"exit_code": 1}) is None


def test_an_illegal_transition_raises_before_writing(run_store: RunStore) -> None:
    run_store.insert(make_run(1, state=RunState.RUNNING))
    # Legal from RUNNING, not from WAITING: refused for the whole `expect`.
    with pytest.raises(IllegalTransition) as raised:
        run_store.update(
            run_id(1),
            expect=[RunState.RUNNING, RunState.WAITING],
            changes={"state": RunState.SUCCEEDED, "exit_code": 0},
        )
    assert (raised.value.run_id, raised.value.from_, raised.value.to) == (
        run_id(1),
        "WAITING",
        "SUCCEEDED",
    )
    assert run_store.get(run_id(1)) == make_run(1, state=RunState.RUNNING)


def test_unknown_fields_no_changes_and_an_empty_expect_are_refused(run_store: RunStore) -> None:
    run_store.insert(make_run(1))
    with pytest.raises(ValueError, match="cannot change colour, id"):
        run_store.update(run_id(1), expect=RunState.WAITING, changes={"id": "x", "colour": 1})
    with pytest.raises(ValueError, match="no changes given"):
        run_store.update(run_id(1), expect=RunState.WAITING, changes={})
    with pytest.raises(ValueError, match="expect names no state"):
        run_store.update(run_id(1), expect=[], changes={"exit_code": 1})


def test_two_processes_racing_the_same_transition_move_the_run_once(
    store_url: str, run_store: RunStore
) -> None:
    rounds = 4
    for n in range(rounds):
        run_store.insert(make_run(n))
    results: dict[int, list[Run | None]] = {n: [] for n in range(rounds)}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2, timeout=JOIN_TIMEOUT)

    def contender(pid: int) -> None:
        try:
            with opened(store_url) as mine:
                for n in range(rounds):
                    barrier.wait()
                    results[n].append(
                        mine.update(
                            run_id(n),
                            expect=RunState.WAITING,
                            changes={"state": RunState.STARTING, "supervisor_pid": pid},
                        )
                    )
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=contender, args=(pid,)) for pid in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        join(thread)

    assert errors == []
    for n in range(rounds):
        winners = [r for r in results[n] if r is not None]
        assert len(results[n]) == 2
        assert len(winners) == 1, results[n]
        assert run_store.get(run_id(n)) == winners[0]
        assert winners[0].state is RunState.STARTING


def test_list_runs_pages_newest_first_with_a_stable_order_and_a_token(run_store: RunStore) -> None:
    # Runs 3, 4 and 5 share a creation time: the id breaks the tie (descending).
    minutes = {1: 1, 2: 2, 3: 3, 4: 3, 5: 3, 6: 6, 7: 7}
    for n, minute in minutes.items():
        run_store.insert(make_run(n, job_id=JOB_A if n % 2 else JOB_B, minute=minute))
    run_store.insert(make_run(8, job_id=JobId("other.job")))

    seen: list[RunId] = []
    tokens: list[str] = []
    token: str | None = None
    while True:
        page, token = run_store.list_runs([JOB_A, JOB_B], max_results=3, next_token=token)
        seen.extend(r.id for r in page)
        if token is None:
            break
        tokens.append(token)
        base64.urlsafe_b64decode(token)  # opaque, but URL-safe base64

    assert seen == [run_id(n) for n in (7, 6, 5, 4, 3, 2, 1)]
    assert len(tokens) == 2
    everything, last = run_store.list_runs([JOB_A, JOB_B])
    assert [r.id for r in everything] == seen
    assert last is None
    exact, after_exact = run_store.list_runs([JOB_A, JOB_B], max_results=7)
    assert (len(exact), after_exact) == (7, None)
    assert run_store.list_runs([]) == ([], None)


def test_list_runs_hides_drafts_unless_asked_and_filters_by_state(run_store: RunStore) -> None:
    run_store.insert(make_run(1, state=RunState.SUCCEEDED))
    run_store.insert(make_run(2, state=RunState.FAILED))
    run_store.insert(make_run(3, draft_ref="refs/heads/try", version=None))
    run_store.insert(make_run(4, state=RunState.RUNNING))

    def ids(**kwargs: Any) -> list[RunId]:
        page, _ = run_store.list_runs([JOB_A], **kwargs)
        return [r.id for r in page]

    assert ids() == [run_id(4), run_id(2), run_id(1)]
    assert ids(include_drafts=True) == [run_id(4), run_id(3), run_id(2), run_id(1)]
    assert ids(states=[RunState.SUCCEEDED, RunState.FAILED]) == [run_id(2), run_id(1)]
    assert ids(states=[RunState.WAITING]) == []
    assert ids(states=[RunState.WAITING], include_drafts=True) == [run_id(3)]


@pytest.mark.parametrize(
    "token",
    [
        "not base64!",
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b'{"id": "jr_1"}').decode(),
        base64.urlsafe_b64encode(b'{"created_at": "2026-01-01T00:00:00", "id": "x"}').decode(),
        base64.urlsafe_b64encode(b'{"created_at": "yesterday", "id": "x"}').decode(),
        base64.urlsafe_b64encode(b'{"created_at": "2026-01-01T00:00:00Z", "id": 7}').decode(),
    ],
)
def test_a_bad_next_token_is_a_store_error(run_store: RunStore, token: str) -> None:
    with pytest.raises(StoreError, match=r"^invalid next token$"):
        run_store.list_runs([JOB_A], next_token=token)


def test_queue_scans_are_oldest_first_and_count_the_slots_held(run_store: RunStore) -> None:
    states = {
        1: RunState.SUCCEEDED,
        2: RunState.WAITING,
        3: RunState.RUNNING,
        4: RunState.STOPPING,
        5: RunState.WAITING,
        6: RunState.STARTING,
        7: RunState.ERROR,
    }
    for n, state in states.items():
        details = {"host": "host-a" if n in (3, 5) else "host-b"}
        run_store.insert(
            make_run(n, job_id=JOB_A if n < 5 else JOB_B, state=state, details=details)
        )
    # The same creation time as run 2: the id orders them.
    run_store.insert(make_run(8, minute=2, details={}))

    assert [r.id for r in run_store.waiting()] == [run_id(2), run_id(8), run_id(5)]
    assert [r.id for r in run_store.active()] == [run_id(n) for n in (2, 8, 3, 4, 5, 6)]
    assert [r.id for r in run_store.active(host="host-a")] == [run_id(3), run_id(5)]
    assert run_store.active(host="nowhere") == []
    assert run_store.count_active() == 3
    assert run_store.count_active(job_id=JOB_A) == 2
    assert run_store.count_active(job_id=JOB_B) == 1
    assert run_store.count_active(job_id=JobId("other.job")) == 0
    assert run_store.job_ids_with_runs() == [JOB_A, JOB_B]


def test_delete_finished_before_removes_only_finished_runs_and_returns_them(
    run_store: RunStore,
) -> None:
    cutoff = T0 + timedelta(days=1)
    old = cutoff - timedelta(seconds=1)
    run_store.insert(make_run(1, state=RunState.SUCCEEDED, completed_on=old))
    run_store.insert(make_run(2, state=RunState.FAILED, completed_on=cutoff))  # not before
    run_store.insert(make_run(3, state=RunState.EXPIRED))  # no completed_on: created_at counts
    run_store.insert(make_run(4, state=RunState.RUNNING))
    run_store.insert(make_run(5, state=RunState.WAITING, job_id=JOB_B))
    run_store.insert(make_run(6, state=RunState.STOPPED, job_id=JOB_B, completed_on=old))

    deleted = run_store.delete_finished_before(cutoff)

    assert [r.id for r in deleted] == [run_id(1), run_id(3), run_id(6)]
    assert deleted[0] == make_run(1, state=RunState.SUCCEEDED, completed_on=old)
    left, _ = run_store.list_runs([JOB_A, JOB_B])
    assert sorted(r.id for r in left) == [run_id(2), run_id(4), run_id(5)]
    assert run_store.delete_finished_before(cutoff) == []
    with pytest.raises(StoreError, match="naive datetime"):
        run_store.delete_finished_before(datetime(2026, 1, 1))


# --- bookmarks -------------------------------------------------------------------------


def test_committing_a_bookmark_keeps_the_replaced_one_as_previous(run_store: RunStore) -> None:
    assert run_store.get_bookmark(JOB_A) is None
    first = run_store.commit_bookmark(JOB_A, {"offset": 10}, run_id=run_id(1), at=T0)
    assert first.previous is None
    assert run_store.get_bookmark(JOB_A) == first

    later = T0 + timedelta(hours=1)
    second = run_store.commit_bookmark(JOB_A, {"offset": 20}, run_id=run_id(2), at=later)

    assert second.value == {"offset": 20}
    assert (second.run_id, second.committed_at) == (run_id(2), later)
    assert second.previous is not None
    assert second.previous.value == {"offset": 10}
    assert second.previous.run_id == run_id(1)
    assert second.previous.committed_at == T0
    assert second.previous.committed_at.tzinfo is not None
    assert run_store.get_bookmark(JOB_A) == second

    run_store.commit_bookmark(JOB_B, "2026-03-29", run_id=None, at=T0)
    listed = run_store.list_bookmarks()
    assert [(b.job_id, b.value) for b in listed] == [(JOB_A, {"offset": 20}), (JOB_B, "2026-03-29")]


def test_a_reset_without_a_run_forgets_the_bookmark(run_store: RunStore) -> None:
    run_store.commit_bookmark(JOB_A, 10, run_id=run_id(1), at=T0)
    assert run_store.reset_bookmark(JOB_A, at=T0 + timedelta(hours=1)) is None
    assert run_store.get_bookmark(JOB_A) is None
    assert run_store.list_bookmarks() == []
    assert run_store.reset_bookmark(JOB_A, at=T0) is None  # nothing to forget: still fine


def test_a_reset_to_a_run_restores_what_that_run_committed(run_store: RunStore) -> None:
    run_store.insert(
        make_run(1, state=RunState.SUCCEEDED, details={"bookmark": {"committed": {"offset": 10}}})
    )
    run_store.commit_bookmark(JOB_A, {"offset": 10}, run_id=run_id(1), at=T0)
    run_store.commit_bookmark(JOB_A, {"offset": 20}, run_id=run_id(2), at=T0 + timedelta(hours=1))
    run_store.commit_bookmark(JOB_A, {"offset": 30}, run_id=run_id(3), at=T0 + timedelta(hours=2))
    at = T0 + timedelta(hours=3)

    # Run 1's record holds its value, though the bookmark's history no longer does.
    restored = run_store.reset_bookmark(JOB_A, run_id=run_id(1), at=at)

    assert restored is not None
    assert (restored.value, restored.run_id, restored.committed_at) == (
        {"offset": 10},
        run_id(1),
        at,
    )
    assert restored.previous is not None
    assert restored.previous.value == {"offset": 30}
    assert run_store.get_bookmark(JOB_A) == restored

    # Run 3 has no record, but the bookmark's `previous` remembers what it committed.
    again = run_store.reset_bookmark(JOB_A, run_id=run_id(3), at=at)
    assert again is not None
    assert again.value == {"offset": 30}


def test_a_reset_to_a_run_that_committed_nothing_names_the_run(run_store: RunStore) -> None:
    run_store.insert(make_run(1, state=RunState.FAILED))
    run_store.insert(make_run(2, job_id=JOB_B, details={"bookmark": {"committed": 5}}))
    run_store.commit_bookmark(JOB_A, 1, run_id=run_id(9), at=T0)

    with pytest.raises(StoreError, match=f"run {run_id(1)} committed no bookmark for {JOB_A}"):
        run_store.reset_bookmark(JOB_A, run_id=run_id(1), at=T0)
    with pytest.raises(StoreError, match=f"run {run_id(404)} committed no bookmark"):
        run_store.reset_bookmark(JOB_A, run_id=run_id(404), at=T0)
    with pytest.raises(StoreError, match=f"run {run_id(2)} is a run of {JOB_B}, not of {JOB_A}"):
        run_store.reset_bookmark(JOB_A, run_id=run_id(2), at=T0)
    bookmark = run_store.get_bookmark(JOB_A)
    assert bookmark is not None
    assert (bookmark.value, bookmark.run_id) == (1, run_id(9))


# --- the queue lock --------------------------------------------------------------------


def test_the_queue_lock_makes_a_second_holder_wait_until_the_first_commits(
    store_url: str, run_store: RunStore
) -> None:
    run_store.insert(make_run(1))
    run_store.insert(make_run(2))
    second_started = threading.Event()
    second_locked = threading.Event()
    seen: dict[str, Any] = {}

    def second_holder() -> None:
        try:
            with opened(store_url) as mine:
                second_started.set()
                with mine.queue_lock(timeout=JOIN_TIMEOUT) as conn:
                    second_locked.set()
                    seen["slots"] = mine.count_active(conn=conn)
                    seen["waiting"] = [r.id for r in mine.waiting(conn=conn)]
        except BaseException as exc:
            seen["error"] = exc

    thread = threading.Thread(target=second_holder)
    with run_store.queue_lock(timeout=5) as conn:
        thread.start()
        assert second_started.wait(JOIN_TIMEOUT)
        # A bounded wait on the event: the second holder must still be blocked.
        assert not second_locked.wait(0.5)
        assert run_store.count_active(conn=conn) == 0
        claimed = run_store.update(
            run_id(1), expect=RunState.WAITING, changes={"state": "STARTING"}, conn=conn
        )
        assert claimed is not None
        assert not second_locked.is_set()
    join(thread)

    assert "error" not in seen, seen.get("error")
    assert seen["slots"] == 1  # it decided after the first holder's claim was committed
    assert seen["waiting"] == [run_id(2)]


def test_the_queue_lock_gives_up_after_its_timeout_and_is_free_again(
    store_url: str, run_store: RunStore
) -> None:
    with opened(store_url) as other:
        with run_store.queue_lock(timeout=5):
            started = time.monotonic()
            with pytest.raises(StoreError) as raised, other.queue_lock(timeout=0.2):
                pytest.fail("the second holder must not get the lock")
            waited = time.monotonic() - started
        message = str(raised.value)
        assert message == "another process holds the run queue lock; gave up after 0.2 s"
        assert 0.15 <= waited < 5
        with other.queue_lock(timeout=5) as conn:
            assert other.count_active(conn=conn) == 0


def test_an_exception_under_the_queue_lock_rolls_back_its_writes(run_store: RunStore) -> None:
    run_store.insert(make_run(1))

    def claim_then_fail() -> None:
        with run_store.queue_lock() as conn:
            claimed = run_store.update(
                run_id(1), expect=RunState.WAITING, changes={"state": "STARTING"}, conn=conn
            )
            assert claimed is not None
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        claim_then_fail()
    assert run_store.get(run_id(1)) == make_run(1)


# --- migration 0001 -> 0002 ------------------------------------------------------------


def test_opening_a_0001_store_upgrades_it_to_head_and_keeps_its_rows(store_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    migrate_to(store_url, "0001")
    engine = create_store_engine(store_url)
    try:
        with engine.begin() as conn:
            assert read_revision(conn) == "0001"
            conn.execute(
                insert(runs).values(
                    id=run_id(1),
                    trigger="manual:alice",
                    job_id=JOB_A,
                    commit=C1,
                    version=C1,
                    last_modified_on=T0,
                    state="SUCCEEDED",
                    arguments={"--day": "today"},
                    predecessors=[],
                    target="local",
                    created_at=T0,
                )
            )
            conn.execute(
                insert(bookmarks).values(
                    job_id=JOB_A, value={"offset": 1}, run_id=run_id(1), committed_at=T0
                )
            )
    finally:
        engine.dispose()

    with Store.open(store_url) as store:
        with store.engine.connect() as conn:
            assert read_revision(conn) == HEAD_REVISION
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        run_store = RunStore(store)
        assert run_store.get(run_id(1)) == make_run(
            1, minute=0, state=RunState.SUCCEEDED, arguments={"--day": "today"}
        )
        bookmark = run_store.get_bookmark(JOB_A)
        assert bookmark is not None
        assert (bookmark.value, bookmark.run_id, bookmark.previous) == (
            {"offset": 1},
            run_id(1),
            None,
        )
        # The upgraded store takes the new columns.
        run_store.insert(make_run(2, details={"host": "h"}))
        assert [r.id for r in run_store.active(host="h")] == [run_id(2)]
