"""What `reconciler status` shows: the loop's state as recorded in the store.

Edge: reads the store only.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from reconciler.schedule import next_fire_times
from reconciler.store import Store
from reconciler.store.leases import LeaseStore
from reconciler.store.loopstate import LoopStateStore
from reconciler.store.runs import RunStore

NEXT_FIRES = 10


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def read_status(store: Store, *, now: datetime) -> dict[str, Any]:
    """The documented JSON shape of `status`."""
    lease = LeaseStore(store).read("leader")
    values = LoopStateStore(store).get_all()
    runs = RunStore(store).active()
    counts = Counter(r.state.value for r in runs)
    upcoming: list[tuple[datetime, str, str]] = []
    for job_id, job in store.read_jobs().items():
        definition = job.definition
        if definition.get("suspended"):
            continue
        for s in definition.get("schedules", []):
            if not s.get("enabled", True):
                continue
            for at in next_fire_times(s["cron"], s["timezone"], now, NEXT_FIRES):
                upcoming.append((at, job_id, s["id"]))
    upcoming.sort()
    leader = None
    if lease is not None and lease.expires_at > now:
        leader = {
            "replica": lease.holder,
            "pid": lease.pid,
            "token": lease.token,
            "leaseExpiresAt": _iso(lease.expires_at),
        }
    state = store.read_state()
    return {
        "leader": leader,
        "lastLease": None
        if lease is None
        else {
            "replica": lease.holder,
            "leaseExpiresAt": _iso(lease.expires_at),
        },
        "appliedCommit": state.commit,
        "stateSerial": state.serial,
        "lastSyncedCommit": values.get("lastSyncedCommit"),
        "lastSyncedAt": values.get("lastSyncedAt"),
        "lastSyncError": values.get("lastSyncError"),
        "drift": values.get("drift"),
        "nextFires": [
            {"at": _iso(at), "jobId": job_id, "scheduleId": sid}
            for at, job_id, sid in upcoming[:NEXT_FIRES]
        ],
        "runs": {
            "running": counts.get("RUNNING", 0)
            + counts.get("STARTING", 0)
            + counts.get("STOPPING", 0),
            "waiting": counts.get("WAITING", 0),
            "active": [{"id": r.id, "jobId": r.job_id, "state": r.state.value} for r in runs],
        },
        "queueDepth": counts.get("WAITING", 0),
    }
