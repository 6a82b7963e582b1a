"""Id rules of the jobs repo: job ids come from paths, schedule ids follow Metronome.

Pure: no I/O.
"""

from __future__ import annotations

import re

from reconciler.ids import JobId

JOB_SEGMENT = re.compile(r"[a-z0-9][a-z0-9_-]*")
SCHEDULE_ID = re.compile(r"[a-z0-9][a-z0-9-]*[a-z0-9]")
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
"""Names of teams, profiles and catalogs."""

JOB_SEGMENT_RULE = "lowercase letters, digits, '_' and '-', starting with a letter or digit"
SCHEDULE_ID_RULE = (
    "at least 2 characters of lowercase letters, digits and '-', not starting or ending with '-'"
)


def is_schedule_id(value: str) -> bool:
    return SCHEDULE_ID.fullmatch(value) is not None


def is_job_segment(value: str) -> bool:
    return JOB_SEGMENT.fullmatch(value) is not None


def job_id_for_path(path: str) -> JobId | None:
    """The job id of `jobs/a/b.yaml` (`a.b`), or None when the path is not a job file."""
    if not path.startswith("jobs/") or not path.endswith(".yaml"):
        return None
    return JobId(path[len("jobs/") : -len(".yaml")].replace("/", "."))


def query_path(query_id: str) -> str:
    """The file of saved query `sales.rollup`: `queries/sales/rollup.sql`."""
    return "queries/" + query_id.replace(".", "/") + ".sql"


def query_id_for_path(path: str) -> str | None:
    if not path.startswith("queries/") or not path.endswith(".sql"):
        return None
    return path[len("queries/") : -len(".sql")].replace("/", ".")
