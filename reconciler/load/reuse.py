"""Reusing what an earlier load found for files whose content did not change.

A job file whose blob, dependencies (reconciler.yaml and the reusable schedules it
uses) and input files are unchanged since a load that recorded its *facts* need not
be parsed again: its cross-file references are re-checked on the facts alone, and its
normalized definition and content hash are taken from them. Facts come from the store
(written by apply; no definition) or from the local parse cache (with the definition).

Invariants: facts are plain JSON; a job is reused only when every rule that could fail
for it is re-checked; anything doubtful is parsed. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.errors import SourceLocation
from reconciler.ids import JobId
from reconciler.load.diagnostic import Diagnostic, Severity
from reconciler.load.model import LoadedJob
from reconciler.load.normalize import content_hash, normalize_job
from reconciler.load.paths import RepoFile
from reconciler.spec.ids import query_path
from reconciler.spec.profile import ProfileSpec
from reconciler.spec.settings import RepoSettings
from reconciler.spec.teams import TeamsSpec

FACTS_VERSION = 2
"""2: facts record the resolved profile, so a reused job's shared files are known."""
SETTINGS_DEP = "reconciler.yaml"


@dataclass(frozen=True, slots=True, kw_only=True)
class KnownFile:
    """What an earlier load recorded for one file: its blob and its document (the
    validated document of a shared file, or the facts of a job file)."""

    blob: str
    document: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReusedJob:
    """A job not parsed this time: its identity and hashes from its facts."""

    id: JobId
    path: str
    content_hash: str
    input_blobs: Mapping[str, str]
    definition: Mapping[str, Any] | None
    facts: Mapping[str, Any]
    profile: str
    """The resolved profile name (as `LoadedJob.profile`)."""
    depends_on: tuple[str, ...]
    """The shared files it uses, as `LoadedJob.depends_on`."""


def dependency_blobs(files: Mapping[str, RepoFile], uses: list[str]) -> dict[str, str | None]:
    """The blobs a job's normalized definition depends on besides its own files."""
    deps: dict[str, str | None] = {}
    settings = files.get(SETTINGS_DEP)
    deps[SETTINGS_DEP] = settings.blob if settings is not None else None
    for use in uses:
        entry = files.get(f"schedules/{use}.yaml")
        deps[f"schedules/{use}.yaml"] = entry.blob if entry is not None else None
    return deps


def job_facts(
    job: LoadedJob,
    *,
    warnings: list[Diagnostic],
    files: Mapping[str, RepoFile],
    paths: list[str],
    queries: list[str],
    with_definition: bool,
) -> dict[str, Any]:
    """The facts of a valid, loaded job (see module docstring)."""
    spec = job.spec
    uses = [
        s.source[len("schedules/") : -len(".yaml")] for s in job.schedules if s.source != "inline"
    ]
    definition = normalize_job(job)
    facts: dict[str, Any] = {
        "factsVersion": FACTS_VERSION,
        "jobId": job.id,
        "contentHash": content_hash(definition),
        "inputs": sorted(job.version_inputs),
        "deps": dependency_blobs(files, uses),
        "teams": [t for t in [spec.team, *spec.shared_with] if t is not None],
        "profile": spec.profile,
        "resolvedProfile": job.profile,
        "queries": sorted(queries),
        "paths": sorted(paths),
        "warnings": [w.to_json() for w in warnings],
    }
    if with_definition:
        facts["definition"] = definition
    return facts


def reusable(
    path: str,
    known: KnownFile | None,
    files: Mapping[str, RepoFile],
) -> bool:
    """Whether `path` may skip parsing, judged on blobs alone (before shared files load)."""
    entry = files.get(path)
    if known is None or entry is None or known.blob != entry.blob:
        return False
    facts = known.document
    if facts.get("factsVersion") != FACTS_VERSION:
        return False
    deps = facts.get("deps", {})
    uses = [d[len("schedules/") : -len(".yaml")] for d in deps if d != SETTINGS_DEP]
    if dependency_blobs(files, uses) != deps:
        return False
    return all(p in files for p in [*facts.get("inputs", []), *facts.get("paths", [])])


def refs_still_hold(
    facts: Mapping[str, Any],
    *,
    teams: TeamsSpec | None,
    profiles: Mapping[str, ProfileSpec],
    queries: frozenset[str],
    settings: RepoSettings,
) -> bool:
    """Re-run the cross-file rules that can change without the job file changing."""
    for team in facts.get("teams", []):
        if teams is None or team not in teams.teams:
            return False
    profile = facts.get("profile")
    if profile is not None and profile not in profiles and profile != "default":
        return False
    del settings  # settings changes are caught by the reconciler.yaml dependency
    return all(q in queries for q in facts.get("queries", []))


def reuse_job(
    job_id: JobId, path: str, facts: Mapping[str, Any], files: Mapping[str, RepoFile]
) -> ReusedJob:
    profile = str(facts.get("resolvedProfile", "default"))
    shared = {f"profiles/{profile}.yaml", *(query_path(q) for q in facts.get("queries", []))}
    shared |= {d for d in facts.get("deps", {}) if d != SETTINGS_DEP}
    return ReusedJob(
        id=job_id,
        path=path,
        content_hash=str(facts["contentHash"]),
        input_blobs={p: files[p].blob for p in facts["inputs"]},
        definition=facts.get("definition"),
        facts=facts,
        profile=profile,
        depends_on=tuple(sorted(p for p in shared if p in files)),
    )


def warnings_of(facts: Mapping[str, Any]) -> list[Diagnostic]:
    out = []
    for w in facts.get("warnings", []):
        out.append(
            Diagnostic(
                severity=Severity(w["severity"]),
                location=SourceLocation(path=w["path"], line=w["line"], column=w["column"]),
                field=w["field"],
                message=w["message"],
                rule=w["rule"],
            )
        )
    return out
