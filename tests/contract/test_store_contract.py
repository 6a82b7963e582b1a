"""The state store's contract, run against SQLite and PostgreSQL (see conftest.store_url)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError

from reconciler.errors import StoreError
from reconciler.ids import CommitSha, JobId
from reconciler.store import AppliedFile, AppliedJob, Store, applied_rows_hash, row_key
from reconciler.store.engine import parse_store_url, search_path_schema
from reconciler.store.migrate import HEAD_REVISION, MIGRATIONS_DIR, read_revision
from reconciler.store.tables import fires, metadata

PROJECT_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
C1 = CommitSha("1" * 40)
C2 = CommitSha("2" * 40)


def applied_job(name: str, *, content: str = "h1", serial: int = 1, **changes: Any) -> AppliedJob:
    values: dict[str, Any] = {
        "job_id": JobId(name),
        "version": C1,
        "commit": C1,
        "content_hash": content,
        "input_blobs": {f"jobs/{name.replace('.', '/')}.yaml": "b" * 40},
        "definition": {"id": name, "schedules": [{"cron": "0 2 * * *", "tz": "Europe/Berlin"}]},
        "applied_serial": serial,
        "applied_at": T0,
    }
    values.update(changes)
    return AppliedJob(**values)


@contextmanager
def opened(url: str, *, migrate: bool = True) -> Iterator[Store]:
    store = Store.open(url, migrate=migrate)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with opened(store_url) as store:
        yield store


def finish(tx: Any, *, commit: CommitSha = C1, at: datetime = T0, user: str = "alice") -> Any:
    return tx.finish(
        commit=commit,
        main_tip=commit,
        user=user,
        commit_author="Alice <alice@example.com>",
        at=at,
        summary={"create": 1},
        plan=None,
    )


def test_an_empty_store_reads_serial_zero_and_empty_maps(store: Store) -> None:
    state = store.read_state()
    assert state.serial == 0
    assert (state.commit, state.main_tip, state.applied_at, state.rows_hash) == (None,) * 4
    assert store.read_job_index() == {}
    assert store.read_jobs() == {}
    assert store.read_files() == {}
    assert store.list_applies() == []


def test_a_never_migrated_store_opened_without_migrating_reads_as_empty(store_url: str) -> None:
    with opened(store_url, migrate=False) as store:
        assert store.read_state().serial == 0
        assert store.read_job_index(include_deleted=True) == {}
        assert store.read_files() == {}
        assert store.list_applies() == []
        with pytest.raises(StoreError, match="migrate=True"):
            store.apply_transaction(holder="t", lock_timeout=1)


def test_opening_twice_is_idempotent_and_the_version_table_lives_in_the_chosen_schema(
    store_url: str,
) -> None:
    with opened(store_url), opened(store_url) as store, store.engine.connect() as conn:
        assert read_revision(conn) == HEAD_REVISION
        if conn.dialect.name == "postgresql":
            schemas = conn.execute(
                text(
                    "SELECT table_schema FROM information_schema.tables"
                    " WHERE table_name = 'alembic_version'"
                    " AND table_schema = ANY(:candidates)"
                ),
                {"candidates": [search_path_schema(parse_store_url(store_url)), "public"]},
            ).scalars()
            assert list(schemas) == [search_path_schema(parse_store_url(store_url))]


def test_opening_a_current_store_does_not_import_alembic(store: Store, store_url: str) -> None:
    script = textwrap.dedent(
        """
        import sys
        from reconciler.store import Store
        Store.open(sys.argv[1]).close()
        print("alembic" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, store_url],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == "False"


def test_the_migrations_create_exactly_the_declared_tables(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    newest = max(p.name.split("_", 1)[0] for p in (MIGRATIONS_DIR / "versions").glob("*.py"))
    assert newest == HEAD_REVISION
    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_jobs_round_trip_with_json_and_aware_utc_datetimes(store: Store) -> None:
    berlin_noon = datetime(2026, 7, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    job = applied_job(
        "sales.eu.daily",
        applied_at=berlin_noon,
        definition={"id": "sales.eu.daily", "nested": {"list": [1, 2.5, None, "ü"]}, "b": True},
    )
    with store.apply_transaction(holder="t", lock_timeout=5) as tx:
        tx.upsert_jobs([job, applied_job("a.first")])
        assert tx.read_jobs([JobId("sales.eu.daily")]) == {job.job_id: job}
        finish(tx)
    read = store.read_jobs()
    assert list(read) == ["a.first", "sales.eu.daily"]
    assert read[job.job_id] == job
    assert read[job.job_id].applied_at.tzinfo is UTC
    assert read[job.job_id].applied_at == datetime(2026, 7, 1, 10, 0, 0, 123456, tzinfo=UTC)
    index = store.read_job_index()
    assert index[job.job_id].version == C1
    assert index[job.job_id].content_hash == "h1"
    assert index[job.job_id].input_blobs == job.input_blobs
    assert store.read_jobs([JobId("sales.eu.daily"), JobId("missing")]) == {job.job_id: job}


def test_files_round_trip_and_replace_removes_deleted_paths(store: Store) -> None:
    settings = AppliedFile(path="reconciler.yaml", blob="a" * 40, kind="settings", parsed={"x": 1})
    query = AppliedFile(path="queries/q.sql", blob="b" * 40, kind="query", parsed=None)
    with store.apply_transaction(holder="t", lock_timeout=5) as tx:
        tx.replace_files([settings, query], [])
        finish(tx)
    assert store.read_files() == {"queries/q.sql": query, "reconciler.yaml": settings}
    changed = AppliedFile(path="reconciler.yaml", blob="c" * 40, kind="settings", parsed=[1, "2"])
    with store.apply_transaction(holder="t", lock_timeout=5) as tx:
        tx.replace_files([changed], ["queries/q.sql"])
        assert tx.read_files() == {"reconciler.yaml": changed}
        finish(tx, commit=C2)
    assert store.read_files() == {"reconciler.yaml": changed}


def test_finish_bumps_the_serial_and_records_the_apply(store: Store) -> None:
    for serial, commit in ((1, C1), (2, C2)):
        with store.apply_transaction(holder="t", lock_timeout=5) as tx:
            assert tx.next_serial == serial
            tx.upsert_jobs([applied_job("a.job", content=f"h{serial}", serial=serial)])
            record = finish(tx, commit=commit, at=T0 + timedelta(hours=serial))
        assert record.serial == serial
    state = store.read_state()
    assert (state.serial, state.commit, state.main_tip) == (2, C2, C2)
    assert state.applied_at == T0 + timedelta(hours=2)
    assert state.rows_hash == store.applied_rows_hash()
    assert state.rows_hash == applied_rows_hash([row_key(applied_job("a.job", content="h2"))])
    applies = store.list_applies()
    assert [a.serial for a in applies] == [2, 1]
    assert applies[0] == record
    assert applies[0].commit_author == "Alice <alice@example.com>"
    assert applies[0].summary == {"create": 1}
    assert store.list_applies(limit=1) == [record]


def test_an_exception_inside_the_apply_rolls_back_everything(store: Store) -> None:
    def apply_then_fail() -> None:
        with store.apply_transaction(holder="t", lock_timeout=5) as tx:
            tx.upsert_jobs([applied_job("a.job")])
            tx.replace_files([AppliedFile(path="x.yaml", blob="a" * 40, kind="job", parsed={})], [])
            finish(tx)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        apply_then_fail()
    assert store.read_state().serial == 0
    assert store.read_jobs(include_deleted=True) == {}
    assert store.read_files() == {}
    assert store.list_applies() == []


def test_deleted_jobs_are_hidden_unless_include_deleted(store: Store) -> None:
    with store.apply_transaction(holder="t", lock_timeout=5) as tx:
        tx.upsert_jobs([applied_job("a.kept"), applied_job("a.gone")])
        finish(tx)
    with store.apply_transaction(holder="t", lock_timeout=5) as tx:
        tx.mark_jobs_deleted([JobId("a.gone")], T0 + timedelta(days=1))
        finish(tx, commit=C2)
    assert list(store.read_job_index()) == ["a.kept"]
    assert list(store.read_jobs()) == ["a.kept"]
    assert list(store.read_job_index(include_deleted=True)) == ["a.gone", "a.kept"]
    gone = store.read_jobs([JobId("a.gone")], include_deleted=True)[JobId("a.gone")]
    assert gone.deleted_at == T0 + timedelta(days=1)
    assert store.read_state().rows_hash != applied_rows_hash(
        [row_key(applied_job("a.kept")), row_key(applied_job("a.gone"))]
    )


def test_a_naive_datetime_is_refused_with_a_store_error(store: Store) -> None:
    with (
        pytest.raises(StoreError, match="naive datetime"),
        store.apply_transaction(holder="t", lock_timeout=5) as tx,
    ):
        tx.upsert_jobs([applied_job("a.job", applied_at=datetime(2026, 1, 1))])


def test_a_second_apply_waits_while_the_first_holds_the_lock_and_proceeds_after_commit(
    store_url: str,
) -> None:
    second_started = threading.Event()
    second_acquired = threading.Event()
    seen: dict[str, Any] = {}

    def second_apply() -> None:
        try:
            with opened(store_url) as second:
                second_started.set()
                with second.apply_transaction(holder="second", lock_timeout=20) as tx:
                    seen["acquired_at"] = time.monotonic()
                    seen["serial"] = tx.read_state().serial
                    second_acquired.set()
                    finish(tx, commit=C2, user="bob")
        except BaseException as exc:
            seen["error"] = exc

    with opened(store_url) as first:
        thread = threading.Thread(target=second_apply)
        with first.apply_transaction(holder="first", lock_timeout=5) as tx:
            thread.start()
            assert second_started.wait(10)
            # Bounded wait on the event: the second apply must still be blocked.
            assert not second_acquired.wait(0.5)
            tx.upsert_jobs([applied_job("a.job")])
            finish(tx)
            released_at = time.monotonic()
        thread.join(30)
        assert "error" not in seen, seen.get("error")
        assert seen["acquired_at"] >= released_at
        assert seen["serial"] == 1  # it saw the first apply's commit
        assert [a.user for a in first.list_applies()] == ["bob", "alice"]


def test_a_second_apply_gives_up_after_lock_timeout_with_a_clear_error(store_url: str) -> None:
    with opened(store_url) as first, opened(store_url) as second:
        with first.apply_transaction(holder="first", lock_timeout=5) as tx:
            started = time.monotonic()
            with (
                pytest.raises(StoreError) as raised,
                second.apply_transaction(holder="second", lock_timeout=0.3),
            ):
                pytest.fail("the second apply must not get the lock")
            waited = time.monotonic() - started
            finish(tx)
        message = str(raised.value)
        assert message.startswith("another apply holds the state lock")
        assert message.endswith("; gave up after 0.3 s (--lock-timeout)")
        assert 0.25 <= waited < 5
        # The lock is free again, and the timed-out apply left nothing behind.
        with second.apply_transaction(holder="second", lock_timeout=5) as tx:
            assert tx.read_state().serial == 1


def test_a_holder_killed_while_holding_the_lock_releases_it(store_url: str) -> None:
    script = textwrap.dedent(
        """
        import sys
        from datetime import UTC, datetime
        from reconciler.store import AppliedJob, Store
        store = Store.open(sys.argv[1])
        with store.apply_transaction(holder="doomed", lock_timeout=10) as tx:
            tx.upsert_jobs([AppliedJob(
                job_id="a.doomed", version="1" * 40, commit="1" * 40, content_hash="h",
                input_blobs={}, definition={}, applied_serial=1,
                applied_at=datetime.now(UTC),
            )])
            print("holding", flush=True)
            sys.stdin.read()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, store_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line.strip() == "holding", holder.stderr.read() if holder.stderr else ""
        with opened(store_url) as store:
            with (
                pytest.raises(StoreError, match="another apply holds the state lock"),
                store.apply_transaction(holder="probe", lock_timeout=0.2),
            ):
                pass
            holder.kill()
            holder.wait(10)
            started = time.monotonic()
            with store.apply_transaction(holder="next", lock_timeout=30) as tx:
                waited = time.monotonic() - started
                assert tx.read_state().serial == 0
                assert tx.read_jobs(include_deleted=True) == {}
                finish(tx)
        print(f"lock free {waited:.3f} s after the holder was killed")  # noqa: T201
        assert waited < 30
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        for stream in (holder.stdin, holder.stdout, holder.stderr):
            if stream is not None:
                stream.close()


def test_the_fire_ledger_rejects_a_duplicate_job_schedule_and_time(store: Store) -> None:
    row = {
        "job_id": "a.job",
        "schedule_id": "nightly",
        "scheduled_at": T0,
        "outcome": "FIRED",
        "run_id": "jr_" + "0" * 32,
        "decided_at": T0,
    }
    with store.engine.begin() as conn:
        conn.execute(insert(fires).values(**row))
        conn.execute(insert(fires).values(**{**row, "scheduled_at": T0 + timedelta(days=1)}))
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(insert(fires).values(**{**row, "outcome": "SKIPPED", "run_id": None}))
    with store.engine.connect() as conn:
        outcomes = conn.execute(select(fires.c.outcome, fires.c.overflow_count)).all()
    assert [tuple(r) for r in outcomes] == [("FIRED", 0), ("FIRED", 0)]


def test_ten_thousand_jobs_upsert_in_one_transaction(store: Store) -> None:
    jobs = [applied_job(f"team{i % 50}.job{i:05d}") for i in range(10_000)]
    started = time.perf_counter()
    with store.apply_transaction(holder="t", lock_timeout=5) as tx:
        tx.upsert_jobs(jobs)
        finish(tx)
    upserted = time.perf_counter() - started
    started = time.perf_counter()
    index = store.read_job_index()
    indexed = time.perf_counter() - started
    print(  # noqa: T201
        f"{store.engine.dialect.name}: upsert+finish of 10,000 jobs {upserted:.3f} s,"
        f" read_job_index {indexed * 1000:.1f} ms"
    )
    assert len(index) == 10_000
    assert list(index) == sorted(index)
    assert store.read_state().rows_hash == applied_rows_hash(row_key(j) for j in jobs)
