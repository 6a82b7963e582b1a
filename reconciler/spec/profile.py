"""`profiles/<name>.yaml`: a compute profile (engine and sizing), resolved at dispatch.

Pure: no I/O. Instance types and worker limits are checked against reconciler.yaml
by the loader.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from reconciler.spec.base import ScalarStr, SpecModel


class ExecutionMode(StrEnum):
    STANDALONE = "standalone"
    CLUSTER = "cluster"


class Engine(StrEnum):
    DUCKDB = "duckdb"
    SAIL = "sail"


class CapacityType(StrEnum):
    ON_DEMAND = "on-demand"
    SPOT = "spot"


class Driver(SpecModel):
    instance_type: str | None = None
    disk_gi_b: int | None = Field(default=None, ge=1, alias="diskGiB")


class Worker(SpecModel):
    instance_type: str | None = None
    disk_gi_b: int | None = Field(default=None, ge=1, alias="diskGiB")
    max_nodes: int = Field(default=1, ge=1)
    capacity_type: CapacityType = CapacityType.ON_DEMAND


class WheelLibrary(SpecModel):
    wheel: str = Field(description="repo path of a .whl file, relative to the profile")


Library = Annotated[str | WheelLibrary, Field(description="a requirement or {wheel: path}")]


class ProfileSpec(SpecModel):
    mode: ExecutionMode = ExecutionMode.STANDALONE
    engine: Engine = Engine.DUCKDB
    driver: Driver = Field(default_factory=Driver)
    worker: Worker | None = Field(default=None, description="cluster mode only")
    libraries: list[Library] = Field(default_factory=list)
    config: dict[str, ScalarStr] = Field(default_factory=dict, description="engine config / env")


BUILTIN_DEFAULT_PROFILE = ProfileSpec()
"""The `default` profile when profiles/default.yaml does not exist."""
