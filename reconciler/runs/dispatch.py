"""Starting, queueing, watching and finishing runs on the local target.

Invariants: every state change is a conditional update of the store, so two processes
looking at the same run never both make a transition; queue decisions (slots on this
host, per job, one SQL run per DuckDB catalog file) are taken under the store's queue
lock; a run whose supervisor died is marked ERROR and its process group killed; secret
values never reach the store (the run record holds redacted arguments only).

Edge: store, git, processes. Every function that reads runs reconciles first.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.clock import Clock
from reconciler.errors import ReconcilerError, TargetError, UsageError
from reconciler.ids import JobId, RunId
from reconciler.runs.record import Run, new_run_id, redact_mapping
from reconciler.runs.resolve import (
    RunPlan,
    check_local_target,
    resolve_secrets,
)
from reconciler.runs.state import RunState, path_to

if TYPE_CHECKING:
    from reconciler.store import Store
    from reconciler.store.runs import RunStore

DEFAULT_HOST_SLOTS = 8
SECRETS_FILE = "secrets.json"
LAUNCH_GRACE = timedelta(seconds=60)
"""A STARTING run with no supervisor after this long lost the process launching it."""


class ConcurrentRunsExceeded(TargetError):
    """A run with --no-queue found no free slot (as Glue's ConcurrentRunsExceededException)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StopResult:
    stopped: list[RunId] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Runner:
    """Runs of one jobs repo and store, on this host."""

    repo: Path
    store: Store
    runs: RunStore
    clock: Clock
    db_url: str
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    host: str = field(default_factory=socket.gethostname)
    record_only: bool = False
    """The record-only target: runs succeed at once without a process (benchmarks)."""
    watching: bool = False
    """True in a long-lived process (serve) that calls `reconcile` itself often: its
    runs' supervisors then exit after the final status instead of starting the finisher."""
    _waiting: dict[RunId, Run] = field(default_factory=dict, init=False, repr=False)
    """The WAITING runs the last `pump` read, by id. A run's row does not change while
    it waits, so each is read from the store once, not on every pump."""

    @property
    def state_dir(self) -> Path:
        return self.repo / ".reconciler"

    def run_dir(self, run_id: str) -> Path:
        return self.state_dir / "runs" / run_id

    # -- starting -----------------------------------------------------------------

    def start(
        self,
        job_id: str,
        *,
        arguments: Mapping[str, str],
        ref: str | None,
        trigger: str,
        no_queue: bool = False,
        timeout: int | None = None,
    ) -> Run:
        """Record a new run and start it if a slot is free (else it waits in WAITING)."""
        from reconciler.runs.prepare import plan_run

        plan = plan_run(self, JobId(job_id), ref=ref, arguments=arguments)
        check_local_target(job_id, plan.definition, is_root=os.geteuid() == 0)
        secrets = resolve_secrets(job_id, plan.definition, self.environ)
        if plan.catalog_path is not None:
            from reconciler.targets.local.sqlrun import check_catalog

            problem = check_catalog(Path(plan.catalog_path))
            if problem is not None:
                raise TargetError(f"{job_id}: the run cannot start: {problem}")
        now = self.clock.now()
        run = self._new_run(plan, secrets, trigger=trigger, now=now, timeout=timeout)
        self._write_secrets(run.id, secrets)
        with self.runs.queue_lock() as conn:
            if no_queue and self._blocked(run, self.runs.holding_slot(conn=conn), conn=conn):
                shutil.rmtree(self.run_dir(run.id), ignore_errors=True)
                raise ConcurrentRunsExceeded(
                    f"ConcurrentRunsExceeded: {job_id}: no free slot (maxConcurrentRuns of the "
                    "job or of this host, or its catalog is in use); run without --no-queue to "
                    "wait in WAITING"
                )
            self.runs.insert(run, conn=conn)
        self.pump()
        started = self.runs.get(run.id)
        assert started is not None
        return started

    def _new_run(
        self,
        plan: RunPlan,
        secrets: Mapping[str, str],
        *,
        trigger: str,
        now: datetime,
        timeout: int | None,
        attempt: int = 0,
        previous: Run | None = None,
    ) -> Run:
        run_id = new_run_id()
        definition = plan.definition
        details: dict[str, Any] = {
            "definition": dict(definition),
            "kind": next(k for k in ("sql", "python", "command", "streaming") if k in definition),
            "host": self.host,
            "hostSlots": _host_slots(plan.settings),
            "catalogPath": plan.catalog_path,
            "queueTimeoutSeconds": definition.get("queueTimeoutSeconds", 3600),
            "pip": dict(plan.settings.get("pip") or {}),
        }
        if previous is not None:
            details["firstStartedOn"] = previous.details.get("firstStartedOn")
        return Run(
            id=run_id,
            job_id=plan.job_id,
            attempt=attempt,
            previous_run_id=previous.id if previous is not None else None,
            trigger=trigger,
            commit=plan.commit,
            version=plan.version,
            draft_ref=plan.draft_ref,
            state=RunState.WAITING,
            created_at=now,
            last_modified_on=now,
            arguments=redact_mapping(plan.arguments, secrets.values()),
            timeout=timeout or int(definition.get("timeoutSeconds") or 3600),
            profile=plan.profile,
            snapshots=plan.snapshots,
            predecessors=(
                ({"jobName": previous.job_id, "runId": previous.id},) if previous else ()
            ),
            log_location=str(self.run_dir(run_id)),
            target=f"local:{self.host}",
            details=details,
        )

    def _write_secrets(self, run_id: str, secrets: Mapping[str, str]) -> None:
        run_dir = self.run_dir(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        if not secrets:
            return
        path = run_dir / SECRETS_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(dict(secrets), out)

    def _read_secrets(self, run_id: str) -> dict[str, str]:
        path = self.run_dir(run_id) / SECRETS_FILE
        try:
            data: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return data

    # -- the queue ----------------------------------------------------------------

    def _blocked(self, run: Run, active: Sequence[Run], *, conn: Any = None) -> bool:
        """Whether `run` cannot start now next to the `active` runs of the store."""
        del conn
        return _Slots.held_by(active, self.host).block(run)

    def _read_waiting(self, conn: Any) -> list[Run]:
        """The WAITING runs in queue order, reading from the store only those not seen."""
        ids = self.runs.waiting_ids(conn=conn)
        unseen = [run_id for run_id in ids if run_id not in self._waiting]
        known = {run_id: self._waiting[run_id] for run_id in ids if run_id in self._waiting}
        known.update((run.id, run) for run in self.runs.get_many(unseen, conn=conn))
        self._waiting = known
        return [known[run_id] for run_id in ids if run_id in known]

    def pump(self) -> list[Run]:
        """Start WAITING runs, oldest first, while slots allow; expire those past their
        queue timeout. Returns the runs started."""
        claimed: list[Run] = []
        now = self.clock.now()
        with self.runs.queue_lock() as conn:
            slots = _Slots.held_by(self.runs.holding_slot(conn=conn), self.host)
            for run in self._read_waiting(conn):
                if run.details.get("host") not in (None, self.host):
                    continue
                deadline = run.created_at + timedelta(
                    seconds=int(run.details.get("queueTimeoutSeconds") or 0)
                )
                if now >= deadline:
                    self._finish_without_start(
                        run,
                        RunState.EXPIRED,
                        now,
                        "the run waited longer than its queueTimeoutSeconds "
                        f"({run.details.get('queueTimeoutSeconds')} s) for a slot",
                        conn=conn,
                    )
                    continue
                if slots.block(run):
                    continue
                moved = self.runs.update(
                    run.id,
                    expect=RunState.WAITING,
                    changes={"state": RunState.STARTING, "last_modified_on": now},
                    conn=conn,
                )
                if moved is not None:
                    claimed.append(moved)
                    slots.add(moved)
        started = []
        for run in claimed:
            started.append(self._launch(run))
        return started

    def _finish_without_start(
        self, run: Run, state: RunState, now: datetime, message: str, *, conn: Any = None
    ) -> None:
        self.runs.update(
            run.id,
            expect=run.state,
            changes={
                "state": state,
                "completed_on": now,
                "last_modified_on": now,
                "error_message": message,
            },
            conn=conn,
        )
        (self.run_dir(run.id) / SECRETS_FILE).unlink(missing_ok=True)

    def _launch(self, run: Run) -> Run:
        from reconciler.runs.prepare import build_launch
        from reconciler.targets.local.launcher import start_supervised

        now = self.clock.now()
        if self.record_only:
            return self._record_only(run, now)
        try:
            if run.details.get("resolveAtLaunch") and run.snapshots is None:
                run = self._resolve_at_launch(run)
            launch = build_launch(self, run)
            secrets = self._read_secrets(run.id)
            pid, start_time = start_supervised(self.run_dir(run.id), launch, secrets)
        except (ReconcilerError, OSError) as exc:
            self.runs.update(
                run.id,
                expect=RunState.STARTING,
                changes={
                    "state": RunState.ERROR,
                    "completed_on": now,
                    "last_modified_on": now,
                    "error_message": f"could not start: {exc}",
                },
            )
            after = self.runs.get(run.id)
            assert after is not None
            return after
        finally:
            (self.run_dir(run.id) / SECRETS_FILE).unlink(missing_ok=True)
        details = {**run.details, "supervisorStart": start_time}
        details.setdefault("firstStartedOn", now.isoformat())
        moved = self.runs.update(
            run.id,
            expect=RunState.STARTING,
            changes={
                "state": RunState.RUNNING,
                "started_on": now,
                "last_modified_on": now,
                "supervisor_pid": pid,
                "details": details,
            },
        )
        return moved if moved is not None else run

    def _resolve_at_launch(self, run: Run) -> Run:
        """A scheduled run resolves its saved query, snapshot, profile and secrets now."""
        from reconciler.runs.prepare import plan_at_commit

        plan = plan_at_commit(self, run)
        secrets = resolve_secrets(run.job_id, plan.definition, self.environ)
        self._write_secrets(run.id, secrets)
        moved = self.runs.update(
            run.id,
            expect=RunState.STARTING,
            changes={"snapshots": plan.snapshots, "profile": plan.profile},
        )
        if moved is None:
            raise TargetError(f"run {run.id} changed state while it was being started")
        return moved

    def _record_only(self, run: Run, now: datetime) -> Run:
        """The record-only target: a run that succeeds without a process (benchmarks)."""
        details = {**run.details, "recordOnly": True}
        moved = self._move(
            run,
            RunState.SUCCEEDED,
            {
                "started_on": now,
                "completed_on": now,
                "last_modified_on": now,
                "execution_time": 0,
                "exit_code": 0,
                "details": details,
            },
        )
        return moved

    # -- watching -----------------------------------------------------------------

    def reconcile(self) -> None:
        """Bring every unfinished run on this host up to date, then fill free slots."""
        for run in self.runs.holding_slot():  # WAITING runs are the queue's (`pump`)
            if run.details.get("host") in (None, self.host):
                self.reconcile_run(run)
        self.pump()

    def reconcile_run(self, run: Run) -> Run:
        """Record what the supervision of `run` says happened; retry on failure."""
        from reconciler.targets.local.launcher import (
            kill_group,
            process_alive,
            read_status,
        )

        if not run.state.is_active:
            return run
        now = self.clock.now()
        run_dir = self.run_dir(run.id)
        status = read_status(run_dir)
        if status is None:
            supervisor_dead = run.supervisor_pid is not None and not process_alive(
                run.supervisor_pid, run.details.get("supervisorStart")
            )
            lost = run.supervisor_pid is None and now - run.last_modified_on > LAUNCH_GRACE
            if not (supervisor_dead or lost):
                return run
            # A supervisor writes its final status just before it exits: look again, or
            # a run that ended between the two looks would pass for a dead supervisor.
            status = read_status(run_dir)
            if status is None:
                return self._error(run, now, "the run's supervisor died before the job started")
        if status.phase == "exited":
            return self._finalize(run, status, now)
        if not process_alive(status.supervisor_pid, status.supervisor_start):
            final = read_status(run_dir)  # as above: it may have ended since the first look
            if final is not None and final.phase == "exited":
                return self._finalize(run, final, now)
            if status.pgid is not None:
                kill_group(status.pgid)
            return self._error(
                run,
                now,
                f"the run's supervisor (pid {status.supervisor_pid}) died; its process group "
                "was killed",
            )
        if run.state is RunState.STARTING:
            moved = self.runs.update(
                run.id,
                expect=RunState.STARTING,
                changes={"state": RunState.RUNNING, "last_modified_on": now},
            )
            return moved or run
        return run

    def _error(self, run: Run, now: datetime, message: str) -> Run:
        final = self._move(
            run,
            RunState.ERROR,
            {
                "completed_on": now,
                "last_modified_on": now,
                "error_message": message,
            },
        )
        self._maybe_retry(final, now)
        return final

    def _move(self, run: Run, to: RunState, changes: Mapping[str, Any]) -> Run:
        """Walk the legal path to `to`; the last step carries `changes`."""
        current = run
        steps = path_to(run.id, run.state, to)
        for i, step in enumerate(steps):
            extra = (
                changes
                if i == len(steps) - 1
                else {"last_modified_on": changes.get("last_modified_on", current.last_modified_on)}
            )
            moved = self.runs.update(run.id, expect=current.state, changes={**extra, "state": step})
            if moved is None:
                latest = self.runs.get(run.id)
                assert latest is not None
                return latest
            current = moved
        return current

    def _finalize(self, run: Run, status: Any, now: datetime) -> Run:
        # No outcome: the supervisor itself failed (its message says how).
        outcome = RunState(status.outcome) if status.outcome else RunState.ERROR
        if run.state is RunState.STOPPING:
            outcome = RunState.STOPPED
        ended = status.ended_at or now
        started = status.started_at or run.started_on or ended
        message = status.message
        if outcome is RunState.FAILED and message is None:
            if status.signal is not None:
                message = f"the job was killed by signal {status.signal}"
            else:
                message = f"the job exited with code {status.exit_code}"
        elif outcome is RunState.TIMEOUT and message is None:
            message = f"the job ran longer than its timeout ({run.timeout} s) and was stopped"
        details = dict(run.details)
        result = _read_json(self.run_dir(run.id) / "result.json")
        if result is not None:
            details["result"] = result
        changes: dict[str, Any] = {
            "completed_on": ended,
            "last_modified_on": now,
            "exit_code": status.exit_code,
            "execution_time": max(0, round((ended - started).total_seconds())),
            "error_message": message if outcome is not RunState.SUCCEEDED else None,
            "details": details,
        }
        if outcome is RunState.SUCCEEDED:
            self._commit_bookmark(run, now, details)
        final = self._move(run, outcome, changes)
        if final.state is outcome:
            self._maybe_retry(final, now)
        return final

    def _commit_bookmark(self, run: Run, now: datetime, details: dict[str, Any]) -> None:
        mode = run.details["definition"].get("bookmark", "disable")
        if mode != "enable" or run.draft_ref is not None:
            return
        value = _read_json(self.run_dir(run.id) / "bookmark.out")
        if value is None:
            return
        self.runs.commit_bookmark(run.job_id, value, run_id=run.id, at=now)
        details["bookmark"] = {"committed": value}

    def _maybe_retry(self, run: Run, now: datetime) -> Run | None:
        """ON_FAILURE: start attempt + 1 until maxAttempts or activeDeadlineSeconds."""
        restart = run.details["definition"].get("restart") or {}
        if restart.get("policy") != "ON_FAILURE":
            return None
        if run.state not in (RunState.FAILED, RunState.TIMEOUT, RunState.ERROR):
            return None
        max_attempts = restart.get("maxAttempts")
        if max_attempts is not None and run.attempt + 1 >= int(max_attempts):
            return None
        deadline = restart.get("activeDeadlineSeconds")
        first = run.details.get("firstStartedOn")
        past_deadline = (
            deadline is not None
            and first is not None
            and now - datetime.fromisoformat(first) >= timedelta(seconds=int(deadline))
        )
        if past_deadline:
            return None
        return self._restart(run, trigger="retry", now=now)

    def _restart(self, previous: Run, *, trigger: str, now: datetime) -> Run:
        from reconciler.runs.prepare import plan_from_run

        plan = plan_from_run(previous)
        secrets = resolve_secrets(previous.job_id, plan.definition, self.environ)
        run = self._new_run(
            plan,
            secrets,
            trigger=trigger,
            now=now,
            timeout=previous.timeout,
            attempt=previous.attempt + 1,
            previous=previous,
        )
        run = run.with_changes(arguments=dict(previous.arguments))
        self._write_secrets(run.id, secrets)
        for name in ("job.py", "sql.json"):
            source = self.run_dir(previous.id) / name
            if source.exists():
                shutil.copy2(source, self.run_dir(run.id) / name)
        self.runs.insert(run)
        self.pump()
        latest = self.runs.get(run.id)
        assert latest is not None
        return latest

    # -- user actions -------------------------------------------------------------

    def get(self, job_id: str, run_id: str) -> Run:
        run = self.runs.get(RunId(run_id))
        if run is None or run.job_id != job_id:
            raise UsageError(f"job {job_id!r} has no run {run_id!r}")
        return self.reconcile_run(run)

    def stop(self, job_id: str, run_ids: Collection[str]) -> StopResult:
        """Stop runs (BatchStopJobRun): per-id errors for unknown or finished runs."""
        from reconciler.targets.local.launcher import request_stop

        result = StopResult()
        now = self.clock.now()
        for run_id in run_ids:
            run = self.runs.get(RunId(run_id))
            if run is None or run.job_id != job_id:
                result.errors.append(
                    _stop_error(
                        job_id,
                        run_id,
                        "EntityNotFoundException",
                        f"job {job_id!r} has no run {run_id!r}",
                    )
                )
                continue
            run = self.reconcile_run(run)
            if run.state.is_terminal:
                result.errors.append(
                    _stop_error(
                        job_id,
                        run_id,
                        "InvalidInputException",
                        f"the run already finished ({run.state.value})",
                    )
                )
                continue
            if run.state is RunState.WAITING:
                self._finish_without_start(run, RunState.STOPPED, now, "stopped while waiting")
            elif run.state in (RunState.STARTING, RunState.RUNNING):
                self._move(run, RunState.STOPPING, {"last_modified_on": now})
                request_stop(self.run_dir(run.id))
            else:
                request_stop(self.run_dir(run.id))
            result.stopped.append(RunId(run_id))
        return result

    def retry(self, job_id: str, run_id: str) -> Run:
        """Start the same job, commit and arguments again as attempt + 1."""
        run = self.get(job_id, run_id)
        if not run.state.is_terminal:
            raise UsageError(f"run {run_id} is {run.state.value}; retry a finished run")
        return self._restart(run, trigger="retry", now=self.clock.now())

    def gc(self, retention_days: int) -> list[Run]:
        """Remove runs finished before the retention window, with their logs."""
        cutoff = self.clock.now() - timedelta(days=retention_days)
        deleted: list[Run] = self.runs.delete_finished_before(cutoff)
        for run in deleted:
            shutil.rmtree(self.run_dir(run.id), ignore_errors=True)
        return deleted

    def active_counts(self) -> Counter[str]:
        return Counter(r.state.value for r in self.runs.active())


@dataclass(slots=True)
class _Slots:
    """The slots that runs hold, counted once for a round of queue decisions."""

    host: str
    here: int = 0
    per_job: Counter[str] = field(default_factory=Counter)
    catalogs_here: set[str] = field(default_factory=set)

    @classmethod
    def held_by(cls, active: Sequence[Run], host: str) -> _Slots:
        slots = cls(host=host)
        for run in active:
            slots.add(run)
        return slots

    def add(self, run: Run) -> None:
        """Count `run` (ignored unless it holds a slot)."""
        if not run.state.is_active:
            return
        self.per_job[run.job_id] += 1
        if run.details.get("host") == self.host:
            self.here += 1
            catalog = run.details.get("catalogPath")
            if catalog is not None:
                self.catalogs_here.add(catalog)

    def block(self, run: Run) -> bool:
        """Whether `run` cannot start next to the counted runs: the host or its job is
        at maxConcurrentRuns, or its catalog is in use on this host."""
        if self.here >= int(run.details.get("hostSlots") or DEFAULT_HOST_SLOTS):
            return True
        if self.per_job[run.job_id] >= int(run.details["definition"].get("maxConcurrentRuns", 1)):
            return True
        return run.details.get("catalogPath") in self.catalogs_here


def _host_slots(settings: Mapping[str, Any]) -> int:
    targets = settings.get("targets") or {}
    local = targets.get("local") or {}
    return int(local.get("maxConcurrentRuns") or DEFAULT_HOST_SLOTS)


def _stop_error(job_id: str, run_id: str, code: str, message: str) -> dict[str, str]:
    return {"jobName": job_id, "jobRunId": run_id, "errorCode": code, "errorMessage": message}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


__all__ = ["ConcurrentRunsExceeded", "Runner", "StopResult"]
