"""The ownership rules of a jobs repo (DESIGN.md "teams.yaml", "Security rules"), as values.

Who may change a file between a base version (the target branch) and a head version,
judged on base's teams and owners, so a change cannot grant itself a right:

- `teams.yaml`, `reconciler.yaml`: org admins.
- a job's YAML: editing or deleting it needs membership of its owning team as of base
  (a job without `team` is owned by the org admins). Changing `team` hands the job
  over: the author must be in the old team, and from that commit on the new team owns
  it. A new job must name a team the author belongs to (org admins: any team, or none).
- a file a job names (`sql.file`, `python.file`, a `.whl` package, a same-repo
  `origin.path`, and the symlinks on the way to them): as the job YAML, for every job
  naming it in base or head (a job new in head: its team in head).
- a file in `profiles/`, `queries/` or `schedules/`, and a wheel a profile names: org
  admins, or a member of a team that owns every job using it as of base (a file no job
  uses: any team member).
- anything else (README, CI files, schemas): anyone.

Org admins may change everything; without teams.yaml at base every user is an org admin.
Who may trigger, stop and view runs: the owning team, the `sharedWith` teams and org
admins (everyone without teams.yaml).

Job files are read leniently (a version that does not validate still has owners): an
unreadable job YAML is owned by the org admins. Violations are sorted by path, then
rule. Pure: no I/O.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from reconciler.errors import PermissionDenied
from reconciler.ids import JobId
from reconciler.load.paths import RepoFile
from reconciler.load.yamldoc import parse_yaml
from reconciler.spec.ids import job_id_for_path, query_path
from reconciler.spec.teams import TeamsSpec

TEAMS_PATH = "teams.yaml"
SETTINGS_PATH = "reconciler.yaml"
ADMIN_FILES = (TEAMS_PATH, SETTINGS_PATH)
SHARED_PREFIXES = ("profiles/", "queries/", "schedules/")
_MAX_LINKS = 40


class Change(StrEnum):
    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"


class Rule(StrEnum):
    """The rule a change breaks (the `rule` of `check-ownership --output json`)."""

    ADMIN_FILE = "admin-file"
    JOB_OWNER = "job-owner"
    HANDOVER = "handover"
    NEW_JOB = "new-job"
    JOB_FILE = "job-file"
    SHARED_FILE = "shared-file"


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnedJob:
    """What ownership needs of one job file."""

    id: JobId
    path: str
    team: str | None
    shared_with: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    """Other repo files the job names (snapshots, wheel, origin), with symlinks on the way."""
    uses: tuple[str, ...] = ()
    """Shared files it uses: its profile, saved query and reusable schedules."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionOwnership:
    """The owners of one version of the jobs repo."""

    teams: TeamsSpec | None
    """None: there is no teams.yaml, so every user is an org admin."""
    jobs: Mapping[str, OwnedJob]
    """By job YAML path."""
    named_by: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """File -> the job paths naming it."""
    used_by: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Shared file -> the job paths using it (a profile's wheel: the profile's users)."""
    shared: tuple[str, ...] = ()
    """Every shared file of the version, sorted: under the shared folders, profile wheels."""

    def is_admin(self, user: str) -> bool:
        return self.teams is None or user in self.teams.admins

    def is_member(self, user: str, team: str | None) -> bool:
        if self.teams is None:
            return True
        found = self.teams.teams.get(team) if team is not None else None
        return found is not None and user in found.members

    def members(self, team: str | None) -> tuple[str, ...]:
        if self.teams is None or team is None or team not in self.teams.teams:
            return ()
        return tuple(sorted(set(self.teams.teams[team].members)))

    def admins(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.teams.admins))) if self.teams is not None else ()

    def writer_team(self, job_paths: Iterable[str]) -> tuple[bool, str | None]:
        """(True, T) when team T owns every one of these jobs (T None: no job at all);
        (False, None) when they have several owners or one owned by the admins."""
        owners = {self.jobs[p].team for p in job_paths if p in self.jobs}
        if not owners:
            return True, None
        if len(owners) == 1 and None not in owners:
            return True, next(iter(owners))
        return False, None


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One change the author may not make."""

    path: str
    change: Change
    rule: Rule
    reason: str
    teams: tuple[str, ...]
    """Teams whose members may make it (besides org admins)."""
    users: tuple[str, ...]
    """Everyone who may make it: those members and the org admins, sorted."""

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "change": self.change.value,
            "rule": self.rule.value,
            "reason": self.reason,
            "mayChange": {"teams": list(self.teams), "users": list(self.users)},
        }

    def who(self) -> str:
        """`team sales (alice, bob) or org admins (carol)`."""
        users = ", ".join(self.users) or "nobody"
        if not self.teams:
            return f"org admins ({users})"
        return f"team {', '.join(self.teams)} or org admins ({users})"


# -- reading a version ------------------------------------------------------------------


def needs_content(path: str, entry: RepoFile) -> bool:
    """Whether `read_ownership` needs this file's content (YAML it reads, symlink targets)."""
    if entry.is_symlink or path in ADMIN_FILES:
        return True
    return path.endswith(".yaml") and path.startswith(("jobs/", "profiles/"))


def read_ownership(
    files: Mapping[str, RepoFile], contents: Mapping[str, bytes]
) -> VersionOwnership:
    """The owners of one version: `files` is its listing, `contents` holds every file
    `needs_content` asks for. Raises PermissionDenied when teams.yaml is unreadable
    (nobody's rights can be judged then)."""
    teams = _read_teams(contents) if TEAMS_PATH in files else None
    settings = _mapping(SETTINGS_PATH, contents.get(SETTINGS_PATH, b""))
    default_profile = settings.get("defaultProfile")
    if not isinstance(default_profile, str):
        default_profile = "default"

    def link(path: str) -> str:
        return contents.get(path, b"").decode("utf-8", "replace")

    jobs: dict[str, OwnedJob] = {}
    for path in files:
        job_id = job_id_for_path(path)
        if job_id is not None:
            jobs[path] = _read_job(path, job_id, files, contents, link, default_profile)
    named_by: dict[str, list[str]] = {}
    used_by: dict[str, list[str]] = {}
    for job in jobs.values():
        for named in job.files:
            named_by.setdefault(named, []).append(job.path)
        for used in job.uses:
            used_by.setdefault(used, []).append(job.path)
    shared = {p for p in files if p.startswith(SHARED_PREFIXES)}
    for path in sorted(files):
        if path.startswith("profiles/") and path.endswith(".yaml"):
            for wheel in _profile_wheels(path, files, contents, link):
                used_by.setdefault(wheel, []).extend(used_by.get(path, []))
                shared.add(wheel)
    return VersionOwnership(
        teams=teams,
        jobs=jobs,
        named_by={k: tuple(sorted(set(v))) for k, v in named_by.items()},
        used_by={k: tuple(sorted(set(v))) for k, v in used_by.items()},
        shared=tuple(sorted(shared & set(files))),
    )


def _read_teams(contents: Mapping[str, bytes]) -> TeamsSpec:
    parsed = parse_yaml(TEAMS_PATH, contents.get(TEAMS_PATH, b""))
    if not parsed.ok:
        raise PermissionDenied(f"{TEAMS_PATH} cannot be read: {parsed.diagnostics[0].render()}")
    try:
        return TeamsSpec.model_validate(parsed.value or {})
    except ValidationError as exc:
        raise PermissionDenied(f"{TEAMS_PATH} is not valid: {exc.errors()[0]['msg']}") from None


def _mapping(path: str, data: bytes) -> dict[str, Any]:
    value = parse_yaml(path, data).value if data else None
    return value if isinstance(value, dict) else {}


def _read_job(
    path: str,
    job_id: JobId,
    files: Mapping[str, RepoFile],
    contents: Mapping[str, bytes],
    link: Callable[[str], str],
    default_profile: str,
) -> OwnedJob:
    doc = _mapping(path, contents.get(path, b""))
    team = doc.get("team")
    shared = doc.get("sharedWith")
    named: list[str] = []
    uses: list[str] = []
    sqls = [doc.get("sql"), _get(doc.get("streaming"), "sql")]
    for sql in (s for s in sqls if isinstance(s, dict)):
        named += _named(path, sql.get("file"), files, link)
        origin = sql.get("origin")
        if isinstance(origin, dict) and origin.get("repo") is None:
            named += _named("root-file", origin.get("path"), files, link)
        if isinstance(sql.get("query"), str):
            uses.append(query_path(sql["query"]))
    python = doc.get("python")
    if isinstance(python, dict):
        named += _named(path, python.get("file"), files, link)
        package = _get(python.get("wheel"), "package")
        if isinstance(package, str) and package.endswith(".whl"):
            named += _named(path, package, files, link)
    profile = doc.get("profile") if isinstance(doc.get("profile"), str) else default_profile
    uses.append(f"profiles/{profile}.yaml")
    schedules = doc.get("schedules")
    for entry in schedules if isinstance(schedules, list) else []:
        if isinstance(_get(entry, "use"), str):
            uses.append(f"schedules/{entry['use']}.yaml")
    return OwnedJob(
        id=job_id,
        path=path,
        team=team if isinstance(team, str) else None,
        shared_with=tuple(t for t in shared if isinstance(t, str))
        if isinstance(shared, list)
        else (),
        files=tuple(sorted(set(named) - {path})),
        uses=tuple(sorted({u for u in uses if u in files})),
    )


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def _profile_wheels(
    path: str, files: Mapping[str, RepoFile], contents: Mapping[str, bytes], link: Any
) -> list[str]:
    libraries = _mapping(path, contents.get(path, b"")).get("libraries")
    out: list[str] = []
    for library in libraries if isinstance(libraries, list) else []:
        wheel = _get(library, "wheel")
        if isinstance(wheel, str):
            out += _named(path, wheel, files, link)
    return out


def _named(
    base_file: str, ref: Any, files: Mapping[str, RepoFile], link: Callable[[str], str]
) -> list[str]:
    """The repo path `ref` names (relative to `base_file`) and every symlink on the way to
    the file it resolves to; nothing for a path escaping the repo."""
    if not isinstance(ref, str) or not ref or ref.startswith("/"):
        return []
    path = posixpath.normpath(posixpath.join(posixpath.dirname(base_file), ref))
    out: list[str] = []
    for _ in range(_MAX_LINKS):
        if path == ".." or path.startswith("../"):
            return out
        out.append(path)
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            entry = files.get(prefix)
            if entry is not None and entry.is_symlink:
                out.append(prefix)
                target = link(prefix)
                if target.startswith("/"):
                    return out
                joined = posixpath.join(posixpath.dirname(prefix), target, *parts[i:])
                path = posixpath.normpath(joined)
                break
        else:
            return out
    return out


# -- judging a change ------------------------------------------------------------------


def diff_listings(base: Mapping[str, RepoFile], head: Mapping[str, RepoFile]) -> dict[str, Change]:
    """Every path whose blob differs between two listings, with how it changed."""
    out: dict[str, Change] = {}
    for path in sorted(set(base) | set(head)):
        old, new = base.get(path), head.get(path)
        if old is None:
            out[path] = Change.ADDED
        elif new is None:
            out[path] = Change.DELETED
        elif old.blob != new.blob or old.is_symlink != new.is_symlink:
            out[path] = Change.MODIFIED
    return out


def check_changes(
    changes: Mapping[str, Change],
    *,
    base: VersionOwnership,
    head: VersionOwnership,
    author: str,
) -> tuple[Violation, ...]:
    """Every change `author` may not make, sorted by path then rule (empty: allowed)."""
    if base.is_admin(author):
        return ()
    out: list[Violation] = []
    for path, change in changes.items():
        out += _check_path(path, change, base, head, author)
    out.sort(key=lambda v: (v.path, v.rule.value))
    return tuple(out)


def _check_path(
    path: str, change: Change, base: VersionOwnership, head: VersionOwnership, author: str
) -> list[Violation]:
    out: list[Violation] = []
    if path in ADMIN_FILES:
        out.append(
            _violation(
                base, path, change, Rule.ADMIN_FILE, f"only org admins may change {path}", None
            )
        )
    if job_id_for_path(path) is not None:
        out += _check_job(path, change, base, head, author)
    namers = sorted(set(base.named_by.get(path, ())) | set(head.named_by.get(path, ())))
    if namers:
        out += _check_job_file(path, change, namers, base, head, author)
    if path.startswith(SHARED_PREFIXES) or path in base.shared or path in head.shared:
        out += _check_shared(path, change, base, author)
    return out


def _check_job(
    path: str, change: Change, base: VersionOwnership, head: VersionOwnership, author: str
) -> list[Violation]:
    old, new = base.jobs.get(path), head.jobs.get(path)
    if old is None:
        team = new.team if new is not None else None
        job_id = job_id_for_path(path)
        if team is None:
            reason = f"new job {job_id} names no team: only org admins may add a job without one"
            return [_violation(base, path, change, Rule.NEW_JOB, reason, None)]
        if base.is_member(author, team):
            return []
        reason = (
            f"new job {job_id} names team {team!r}, which {author} is not a member of "
            "(as of base); a new job must name a team of its author"
        )
        return [_violation(base, path, change, Rule.NEW_JOB, reason, team)]
    if base.is_member(author, old.team) and old.team is not None:
        return []
    owner = f"team {old.team!r}" if old.team is not None else "the org admins (it names no team)"
    if new is not None and new.team != old.team:
        reason = (
            f"changing the team of job {old.id} from {old.team!r} to {new.team!r} hands it "
            f"over: that needs membership of the old owner, {owner} (as of base)"
        )
        return [_violation(base, path, change, Rule.HANDOVER, reason, old.team)]
    verb = "deleting" if change is Change.DELETED else "editing"
    reason = f"{verb} job {old.id} needs membership of its owner, {owner} (as of base)"
    return [_violation(base, path, change, Rule.JOB_OWNER, reason, old.team)]


def _check_job_file(
    path: str,
    change: Change,
    namers: list[str],
    base: VersionOwnership,
    head: VersionOwnership,
    author: str,
) -> list[Violation]:
    owners: dict[str, str | None] = {}
    for job_path in namers:
        job = base.jobs.get(job_path) or head.jobs[job_path]
        owners[job.id] = job.team
    if all(t is not None and base.is_member(author, t) for t in owners.values()):
        return []
    teams = set(owners.values())
    team = next(iter(teams)) if len(teams) == 1 else None
    listed = ", ".join(f"{j} (team {t!r})" if t else f"{j} (org admins)" for j, t in owners.items())
    reason = f"{path} belongs to the job(s) naming it: {listed}; changing it needs their owners"
    violation = _violation(base, path, change, Rule.JOB_FILE, reason, team)
    if team is None and len(teams) > 1 and None not in teams:
        common = set.intersection(*(set(base.members(t)) for t in teams if t is not None))
        violation = Violation(
            path=path,
            change=change,
            rule=Rule.JOB_FILE,
            reason=reason,
            teams=(),
            users=tuple(sorted(common | set(base.admins()))),
        )
    return [violation]


def _check_shared(
    path: str, change: Change, base: VersionOwnership, author: str
) -> list[Violation]:
    users = base.used_by.get(path, ())
    single, team = base.writer_team(users)
    if not single:
        teams = sorted({str(base.jobs[p].team) for p in users if base.jobs[p].team is not None})
        owned = ", ".join(repr(t) for t in teams) or "none"
        reason = (
            f"{path} is used by {len(users)} job(s) of several owners (teams {owned}"
            f"{', org admins' if any(base.jobs[p].team is None for p in users) else ''}; "
            "as of base): only org admins may change it"
        )
        return [_violation(base, path, change, Rule.SHARED_FILE, reason, None)]
    if team is None:
        if base.teams is not None and any(author in t.members for t in base.teams.teams.values()):
            return []
        reason = f"{path} is used by no job (as of base): a member of any team may change it"
        return [_violation(base, path, change, Rule.SHARED_FILE, reason, None, any_team=True)]
    if base.is_member(author, team):
        return []
    reason = (
        f"{path} is used by {len(users)} job(s), all owned by team {team!r} (as of base): "
        "only that team or org admins may change it"
    )
    return [_violation(base, path, change, Rule.SHARED_FILE, reason, team)]


def _violation(
    base: VersionOwnership,
    path: str,
    change: Change,
    rule: Rule,
    reason: str,
    team: str | None,
    *,
    any_team: bool = False,
) -> Violation:
    users = set(base.admins()) | set(base.members(team))
    teams: tuple[str, ...] = (team,) if team is not None else ()
    if any_team and base.teams is not None:
        teams = tuple(sorted(base.teams.teams))
        users |= {m for t in teams for m in base.members(t)}
    return Violation(
        path=path, change=change, rule=rule, reason=reason, teams=teams, users=tuple(sorted(users))
    )


# -- runs --------------------------------------------------------------------------------


def may_operate_runs(
    user: str, *, team: str | None, shared_with: Collection[str], teams: TeamsSpec | None
) -> bool:
    """Whether `user` may trigger, stop, retry and view runs of a job owned by `team` and
    shared with `shared_with` (org admins always; everyone without teams.yaml)."""
    if teams is None or user in teams.admins:
        return True
    for name in [team, *shared_with]:
        found = teams.teams.get(name) if name is not None else None
        if found is not None and user in found.members:
            return True
    return False


def run_refusal(
    user: str, job_id: str, *, team: str | None, shared_with: Collection[str], what: str
) -> str:
    """The message refusing `user` to `what` (`run`, `stop runs of`...) job `job_id`."""
    owner = f"team {team!r}" if team else "the org admins (the job names no team)"
    shared = f", shared with {', '.join(repr(t) for t in shared_with)}" if shared_with else ""
    return (
        f"{user} may not {what} job {job_id}: it is owned by {owner}{shared}; only members "
        "of those teams and org admins may trigger, stop and view its runs "
        "(act as another user with --as or RECONCILER_USER)"
    )
