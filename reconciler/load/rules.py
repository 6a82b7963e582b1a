"""Cross-file rules: references from jobs and profiles to the rest of the repo, limits
from reconciler.yaml, and secrets written in plain sight.

Pure: works on loaded specs and the file listing of one version.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.load.context import FileContext
from reconciler.load.modelerrors import Loc, suggest
from reconciler.load.paths import RepoFile, resolve_repo_path
from reconciler.spec.ids import query_path
from reconciler.spec.job import CommandSpec, JobSpec, SqlSource
from reconciler.spec.profile import ExecutionMode, ProfileSpec, WheelLibrary
from reconciler.spec.schedule import ReusableScheduleSpec
from reconciler.spec.settings import RepoSettings
from reconciler.spec.teams import TeamsSpec

SECRET_KEY = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)
AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
PEM_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]+-----")
JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")

LinkTarget = Callable[[str], str]


@dataclass(slots=True)
class JobRefs:
    """What a job's references resolved to."""

    profile: str = "default"
    catalog: str | None = None
    snapshots: list[str] = field(default_factory=list)
    shared: set[str] = field(default_factory=set)
    queries: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    """Other repo paths the job names that must keep existing (wheel, origin)."""


def check_secrets_in_plain_sight(ctx: FileContext, value: Mapping[str, Any]) -> None:
    """Warn about arguments and env entries that look like secrets (as Glue does)."""
    places: list[tuple[Loc, Any]] = [(("arguments",), value.get("arguments"))]
    command = value.get("command")
    if isinstance(command, dict):
        places.append((("command", "env"), command.get("env")))
    streaming = value.get("streaming")
    if isinstance(streaming, dict) and isinstance(streaming.get("command"), dict):
        places.append((("streaming", "command", "env"), streaming["command"].get("env")))
    for loc, mapping in places:
        if not isinstance(mapping, dict):
            continue
        for key, item in mapping.items():
            _check_secret_entry(ctx, (*loc, str(key)), str(key), item)


def _check_secret_entry(ctx: FileContext, loc: Loc, key: str, item: Any) -> None:
    advice = "use `secrets:` with fromEnv or fromFile instead; values in git are not secret"
    if SECRET_KEY.search(key):
        ctx.warn(
            loc,
            f"{key!r} looks like a secret name; {advice}",
            "secret-in-plain-sight",
            anchor="key",
        )
        return
    if not isinstance(item, str):
        return
    what = None
    if AWS_KEY_ID.search(item):
        what = "an AWS access key id"
    elif PEM_BLOCK.search(item):
        what = "a PEM block"
    elif JWT.search(item):
        what = "a JSON Web Token"
    if what:
        ctx.warn(loc, f"the value looks like {what}; {advice}", "secret-in-plain-sight")


def check_job_refs(
    ctx: FileContext,
    spec: JobSpec,
    *,
    settings: RepoSettings,
    teams: TeamsSpec | None,
    profiles: Mapping[str, ProfileSpec],
    schedules: Mapping[str, ReusableScheduleSpec],
    queries: frozenset[str],
    files: Mapping[str, RepoFile],
    link_target: LinkTarget,
) -> JobRefs:
    """Check every reference of a job; report problems on `ctx`; return what resolved."""
    del schedules  # checked while resolving schedules
    refs = JobRefs()
    _check_teams(ctx, spec, teams)
    refs.profile = _check_profile_ref(ctx, spec, settings, profiles)
    if refs.profile in profiles:
        refs.shared.add(f"profiles/{refs.profile}.yaml")
    if spec.sql is not None:
        refs.catalog = _check_sql(
            ctx, ("sql",), spec.sql, settings, queries, files, link_target, refs
        )
    if spec.python is not None:
        if spec.python.file is not None:
            path = _check_path(ctx, ("python", "file"), spec.python.file, files, link_target)
            if path:
                refs.snapshots.append(path)
        elif spec.python.wheel is not None and spec.python.wheel.package.endswith(".whl"):
            wheel = _check_path(
                ctx, ("python", "wheel", "package"), spec.python.wheel.package, files, link_target
            )
            if wheel:
                refs.paths.append(wheel)
    if spec.streaming is not None and spec.streaming.sql is not None:
        refs.catalog = _check_sql(
            ctx,
            ("streaming", "sql"),
            spec.streaming.sql,
            settings,
            queries,
            files,
            link_target,
            refs,
        )
    for loc, command in (
        (("command",), spec.command),
        (("streaming", "command"), spec.streaming and spec.streaming.command),
    ):
        if isinstance(command, CommandSpec):
            _check_command(ctx, loc, command)
    limit = settings.limits.max_timeout_seconds
    if spec.timeout_seconds is not None and spec.timeout_seconds > limit:
        ctx.report(
            ("timeoutSeconds",),
            f"{spec.timeout_seconds} exceeds the limit of {limit} "
            "seconds (reconciler.yaml limits.maxTimeoutSeconds)",
            "limit",
        )
    return refs


def _check_command(ctx: FileContext, loc: Loc, command: CommandSpec) -> None:
    if command.cmd is not None and not command.cmd.strip():
        ctx.report((*loc, "cmd"), "cmd is empty; give a shell command", "invalid-value")


def _check_teams(ctx: FileContext, spec: JobSpec, teams: TeamsSpec | None) -> None:
    named: list[tuple[Loc, str]] = []
    if spec.team is not None:
        named.append((("team",), spec.team))
    named += [(("sharedWith", i), t) for i, t in enumerate(spec.shared_with)]
    for loc, team in named:
        if teams is None:
            ctx.report(
                loc,
                f"team {team!r} is not defined: there is no teams.yaml "
                "(create it with the team and its members)",
                "missing-team",
            )
        elif team not in teams.teams:
            ctx.report(
                loc,
                f"team {team!r} is not defined in teams.yaml; {suggest(team, sorted(teams.teams))}",
                "missing-team",
            )


def _check_profile_ref(
    ctx: FileContext, spec: JobSpec, settings: RepoSettings, profiles: Mapping[str, ProfileSpec]
) -> str:
    name = spec.profile or settings.default_profile
    if name in profiles or (name == "default" and "default" not in profiles):
        return name
    if spec.profile is not None:
        ctx.report(
            ("profile",),
            f"profile {name!r} does not exist: there is no "
            f"profiles/{name}.yaml; {suggest(name, sorted({*profiles, 'default'}))}",
            "missing-profile",
        )
    return name


def _check_sql(
    ctx: FileContext,
    loc: Loc,
    sql: SqlSource,
    settings: RepoSettings,
    queries: frozenset[str],
    files: Mapping[str, RepoFile],
    link_target: LinkTarget,
    refs: JobRefs,
) -> str:
    if sql.query is not None:
        refs.queries.append(sql.query)
        if sql.query in queries:
            refs.shared.add(query_path(sql.query))
        else:
            ctx.report(
                (*loc, "query"),
                f"saved query {sql.query!r} does not exist: there is no "
                f"{query_path(sql.query)}; {suggest(sql.query, sorted(queries))}",
                "missing-query",
            )
    if sql.file is not None:
        path = _check_path(ctx, (*loc, "file"), sql.file, files, link_target)
        if path:
            refs.snapshots.append(path)
    if sql.origin is not None and sql.origin.repo is None:
        origin = _check_path(
            ctx,
            (*loc, "origin", "path"),
            sql.origin.path,
            files,
            link_target,
            relative_to_root=True,
        )
        if origin:
            refs.paths.append(origin)
    catalog = sql.catalog or settings.default_catalog()
    if catalog not in settings.catalog_names():
        where = "reconciler.yaml catalogs" if settings.catalogs else "the built-in catalogs"
        ctx.report(
            (*loc, "catalog"),
            f"catalog {catalog!r} is not declared in {where}; "
            f"{suggest(catalog, settings.catalog_names())}",
            "missing-catalog",
        )
    return catalog


def _check_path(
    ctx: FileContext,
    loc: Loc,
    ref: str,
    files: Mapping[str, RepoFile],
    link_target: LinkTarget,
    *,
    relative_to_root: bool = False,
) -> str | None:
    base = "root-file" if relative_to_root else ctx.path
    resolved = resolve_repo_path(base, ref, files, link_target)
    if resolved.problem is not None:
        ctx.report(loc, resolved.problem, resolved.rule)
    return resolved.path


def check_profile(
    ctx: FileContext,
    spec: ProfileSpec,
    settings: RepoSettings,
    files: Mapping[str, RepoFile],
    link_target: LinkTarget,
) -> None:
    """Instance types against the catalog, worker limits, library wheels."""
    known = settings.instance_type_names()
    parts: list[tuple[Loc, str | None]] = [(("driver", "instanceType"), spec.driver.instance_type)]
    if spec.worker is not None:
        parts.append((("worker", "instanceType"), spec.worker.instance_type))
        if spec.mode is ExecutionMode.STANDALONE:
            ctx.report(
                ("worker",),
                "worker is for mode: cluster only; remove it or set mode: cluster",
                "invalid-value",
                anchor="key",
            )
        if spec.worker.max_nodes > settings.limits.max_workers:
            ctx.report(
                ("worker", "maxNodes"),
                f"{spec.worker.max_nodes} exceeds the limit of "
                f"{settings.limits.max_workers} (reconciler.yaml limits.maxWorkers)",
                "limit",
            )
    for loc, instance_type in parts:
        if instance_type is not None and instance_type not in known:
            ctx.report(
                loc,
                f"unknown instance type {instance_type!r}; {suggest(instance_type, known)}",
                "limit",
            )
    for i, lib in enumerate(spec.libraries):
        if isinstance(lib, WheelLibrary):
            _check_path(ctx, ("libraries", i, "wheel"), lib.wheel, files, link_target)
