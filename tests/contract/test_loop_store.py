"""The loop's store contract (leases, fire ledger, cursors, loop state) on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert

from reconciler.errors import LeaseLost, StoreError
from reconciler.ids import JobId, RunId, ScheduleId
from reconciler.store import Store
from reconciler.store.engine import create_store_engine
from reconciler.store.fires import Cursor, DuplicateFire, Fire, FireOutcome, FireStore
from reconciler.store.leases import LeaseStore
from reconciler.store.loopstate import LAST_SYNC_ERROR, LAST_SYNCED_COMMIT, LoopStateStore
from reconciler.store.migrate import HEAD_REVISION, read_revision
from reconciler.store.tables import fires, leases, metadata
from tests.migrations import migrate_to

T0 = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
TTL = 30.0
JOB_A = JobId("sales.daily")
JOB_B = JobId("sales.hourly")
S1 = ScheduleId("nightly")
S2 = ScheduleId("hourly")
JOIN_TIMEOUT = 20.0


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store.open(store_url) as store:
        yield store


@pytest.fixture
def lease_store(store: Store) -> LeaseStore:
    return LeaseStore(store)


@pytest.fixture
def fire_store(store: Store) -> FireStore:
    return FireStore(store)


@pytest.fixture
def loop_state(store: Store) -> LoopStateStore:
    return LoopStateStore(store)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def join(thread: threading.Thread) -> None:
    thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive(), "the thread did not finish"


# --- leases ------------------------------------------------------------------------------


def test_the_first_acquire_gets_token_1_and_a_renew_keeps_it(lease_store: LeaseStore) -> None:
    first = lease_store.acquire_or_renew("leader", "a", ttl=TTL, now=T0, replica="r-a", pid=11)
    assert first is not None
    assert (first.name, first.holder, first.token) == ("leader", "a", 1)
    assert (first.expires_at, first.renewed_at) == (at(TTL), T0)
    assert (first.replica, first.pid) == ("r-a", 11)
    assert first.expires_at.tzinfo is UTC

    renewed = lease_store.acquire_or_renew("leader", "a", ttl=TTL, now=at(10), pid=11)
    assert renewed is not None
    assert (renewed.token, renewed.expires_at, renewed.renewed_at) == (1, at(10 + TTL), at(10))
    assert lease_store.read("leader") == renewed
    assert lease_store.read("other") is None


def test_another_holder_is_refused_until_expiry_then_takes_over_with_the_next_token(
    lease_store: LeaseStore,
) -> None:
    assert lease_store.acquire_or_renew("leader", "a", ttl=TTL, now=T0) is not None
    assert lease_store.acquire_or_renew("leader", "b", ttl=TTL, now=at(1)) is None
    # At the expiry instant the lease is neither held nor free.
    assert lease_store.acquire_or_renew("leader", "b", ttl=TTL, now=at(TTL)) is None
    lease = lease_store.read("leader")
    assert lease is not None
    assert (lease.holder, lease.token) == ("a", 1)

    taken = lease_store.acquire_or_renew("leader", "b", ttl=TTL, now=at(TTL + 0.001))
    assert taken is not None
    assert (taken.holder, taken.token) == ("b", 2)
    assert lease_store.acquire_or_renew("leader", "a", ttl=TTL, now=at(TTL + 1)) is None
    renewed = lease_store.acquire_or_renew("leader", "b", ttl=TTL, now=at(TTL + 2))
    assert renewed is not None
    assert renewed.token == 2
    # Leases are independent by name.
    other = lease_store.acquire_or_renew("other", "a", ttl=TTL, now=at(TTL + 2))
    assert other is not None
    assert other.token == 1


def test_acquire_refuses_a_bad_ttl_and_a_naive_now(lease_store: LeaseStore) -> None:
    for ttl in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ttl"):
            lease_store.acquire_or_renew("leader", "a", ttl=ttl, now=T0)
    with pytest.raises(ValueError, match="naive"):
        lease_store.acquire_or_renew("leader", "a", ttl=TTL, now=datetime(2026, 1, 1))


def test_check_raises_lease_lost_unless_holder_token_and_expiry_match(
    store: Store, lease_store: LeaseStore
) -> None:
    with store.engine.connect() as conn:
        with pytest.raises(LeaseLost, match="no lease row"):
            lease_store.check(conn, "leader", "a", 1, T0)
        conn.rollback()
    assert lease_store.acquire_or_renew("leader", "a", ttl=TTL, now=T0) is not None
    with store.engine.connect() as conn:
        assert lease_store.check(conn, "leader", "a", 1, at(1)).token == 1
        with pytest.raises(LeaseLost, match=r"lost it to a \(token 1\)"):
            lease_store.check(conn, "leader", "a", 2, at(1))
        with pytest.raises(LeaseLost, match="lost it to a"):
            lease_store.check(conn, "leader", "b", 1, at(1))
        with pytest.raises(LeaseLost, match="let it expire"):
            lease_store.check(conn, "leader", "a", 1, at(TTL))
        conn.rollback()
    assert lease_store.acquire_or_renew("leader", "b", ttl=TTL, now=at(TTL + 1)) is not None
    with store.engine.connect() as conn:
        with pytest.raises(LeaseLost, match=r"a \(token 1\) lost it to b \(token 2\)"):
            lease_store.check(conn, "leader", "a", 1, at(TTL + 2))
        conn.rollback()


def test_a_leader_transaction_commits_only_while_the_lease_is_held(
    lease_store: LeaseStore, loop_state: LoopStateStore
) -> None:
    assert lease_store.acquire_or_renew("leader", "a", ttl=TTL, now=T0) is not None
    with lease_store.leader_transaction("leader", "a", 1, at(1)) as conn:
        loop_state.set_values({LAST_SYNCED_COMMIT: "1" * 40}, now=at(1), conn=conn)
    assert loop_state.get_all() == {LAST_SYNCED_COMMIT: "1" * 40}

    # An exception in the block rolls its writes back.
    def write_then_fail() -> None:
        with lease_store.leader_transaction("leader", "a", 1, at(2)) as conn:
            loop_state.set_values({LAST_SYNCED_COMMIT: "2" * 40}, now=at(2), conn=conn)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    # A lost lease refuses the transaction before the block runs.
    ran = False
    with (
        pytest.raises(LeaseLost),
        lease_store.leader_transaction("leader", "a", 1, at(TTL + 1)),
    ):
        ran = True
    assert not ran
    assert lease_store.acquire_or_renew("leader", "b", ttl=TTL, now=at(TTL + 1)) is not None
    with (
        pytest.raises(LeaseLost),
        lease_store.leader_transaction("leader", "a", 1, at(TTL + 2)),
    ):
        pass
    assert loop_state.get_all() == {LAST_SYNCED_COMMIT: "1" * 40}


def test_check_inside_the_callers_transaction_rolls_back_its_earlier_writes(
    store: Store, lease_store: LeaseStore, loop_state: LoopStateStore
) -> None:
    assert lease_store.acquire_or_renew("leader", "a", ttl=TTL, now=T0) is not None

    def write_then_check() -> None:
        with store.engine.begin() as conn:
            loop_state.set_values({"drift": {"jobs": 1}}, now=at(1), conn=conn)
            lease_store.check(conn, "leader", "a", 7, at(1))

    with pytest.raises(LeaseLost):
        write_then_check()
    assert loop_state.get_all() == {}


def test_a_takeover_waits_for_the_leaders_open_transaction(
    lease_store: LeaseStore, loop_state: LoopStateStore
) -> None:
    assert lease_store.acquire_or_renew("leader", "a", ttl=TTL, now=T0) is not None
    result: list[object] = []

    def take_over() -> None:
        result.append(lease_store.acquire_or_renew("leader", "b", ttl=TTL, now=at(TTL + 1)))

    thread = threading.Thread(target=take_over)
    with lease_store.leader_transaction("leader", "a", 1, at(TTL - 1)) as conn:
        thread.start()
        time.sleep(0.3)
        assert thread.is_alive(), "the takeover did not wait for the leader's transaction"
        loop_state.set_values({"lastSyncedAt": "late"}, now=at(TTL - 1), conn=conn)
    join(thread)
    [taken] = result
    assert taken is not None
    assert getattr(taken, "token", None) == 2
    assert loop_state.get_all() == {"lastSyncedAt": "late"}


def test_of_two_holders_racing_for_an_expired_lease_exactly_one_wins(
    lease_store: LeaseStore,
) -> None:
    assert lease_store.acquire_or_renew("leader", "old", ttl=TTL, now=T0) is not None
    for round_ in range(1, 6):
        now = at(round_ * 2 * TTL)
        barrier = threading.Barrier(2)
        won: dict[str, int | None] = {}

        def race(
            holder: str,
            now: datetime = now,
            barrier: threading.Barrier = barrier,
            won: dict[str, int | None] = won,
        ) -> None:
            barrier.wait(JOIN_TIMEOUT)
            lease = lease_store.acquire_or_renew("leader", holder, ttl=TTL, now=now)
            won[holder] = None if lease is None else lease.token

        holders = (f"x{round_}", f"y{round_}")
        threads = [threading.Thread(target=race, args=(h,)) for h in holders]
        for thread in threads:
            thread.start()
        for thread in threads:
            join(thread)
        winners = [h for h in holders if won[h] is not None]
        assert len(winners) == 1, won
        assert won[winners[0]] == round_ + 1
        lease = lease_store.read("leader")
        assert lease is not None
        assert (lease.holder, lease.token) == (winners[0], round_ + 1)


def test_racing_first_acquires_create_one_lease(lease_store: LeaseStore) -> None:
    barrier = threading.Barrier(4)
    tokens: dict[str, int | None] = {}

    def race(holder: str) -> None:
        barrier.wait(JOIN_TIMEOUT)
        lease = lease_store.acquire_or_renew("fresh", holder, ttl=TTL, now=T0)
        tokens[holder] = None if lease is None else lease.token

    threads = [threading.Thread(target=race, args=(f"h{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        join(thread)
    assert sorted(t for t in tokens.values() if t is not None) == [1]


def test_release_frees_the_lease_at_once_but_only_for_its_holder_and_token(
    lease_store: LeaseStore,
) -> None:
    assert lease_store.acquire_or_renew("leader", "a", ttl=TTL, now=T0) is not None
    assert not lease_store.release("leader", "a", 2)
    assert not lease_store.release("leader", "b", 1)
    assert not lease_store.release("missing", "a", 1)
    assert lease_store.acquire_or_renew("leader", "b", ttl=TTL, now=at(1)) is None
    assert lease_store.release("leader", "a", 1)
    taken = lease_store.acquire_or_renew("leader", "b", ttl=TTL, now=at(1))
    assert taken is not None
    assert (taken.holder, taken.token) == ("b", 2)
    assert not lease_store.release("leader", "a", 1)


def test_database_failures_are_store_errors_naming_what_failed(store_url: str) -> None:
    with Store.open(store_url, migrate=False) as store:  # no tables
        with pytest.raises(StoreError, match="reading lease leader"):
            LeaseStore(store).read("leader")
        with pytest.raises(StoreError, match="listing fires"):
            FireStore(store).list()
        with pytest.raises(StoreError, match="setting loop state drift"):
            LoopStateStore(store).set_values({"drift": {}}, now=T0)


# --- the fire ledger ---------------------------------------------------------------------


def fire(
    job_id: JobId,
    schedule_id: ScheduleId,
    minute: int,
    outcome: FireOutcome = "FIRED",
    **changes: object,
) -> Fire:
    values: dict[str, object] = {
        "job_id": job_id,
        "schedule_id": schedule_id,
        "scheduled_at": T0 + timedelta(minutes=minute),
        "outcome": outcome,
        "reason": None if outcome == "FIRED" else "superseded",
        "run_id": RunId(f"jr_{minute:032x}") if outcome == "FIRED" else None,
        "decided_at": T0 + timedelta(minutes=minute, seconds=2),
    }
    values.update(changes)
    return Fire(**values)  # type: ignore[arg-type]


LEDGER = [
    fire(JOB_B, S1, 0, "MISSED", reason="deadline", overflow_count=3),
    fire(JOB_A, S2, 0, "MISSED", reason="superseded"),
    fire(JOB_A, S1, 0, lateness_ms=1500),
    fire(JOB_A, S1, 60, "SKIPPED", reason="FORBID: run jr_1 is RUNNING"),
    fire(JOB_A, S2, 60),
    fire(JOB_B, S1, 120),
]


def keys(rows: list[Fire]) -> list[tuple[str, str, int]]:
    return [
        (f.job_id, f.schedule_id, int((f.scheduled_at - T0).total_seconds() // 60)) for f in rows
    ]


def test_fires_round_trip_in_ledger_order_and_filter(fire_store: FireStore) -> None:
    fire_store.insert(LEDGER)
    listed = fire_store.list()
    assert keys(listed) == [
        ("sales.daily", "hourly", 0),
        ("sales.daily", "nightly", 0),
        ("sales.hourly", "nightly", 0),
        ("sales.daily", "hourly", 60),
        ("sales.daily", "nightly", 60),
        ("sales.hourly", "nightly", 120),
    ]
    assert sorted(listed, key=lambda f: f.key) == sorted(LEDGER, key=lambda f: f.key)
    assert all(f.scheduled_at.tzinfo is UTC and f.decided_at.tzinfo is UTC for f in listed)

    assert keys(fire_store.list(job_id=JOB_A, schedule_id=S1)) == [
        ("sales.daily", "nightly", 0),
        ("sales.daily", "nightly", 60),
    ]
    assert keys(fire_store.list(since=at(60 * 60), until=at(120 * 60))) == [
        ("sales.daily", "hourly", 60),
        ("sales.daily", "nightly", 60),
    ]
    assert keys(fire_store.list(outcome="MISSED")) == [
        ("sales.daily", "hourly", 0),
        ("sales.hourly", "nightly", 0),
    ]
    assert len(fire_store.list(outcome=["MISSED", "SKIPPED"])) == 3
    assert keys(fire_store.list(limit=2)) == keys(listed)[:2]
    with pytest.raises(ValueError, match="limit"):
        fire_store.list(limit=0)


def test_fire_times_in_any_zone_are_stored_as_utc(fire_store: FireStore) -> None:
    berlin = timezone(timedelta(hours=2))
    local = fire(JOB_A, S1, 0, scheduled_at=datetime(2026, 7, 1, 2, 0, tzinfo=berlin))
    fire_store.insert([local])
    [read] = fire_store.list()
    assert read.scheduled_at == datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
    assert read.scheduled_at.tzinfo is UTC
    with pytest.raises(DuplicateFire):
        fire_store.insert([fire(JOB_A, S1, 0, scheduled_at=datetime(2026, 7, 1, 0, 0, tzinfo=UTC))])


def test_a_decided_key_raises_duplicate_fire_and_keeps_nothing_of_the_batch(
    fire_store: FireStore,
) -> None:
    fire_store.insert(LEDGER[:2])
    batch = [fire(JOB_A, S1, 5), fire(JOB_B, S1, 0, "FIRED"), fire(JOB_A, S1, 6)]
    with pytest.raises(DuplicateFire) as raised:
        fire_store.insert(batch)
    assert isinstance(raised.value, StoreError)
    assert (raised.value.job_id, raised.value.schedule_id, raised.value.scheduled_at) == (
        JOB_B,
        S1,
        T0,
    )
    assert "sales.hourly schedule nightly at 2026-03-29T01:00:00+00:00 is already decided" in str(
        raised.value
    )
    assert keys(fire_store.list()) == keys(sorted(LEDGER[:2], key=lambda f: f.key))

    # A key twice in one batch is refused before anything is written.
    with pytest.raises(DuplicateFire, match=r"sales\.daily schedule nightly at 2026-03-29T01:07"):
        fire_store.insert([fire(JOB_A, S1, 7), fire(JOB_A, S1, 7, "MISSED")])
    assert len(fire_store.list()) == 2


def test_a_duplicate_inside_a_leader_transaction_leaves_the_transaction_usable(
    lease_store: LeaseStore, fire_store: FireStore
) -> None:
    fire_store.insert([fire(JOB_A, S1, 0)])
    assert lease_store.acquire_or_renew("leader", "a", ttl=TTL, now=T0) is not None
    with lease_store.leader_transaction("leader", "a", 1, at(1)) as conn:
        with pytest.raises(DuplicateFire):
            fire_store.insert([fire(JOB_A, S1, 1), fire(JOB_A, S1, 0)], conn=conn)
        assert keys(fire_store.list(conn=conn)) == [("sales.daily", "nightly", 0)]
        fire_store.insert([fire(JOB_A, S1, 2)], conn=conn)
    assert keys(fire_store.list()) == [("sales.daily", "nightly", 0), ("sales.daily", "nightly", 2)]


def test_invalid_fires_are_refused_before_writing(fire_store: FireStore) -> None:
    with pytest.raises(ValueError, match="unknown outcome"):
        fire_store.insert([fire(JOB_A, S1, 0, outcome="LATE")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative overflow_count"):
        fire_store.insert([fire(JOB_A, S1, 0, overflow_count=-1)])
    with pytest.raises(ValueError, match="naive"):
        fire_store.insert([fire(JOB_A, S1, 0, decided_at=datetime(2026, 1, 1))])
    fire_store.insert([])
    assert fire_store.list() == []


def test_counts_by_outcome_and_last_decided(fire_store: FireStore) -> None:
    assert fire_store.counts_by_outcome() == {"FIRED": 0, "SKIPPED": 0, "MISSED": 0}
    assert fire_store.last_decided() == {}
    fire_store.insert(LEDGER)
    assert fire_store.counts_by_outcome() == {"FIRED": 3, "SKIPPED": 1, "MISSED": 2}
    assert fire_store.counts_by_outcome(include_overflow=True) == {
        "FIRED": 3,
        "SKIPPED": 1,
        "MISSED": 5,
    }
    assert fire_store.counts_by_outcome(since=at(60 * 60)) == {
        "FIRED": 2,
        "SKIPPED": 1,
        "MISSED": 0,
    }
    assert fire_store.last_decided() == {
        (JOB_A, S1): at(60 * 60),
        (JOB_A, S2): at(60 * 60),
        (JOB_B, S1): at(120 * 60),
    }


# --- cursors and loop state --------------------------------------------------------------


def test_cursors_round_trip_upsert_and_delete(fire_store: FireStore) -> None:
    assert fire_store.read_cursors() == {}
    first = {
        (JOB_A, S1): Cursor(cursor_at=T0, definition_hash="a" * 64),
        (JOB_B, S1): Cursor(cursor_at=at(60), definition_hash="b" * 64),
    }
    fire_store.write_cursors(first, now=T0)
    assert fire_store.read_cursors() == first
    moved = {
        (JOB_A, S1): Cursor(cursor_at=at(3600), definition_hash="c" * 64),
        (JOB_A, S2): Cursor(cursor_at=at(7200), definition_hash="d" * 64),
    }
    fire_store.write_cursors(moved, now=at(1))
    assert fire_store.read_cursors() == {**first, **moved}
    cursor = fire_store.read_cursors()[(JOB_A, S1)]
    assert cursor.cursor_at.tzinfo is UTC
    fire_store.delete_cursors([(JOB_A, S1), (JOB_A, ScheduleId("never"))])
    assert set(fire_store.read_cursors()) == {(JOB_A, S2), (JOB_B, S1)}
    fire_store.write_cursors({}, now=at(2))
    fire_store.delete_cursors([])


def test_ledger_rows_and_cursors_commit_together(
    lease_store: LeaseStore, fire_store: FireStore
) -> None:
    assert lease_store.acquire_or_renew("leader", "a", ttl=TTL, now=T0) is not None
    cursor = {(JOB_A, S1): Cursor(cursor_at=at(60), definition_hash="h" * 64)}

    def write_then_crash() -> None:
        with lease_store.leader_transaction("leader", "a", 1, at(1)) as conn:
            fire_store.insert([fire(JOB_A, S1, 1)], conn=conn)
            fire_store.write_cursors(cursor, now=at(1), conn=conn)
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        write_then_crash()
    assert fire_store.list() == []
    assert fire_store.read_cursors() == {}


def test_loop_state_round_trips_json_and_upserts(loop_state: LoopStateStore) -> None:
    assert loop_state.get_all() == {}
    error = {"commit": "2" * 40, "message": "jobs/a.yaml:1:1: bad ü", "at": "2026-03-29T01:00:00Z"}
    loop_state.set_values(
        {LAST_SYNCED_COMMIT: "1" * 40, LAST_SYNC_ERROR: error, "drift": {"jobs": [1, 2.5, None]}},
        now=T0,
    )
    assert loop_state.get_all() == {
        "drift": {"jobs": [1, 2.5, None]},
        LAST_SYNC_ERROR: error,
        LAST_SYNCED_COMMIT: "1" * 40,
    }
    loop_state.set_values(
        {LAST_SYNC_ERROR: None, "lastSyncedAt": "2026-03-29T01:01:00Z"}, now=at(60)
    )
    assert loop_state.get_all() == {
        "drift": {"jobs": [1, 2.5, None]},
        LAST_SYNC_ERROR: None,
        "lastSyncedAt": "2026-03-29T01:01:00Z",
        LAST_SYNCED_COMMIT: "1" * 40,
    }
    with pytest.raises(ValueError, match="not a JSON value"):
        loop_state.set_values({"lastSyncedAt": T0}, now=T0)
    with pytest.raises(ValueError, match="1-64 characters"):
        loop_state.set_values({"k" * 65: 1}, now=T0)


# --- migration 0002 -> 0003 --------------------------------------------------------------


def test_opening_a_0002_store_upgrades_it_to_0003_and_keeps_its_rows(store_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    migrate_to(store_url, "0002")
    engine = create_store_engine(store_url)
    try:
        with engine.begin() as conn:
            assert read_revision(conn) == "0002"
            conn.execute(
                insert(fires).values(
                    job_id=JOB_A,
                    schedule_id=S1,
                    scheduled_at=T0,
                    outcome="MISSED",
                    reason="deadline",
                    decided_at=at(5),
                    overflow_count=2,
                )
            )
            conn.execute(
                insert(leases).values(
                    name="leader", holder="a", token=4, expires_at=at(TTL), renewed_at=T0
                )
            )
    finally:
        engine.dispose()

    with Store.open(store_url) as store:
        with store.engine.connect() as conn:
            assert read_revision(conn) == HEAD_REVISION == "0003"
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        fire_store, lease_store = FireStore(store), LeaseStore(store)
        assert fire_store.list() == [
            fire(JOB_A, S1, 0, "MISSED", reason="deadline", decided_at=at(5), overflow_count=2)
        ]
        lease = lease_store.read("leader")
        assert lease is not None
        assert (lease.holder, lease.token, lease.replica, lease.pid) == ("a", 4, None, None)
        taken = lease_store.acquire_or_renew(
            "leader", "b", ttl=TTL, now=at(TTL + 1), replica="r-b", pid=7
        )
        assert taken is not None
        assert (taken.token, taken.replica, taken.pid) == (5, "r-b", 7)
        fire_store.insert([fire(JOB_A, S1, 1, lateness_ms=250)])
        assert fire_store.list(since=at(1))[0].lateness_ms == 250
        fire_store.write_cursors({(JOB_A, S1): Cursor(cursor_at=T0, definition_hash="h")}, now=T0)
        LoopStateStore(store).set_values({"drift": None}, now=T0)
