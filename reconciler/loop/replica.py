"""One `serve` replica: each tick it holds the leader lease, follows main (auto-sync),
fires due schedules exactly once, supervises runs and heals drift.

Invariants: only the lease holder writes; every leader write transaction checks the
fencing token (fires) or checks it just before commit (applies), so a replica that lost
its lease while paused cannot write; fires, their runs and the schedule cursors are
written in one transaction; an invalid commit is never applied and is reported once.
The one broad `except Exception` of the product is the per-tick guard in `run`.
Edge: store, git, processes, clock, signals.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler.clock import Clock
from reconciler.errors import DefinitionError, LeaseLost, RepoError, StateError, StoreError
from reconciler.ids import CommitSha, JobId, ScheduleId
from reconciler.loop.decide import Cursor, Decision, LiveSchedule, Outcome, decide
from reconciler.loop.fetch import fetch
from reconciler.loop.metrics import LoopMetrics
from reconciler.runs.dispatch import Runner
from reconciler.runs.record import Run
from reconciler.runs.scheduled import scheduled_run
from reconciler.runs.state import RunState
from reconciler.store import Store
from reconciler.store.fires import Fire, FireStore
from reconciler.store.leases import Lease, LeaseStore
from reconciler.store.loopstate import LoopStateStore

LEADER = "leader"
SERVE_USER = "serve"
log = logging.getLogger("reconciler.serve")


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopConfig:
    replica_id: str
    interval: float = 10.0
    lease_ttl: float = 15.0
    self_heal: bool = True
    lock_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class _Idle:
    """A schedule that `decide` found with nothing due under this very cursor: until
    `next_at` (never, when None) deciding it again gives no rows and the same `next_at`,
    so `fire` skips it while its LiveSchedule and cursor objects stay the same."""

    schedule: LiveSchedule
    cursor: Cursor
    next_at: datetime | None


def _iso_z(at: datetime) -> str:
    """ISO-8601 in UTC with `Z`, as every JSON time of the CLI (DESIGN.md, Conventions)."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class LiveJobs:
    """The applied jobs as of one state serial (reloaded only when the serial moves)."""

    serial: int
    commit: CommitSha | None
    jobs: Mapping[JobId, Any]
    settings: Mapping[str, Any]
    schedules: list[LiveSchedule] = field(default_factory=list)


class Replica:
    def __init__(
        self,
        *,
        repo: Path,
        store: Store,
        runner: Runner,
        clock: Clock,
        config: LoopConfig,
        metrics: LoopMetrics | None = None,
    ) -> None:
        self.repo = repo
        self.store = store
        self.runner = runner
        self.clock = clock
        self.config = config
        self.metrics = metrics or LoopMetrics()
        self.leases = LeaseStore(store)
        self.fires = FireStore(store)
        self.state = LoopStateStore(store)
        self.lease: Lease | None = None
        self.stopping = threading.Event()
        self._live: LiveJobs | None = None
        self._cursors: dict[tuple[str, str], Cursor] | None = None  # (job, schedule) -> cursor
        self._idle: dict[tuple[str, str], _Idle] = {}
        self._last_sync: datetime | None = None
        self._reported_bad: str | None = None
        self._renewer: threading.Thread | None = None
        self._lease_lock = threading.Lock()

    # -- the lease ------------------------------------------------------------------

    def _renew(self, now: datetime) -> Lease | None:
        with self._lease_lock:
            lease = self.leases.acquire_or_renew(
                LEADER,
                self.config.replica_id,
                ttl=self.config.lease_ttl,
                now=now,
                pid=os.getpid(),
            )
            previous = self.lease
            self.lease = lease
        if lease is not None and (previous is None or previous.token != lease.token):
            log.info("became leader", extra={"token": lease.token})
            self._cursors = None  # another leader may have moved them
        if lease is None and previous is not None:
            log.warning("lost the leader lease; standing by")
        self.metrics.is_leader.set(1 if lease is not None else 0)
        return lease

    def start_renewing(self) -> None:
        """Renew the lease every third of its TTL in a thread, also during a long apply.

        The third is measured on the injected clock, as the lease's expiry is: with a
        test clock that runs faster than the wall clock a wall-clock period would let
        the lease lapse during a long tick.
        """

        def loop() -> None:
            while not self.stopping.is_set():
                self._sleep(self.config.lease_ttl / 3)
                if self.stopping.is_set() or self.lease is None:
                    continue
                try:
                    self._renew(self.clock.now())
                except StoreError as exc:
                    log.warning("renewing the lease failed: %s", exc)

        self._renewer = threading.Thread(target=loop, name="lease-renewal", daemon=True)
        self._renewer.start()

    def release(self) -> None:
        lease = self.lease
        if lease is not None:
            try:
                self.leases.release(LEADER, self.config.replica_id, lease.token)
            except StoreError as exc:
                log.warning("releasing the lease failed: %s", exc)
            self.lease = None
            self.metrics.is_leader.set(0)

    def fence(self, conn: Any) -> None:
        """Inside a write transaction: raise LeaseLost unless we still hold the lease."""
        lease = self.lease
        if lease is None:
            raise LeaseLost("this replica does not hold the leader lease")
        self.leases.check(conn, LEADER, self.config.replica_id, lease.token, self.clock.now())

    # -- one tick -------------------------------------------------------------------

    def tick(self) -> float:
        """One pass; returns how long to sleep before the next."""
        now = self.clock.now()
        if self._renew(now) is None:
            return self.config.lease_ttl / 3
        due_sync = self._last_sync is None or (
            now - self._last_sync >= timedelta(seconds=self.config.interval)
        )
        if due_sync:
            self.sync(now)
            self._last_sync = now
        next_fire = self.fire(self.clock.now())
        self.runner.reconcile()
        self._export_run_states()
        now = self.clock.now()
        waits = [self.config.lease_ttl / 3]
        assert self._last_sync is not None
        waits.append(
            (self._last_sync + timedelta(seconds=self.config.interval) - now).total_seconds()
        )
        if next_fire is not None:
            waits.append((next_fire - now).total_seconds())
        if self.runner.runs.active():
            waits.append(0.2)  # watch running jobs closely
        return max(0.0, min(waits))

    def run(self) -> None:
        """Tick until `stopping` is set; then release the lease."""
        self.start_renewing()
        try:
            while not self.stopping.is_set():
                try:
                    delay = self.tick()
                except LeaseLost as exc:
                    log.warning("stepping down: %s", exc)
                    self.lease = None
                    self.metrics.is_leader.set(0)
                    delay = self.config.lease_ttl / 3
                except Exception:  # the loop's per-tick guard: log, keep going
                    log.exception("tick failed; retrying")
                    delay = 1.0
                self._sleep(delay)
        finally:
            self.stopping.set()
            self.release()

    def _sleep(self, seconds: float) -> None:
        """Sleep on the injected clock in slices, waking at once on SIGTERM."""
        deadline = self.clock.now() + timedelta(seconds=seconds)
        while not self.stopping.is_set():
            left = (deadline - self.clock.now()).total_seconds()
            if left <= 0:
                return
            self.stopping.wait(min(left, 0.05))

    # -- sync -------------------------------------------------------------------------

    def sync(self, now: datetime) -> None:
        """Fetch; apply main's tip when it moved (or heal drift); report a bad commit once."""
        from reconciler.repo.branches import resolve_main
        from reconciler.sync.apply import apply_main

        started = self.clock.now()
        try:
            fetch(self.repo)
            main = resolve_main(self.repo)
        except RepoError as exc:
            self._sync_error(None, str(exc), now)
            return
        state = self.store.read_state()
        drift = self.drift(state)
        if drift is not None:
            self.state.set_values({"drift": drift}, now=now)
            if not self.config.self_heal:
                log.warning("drift: %s (--no-self-heal: not healing)", drift["reason"])
        heal = drift is not None and self.config.self_heal
        if main.tip == state.commit and not heal:
            self.metrics.last_sync.set(self.clock.now().timestamp())
            return
        if main.tip == self._reported_bad:
            return
        try:
            outcome = apply_main(
                self.repo,
                self.store,
                user=SERVE_USER,
                now=now,
                lock_timeout=self.config.lock_timeout,
                fence=self.fence,
                heal=heal,
            )
        except DefinitionError as exc:
            self._sync_error(main.tip, str(exc), now)
            return
        except StateError as exc:
            if isinstance(exc, LeaseLost):
                raise
            self._sync_error(main.tip, str(exc), now)
            return
        finished = self.clock.now()
        self.metrics.sync_duration.observe((finished - started).total_seconds())
        self.metrics.last_sync.set(finished.timestamp())
        values: dict[str, Any] = {
            "lastSyncedCommit": main.tip,
            "lastSyncedAt": _iso_z(finished),
            "lastSyncError": None,
        }
        if heal:
            values["drift"] = None
            log.info("healed drift by re-applying %s", main.tip[:12])
        self.state.set_values(values, now=finished)
        self._reported_bad = None
        if outcome.record is not None:
            counts = outcome.plan.summary()
            log.info(
                "applied %s as serial %s: %s created, %s updated, %s deleted",
                main.tip[:12],
                outcome.record.serial,
                counts["create"],
                counts["update"],
                counts["delete"],
            )

    def _sync_error(self, commit: str | None, message: str, now: datetime) -> None:
        if commit is not None and commit == self._reported_bad:
            return
        self._reported_bad = commit
        log.error("not applied %s: %s", (commit or "")[:12], message)
        self.state.set_values(
            {"lastSyncError": {"commit": commit, "message": message, "at": _iso_z(now)}},
            now=now,
        )

    def drift(self, state: Any) -> dict[str, Any] | None:
        """Drift as `plan` reports it (see `reconciler.sync.statedrift`), or None."""
        from reconciler.sync.statedrift import detect_drift

        reason = detect_drift(self.repo, self.store)
        return None if reason is None else {"reason": reason, "serial": state.serial}

    # -- fire -------------------------------------------------------------------------

    def _live_jobs(self) -> LiveJobs:
        state = self.store.read_state()
        if self._live is not None and self._live.serial == state.serial:
            return self._live
        jobs = self.store.read_jobs()
        files = self.store.read_files()
        row = files.get("reconciler.yaml")
        settings = dict(row.parsed) if row is not None and row.parsed else {}
        schedules = []
        for job_id, job in sorted(jobs.items()):
            definition = job.definition
            for s in definition.get("schedules", []):
                schedules.append(
                    LiveSchedule(
                        job_id=job_id,
                        schedule_id=s["id"],
                        cron=s["cron"],
                        timezone=s["timezone"],
                        starting_deadline_seconds=s.get("startingDeadlineSeconds"),
                        concurrency_policy=s.get("concurrencyPolicy", "ALLOW"),
                        enabled=bool(s.get("enabled", True)),
                        job_suspended=bool(definition.get("suspended", False)),
                        applied_at=job.applied_at,
                    )
                )
        self._idle = {}
        self._live = LiveJobs(
            serial=state.serial,
            commit=state.commit,
            jobs=jobs,
            settings=settings,
            schedules=schedules,
        )
        return self._live

    def fire(self, now: datetime) -> datetime | None:
        """Decide every due scheduled time; returns the next time something is due."""
        live = self._live_jobs()
        if live.commit is None:
            return None
        if self._cursors is None:
            self._cursors = {
                (str(job), str(schedule)): Cursor(
                    cursor_at=c.cursor_at, definition_hash=c.definition_hash
                )
                for (job, schedule), c in self.fires.read_cursors().items()
            }
        cursors = self._cursors
        changed, next_at = self._decide(live, cursors, now)
        if not changed:
            return next_at
        for d in changed:
            if d.replace:
                self._stop_for_replace(d)
        fires, runs = self._records(changed, live, now)
        written = {
            (JobId(d.schedule.job_id), ScheduleId(d.schedule.schedule_id)): d.cursor
            for d in changed
        }
        lease = self.lease
        if lease is None:
            raise LeaseLost("this replica does not hold the leader lease")
        with self.leases.leader_transaction(
            LEADER, self.config.replica_id, lease.token, now
        ) as conn:
            self.fires.insert(fires, conn=conn)
            self.runner.runs.insert_many(runs, conn=conn)
            self.fires.write_cursors(written, now=now, conn=conn)
        committed = self.clock.now()
        cursors.update({d.schedule.key: d.cursor for d in changed})
        for f in fires:
            self.metrics.fires.labels(f.outcome).inc()
            if f.outcome == Outcome.FIRED:
                self.metrics.lateness.observe(
                    max(0.0, (committed - f.scheduled_at).total_seconds())
                )
        if runs and not self.runner.record_only:
            self.runner.pump()
        return next_at

    def _decide(
        self, live: LiveJobs, cursors: Mapping[tuple[str, str], Cursor], now: datetime
    ) -> tuple[list[Decision], datetime | None]:
        """The decisions to write (rows, or a new or changed cursor) and the next due time.

        Schedules known idle under their current cursor are not decided again before
        their next time (most of them, on most ticks)."""
        active: Counter[str] = Counter(str(r.job_id) for r in self.runner.runs.active())
        decisions: list[Decision] = []
        idle = self._idle
        waiting: list[datetime] = []
        for s in live.schedules:
            cursor = cursors.get(s.key)
            known = idle.get(s.key)
            if (
                known is not None
                and known.schedule is s
                and known.cursor is cursor
                and (known.next_at is None or now < known.next_at)
            ):
                if known.next_at is not None:
                    waiting.append(known.next_at)
                continue
            decisions.append(decide(s, cursor, now=now, active_runs=active[s.job_id]))
        changed: list[Decision] = []
        for d in decisions:
            known_cursor = cursors.get(d.schedule.key)
            if (
                d.rows
                or known_cursor is None
                or known_cursor.definition_hash != d.cursor.definition_hash
            ):
                changed.append(d)
            else:
                idle[d.schedule.key] = _Idle(d.schedule, known_cursor, d.next_at)
            if d.next_at is not None:
                waiting.append(d.next_at)
        next_at = min(waiting, default=None)
        return changed, next_at

    def _records(
        self, decisions: list[Decision], live: LiveJobs, now: datetime
    ) -> tuple[list[Fire], list[Run]]:
        from reconciler.runs.resolve import catalog_path
        from reconciler.spec.settings import RepoSettings

        settings_model: RepoSettings | None = None
        fires: list[Fire] = []
        runs: list[Run] = []
        for d in decisions:
            job = live.jobs[JobId(d.schedule.job_id)]
            run_id = None
            if d.fire_at is not None:
                catalog = None
                if "sql" in job.definition:
                    if settings_model is None:
                        settings_model = RepoSettings.model_validate(live.settings)
                    catalog = catalog_path(
                        settings_model, job.definition["sql"].get("catalog"), self.runner.state_dir
                    )
                run = scheduled_run(
                    job_id=d.schedule.job_id,
                    schedule_id=d.schedule.schedule_id,
                    scheduled_at=d.fire_at,
                    definition=job.definition,
                    commit=live.commit or job.commit,
                    version=job.version,
                    settings=live.settings,
                    catalog_path=catalog,
                    host=self.runner.host,
                    runs_dir=self.runner.state_dir / "runs",
                    now=now,
                )
                if self.runner.record_only:
                    run = _succeeded_without_process(run, now)
                runs.append(run)
                run_id = run.id
            for row in d.rows:
                fires.append(
                    Fire(
                        job_id=JobId(d.schedule.job_id),
                        schedule_id=ScheduleId(d.schedule.schedule_id),
                        scheduled_at=row.scheduled_at,
                        outcome=row.outcome.value,
                        reason=row.reason,
                        run_id=run_id if row.outcome is Outcome.FIRED else None,
                        decided_at=now,
                        overflow_count=row.overflow_count,
                        lateness_ms=int((now - row.scheduled_at).total_seconds() * 1000),
                    )
                )
        return fires, runs

    def _stop_for_replace(self, d: Decision) -> None:
        active = [r.id for r in self.runner.runs.active() if r.job_id == d.schedule.job_id]
        if active:
            log.info("REPLACE: stopping %s run(s) of %s", len(active), d.schedule.job_id)
            self.runner.stop(d.schedule.job_id, active)

    def _export_run_states(self) -> None:
        counts = Counter(r.state.value for r in self.runner.runs.active())
        for state in ("WAITING", "STARTING", "RUNNING", "STOPPING"):
            self.metrics.runs.labels(state).set(counts.get(state, 0))


def _succeeded_without_process(run: Run, now: datetime) -> Run:
    """The record-only target (`serve --record-only`, benchmarks): a fired run is recorded
    SUCCEEDED with its ledger row, as `Runner` would record it at launch, so thousands
    of fires do not cost three single-row updates each in the queue afterwards."""
    return run.with_changes(
        state=RunState.SUCCEEDED,
        started_on=now,
        completed_on=now,
        last_modified_on=now,
        execution_time=0,
        exit_code=0,
        details={**run.details, "recordOnly": True},
    )
