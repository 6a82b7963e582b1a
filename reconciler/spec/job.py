"""A job file `jobs/**/<name>.yaml`: exactly one of sql, python, command, streaming.

Pure: no I/O. The job id comes from the path, never from the file. Which files,
queries, profiles, catalogs and teams exist is checked by `reconciler.load`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from reconciler.spec.base import ScalarStr, SpecModel
from reconciler.spec.schedule import ScheduleEntry

JOB_KINDS = ("sql", "python", "command", "streaming")
PARTIAL = "partial"
"""Validation context key: check what is there, without requiring a kind (the loader
uses it to run cross-file rules on the valid part of a job that has errors)."""


def _exactly_one(model: SpecModel, names: tuple[str, ...], what: str) -> None:
    present = [n for n in names if getattr(model, n) is not None]
    if len(present) != 1:
        found = "none" if not present else " and ".join(present)
        raise PydanticCustomError(
            "exactly_one",
            "{what} needs exactly one of {names}; found {found}",
            {"what": what, "names": ", ".join(names), "found": found, "keys": present},
        )


class Origin(SpecModel):
    """Where a snapshot came from: a path in this repo, or repo URL + ref + path (read only)."""

    path: str
    repo: str | None = Field(default=None, description="git URL of another repo")
    ref: str | None = Field(default=None, description="branch, tag or commit in `repo`")


class SqlSource(SpecModel):
    """A SQL job: a saved query (resolved at dispatch) or a snapshot file next to the job."""

    query: str | None = Field(default=None, description="saved query id: queries/<id>.sql")
    file: str | None = Field(default=None, description="snapshot SQL file, relative to the job")
    origin: Origin | None = Field(default=None, description="origin of the snapshot, for drift")
    catalog: str | None = Field(default=None, description="catalog from reconciler.yaml")

    @model_validator(mode="after")
    def _one_source(self) -> SqlSource:
        _exactly_one(self, ("query", "file"), "sql")
        if self.origin is not None and self.file is None:
            raise PydanticCustomError(
                "origin_without_file",
                "origin describes a snapshot: it needs `file` (a saved query has no origin)",
                {"keys": ["origin"]},
            )
        return self


class Wheel(SpecModel):
    package: str = Field(description="a requirement (mypkg==1.2) or a repo path to a .whl file")
    entry_point: str = Field(description="module:function to call, e.g. mypkg.main:run")


class PythonSource(SpecModel):
    file: str | None = Field(default=None, description="Python file, relative to the job")
    wheel: Wheel | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PythonSource:
        _exactly_one(self, ("file", "wheel"), "python")
        return self


class Parameter(SpecModel):
    key: str
    value: ScalarStr


class Artifact(SpecModel):
    uri: str
    extract: bool = True
    executable: bool = False
    cache: bool = False


class CommandSpec(SpecModel):
    """A command, as a Metronome job's `run`: `cmd` (a shell string) xor `args` (argv)."""

    cmd: str | None = Field(default=None, description="run by /bin/sh -c; arguments in $@")
    args: list[str] | None = Field(default=None, min_length=1, description="argv, no shell")
    env: dict[str, ScalarStr] = Field(default_factory=dict)
    user: str | None = None
    cpus: float | None = Field(default=None, gt=0)
    mem: int | None = Field(default=None, ge=0, description="MB")
    disk: int | None = Field(default=None, ge=0, description="MB")
    gpus: int | None = Field(default=None, ge=0)
    image: str | None = None
    force_pull: bool | None = None
    privileged: bool | None = None
    parameters: list[Parameter] | None = None
    artifacts: list[Artifact] | None = None

    @model_validator(mode="after")
    def _cmd_xor_args(self) -> CommandSpec:
        _exactly_one(self, ("cmd", "args"), "command")
        return self


class DesiredState(StrEnum):
    RUNNING = "running"
    SUSPENDED = "suspended"


class StreamingSpec(SpecModel):
    """A long-running job whose desired state the loop reconciles."""

    command: CommandSpec | None = None
    sql: SqlSource | None = None
    desired_state: DesiredState = DesiredState.RUNNING

    @model_validator(mode="after")
    def _one_source(self) -> StreamingSpec:
        _exactly_one(self, ("command", "sql"), "streaming")
        return self


class SecretFromEnv(SpecModel):
    from_env: str = Field(description="environment variable of the reconciler process")


class SecretFromFile(SpecModel):
    from_file: str = Field(description="host path of a file holding the value")


def _secret_kind(value: object) -> str | None:
    if isinstance(value, dict):
        if "fromEnv" in value or "from_env" in value:
            return "env"
        if "fromFile" in value or "from_file" in value:
            return "file"
        return None
    if isinstance(value, SecretFromEnv):
        return "env"
    if isinstance(value, SecretFromFile):
        return "file"
    return None


SecretRef = Annotated[
    Annotated[SecretFromEnv, Tag("env")] | Annotated[SecretFromFile, Tag("file")],
    Discriminator(
        _secret_kind,
        custom_error_type="secret_ref",
        custom_error_message="a secret is {fromEnv: VAR} or {fromFile: /host/path}",
    ),
]


class RestartPolicyName(StrEnum):
    NEVER = "NEVER"
    ON_FAILURE = "ON_FAILURE"


class RestartPolicy(SpecModel):
    policy: RestartPolicyName = RestartPolicyName.NEVER
    max_attempts: int | None = Field(default=None, ge=1)
    active_deadline_seconds: int | None = Field(default=None, ge=1)


class BookmarkMode(StrEnum):
    ENABLE = "enable"
    DISABLE = "disable"
    PAUSE = "pause"


class JobSpec(SpecModel):
    """What a job file says. Its id is its path under jobs/ (no `id:` field)."""

    description: str | None = None
    team: str | None = Field(default=None, description="owning team (default: org admins)")
    shared_with: list[str] = Field(default_factory=list)
    suspended: bool = False
    sql: SqlSource | None = None
    python: PythonSource | None = None
    command: CommandSpec | None = None
    streaming: StreamingSpec | None = None
    profile: str | None = Field(default=None, description="compute profile (default: default)")
    arguments: dict[str, ScalarStr] = Field(default_factory=dict)
    secrets: dict[str, SecretRef] = Field(default_factory=dict)
    timeout_seconds: int | None = Field(default=None, ge=1)
    task_kill_grace_period_seconds: int = Field(default=30, ge=0)
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    max_concurrent_runs: int = Field(default=1, ge=1)
    queue_timeout_seconds: int = Field(default=3600, ge=0)
    bookmark: BookmarkMode = BookmarkMode.DISABLE
    labels: dict[str, ScalarStr] = Field(default_factory=dict)
    schedules: list[ScheduleEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_kind(self, info: ValidationInfo) -> JobSpec:
        if not (info.context or {}).get(PARTIAL):
            _exactly_one(self, JOB_KINDS, "a job")
        return self

    @property
    def kind(self) -> Literal["sql", "python", "command", "streaming"]:
        if self.sql is not None:
            return "sql"
        if self.python is not None:
            return "python"
        if self.command is not None:
            return "command"
        return "streaming"
