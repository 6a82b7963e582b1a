"""What a new run runs: the job's definition (live or a draft's), its arguments, its
secrets, and the saved query, snapshot and profile resolved at dispatch, with hashes.

Edge: reads the store (live definitions) and git (drafts, query and file contents).
Secret values are returned separately and never stored in the run record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reconciler.errors import TargetError, UsageError
from reconciler.ids import CommitSha, JobId
from reconciler.spec.ids import query_path
from reconciler.spec.settings import DEFAULT_CATALOG, DEFAULT_CATALOG_PATH, RepoSettings

CONTAINER_FIELDS = ("image", "forcePull", "privileged", "parameters", "artifacts")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """Everything needed to record and later launch a run (secrets excluded)."""

    job_id: JobId
    commit: CommitSha
    version: CommitSha | None
    draft_ref: str | None
    definition: Mapping[str, Any]
    arguments: dict[str, str]
    settings: Mapping[str, Any]
    profile: dict[str, Any]
    snapshots: dict[str, Any]
    catalog_path: str | None


def sha256_text(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def parse_arguments(pairs: tuple[str, ...]) -> dict[str, str]:
    """`--arg K=V` values as a mapping; UsageError naming a malformed one."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--arg {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def check_local_target(job_id: str, definition: Mapping[str, Any], *, is_root: bool) -> None:
    """Refuse what the local target cannot do, naming the field (TargetError)."""
    if "streaming" in definition:
        raise TargetError(
            f"{job_id}: streaming jobs cannot be run yet: their lifecycle (desired state "
            "running/suspended, reconciled by serve) is not built; run it as a command job"
        )
    command = definition.get("command") or {}
    for name in CONTAINER_FIELDS:
        if command.get(name) not in (None, False, [], {}):
            raise TargetError(
                f"{job_id}: command.{name} is not supported by the local target (no container "
                "runtime here); remove it, or run the job on the Kubernetes target"
            )
    if command.get("user") and not is_root:
        raise TargetError(
            f"{job_id}: command.user ({command['user']!r}) needs reconciler to run as root "
            "to switch users; remove it or run reconciler as root"
        )


def resolve_secrets(
    job_id: str, definition: Mapping[str, Any], environ: Mapping[str, str]
) -> dict[str, str]:
    """Secret env vars for the run: fromEnv from `environ`, fromFile from the host."""
    out: dict[str, str] = {}
    for name, ref in (definition.get("secrets") or {}).items():
        if "fromEnv" in ref:
            var = ref["fromEnv"]
            if var not in environ:
                raise TargetError(
                    f"{job_id}: secrets.{name}.fromEnv: environment variable {var} is not set "
                    "in the reconciler process"
                )
            out[name] = environ[var]
        else:
            path = Path(ref["fromFile"])
            try:
                out[name] = path.read_text(encoding="utf-8").rstrip("\n")
            except OSError as exc:
                raise TargetError(
                    f"{job_id}: secrets.{name}.fromFile: cannot read {path}: {exc.strerror}"
                ) from None
    return out


def merge_arguments(definition: Mapping[str, Any], given: Mapping[str, str]) -> dict[str, str]:
    """Job defaults replaced key by key by the run's arguments."""
    return {**dict(definition.get("arguments") or {}), **dict(given)}


def catalog_path(settings: RepoSettings, name: str | None, state_dir: Path) -> str:
    """The DuckDB file of a catalog: absolute, or relative to `.reconciler/`."""
    catalog = name or settings.default_catalog()
    if not settings.catalogs and catalog == DEFAULT_CATALOG:
        return str(state_dir / DEFAULT_CATALOG_PATH)
    declared = settings.catalogs[catalog]
    path = Path(declared.path)
    return str(path if path.is_absolute() else state_dir / path)


def resolve_profile(name: str, blobs: Mapping[str, bytes]) -> dict[str, Any]:
    """The profile document of a commit whose files are `blobs` (the built-in default
    when there is no file)."""
    path = f"profiles/{name}.yaml"
    data = blobs.get(path)
    if data is None:
        return {"name": name, "builtin": True, "document": {}, "sha256": sha256_text(b"")}
    document = yaml.safe_load(data.decode("utf-8")) or {}
    return {"name": name, "path": path, "document": document, "sha256": sha256_text(data)}


def resolve_sql(
    definition: Mapping[str, Any], job_path: str, blobs: Mapping[str, bytes]
) -> dict[str, Any]:
    """The SQL text a run executes: the saved query, or the snapshot file next to the job."""
    import posixpath

    sql = definition.get("sql") or {}
    if sql.get("query"):
        path = query_path(sql["query"])
        source = {"query": sql["query"], "path": path}
    else:
        path = posixpath.normpath(posixpath.join(posixpath.dirname(job_path), sql["file"]))
        source = {"file": path}
    data = blobs.get(path)
    if data is None:
        raise TargetError(f"{path} does not exist at this commit; the run cannot resolve its SQL")
    text = data.decode("utf-8")
    return {**source, "text": text, "sha256": sha256_text(data)}


def job_path_for(job_id: str) -> str:
    return "jobs/" + job_id.replace(".", "/") + ".yaml"
