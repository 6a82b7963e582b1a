"""`reconciler.yaml`: repo-wide settings; every key has a default.

Pure: no I/O. Holds no credentials: a store or service URL with a password comes
from the environment.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from reconciler.spec.base import SpecModel
from reconciler.spec.schedule import check_timezone

BUILTIN_INSTANCE_TYPES: dict[str, tuple[float, float]] = {
    "m5.large": (2, 8),
    "m5.xlarge": (4, 16),
    "m5.2xlarge": (8, 32),
    "m5.4xlarge": (16, 64),
    "c5.large": (2, 4),
    "c5.xlarge": (4, 8),
    "c5.2xlarge": (8, 16),
    "r5.large": (2, 16),
    "r5.xlarge": (4, 32),
    "r5.2xlarge": (8, 64),
}
"""(cpus, memGiB) of the instance types known when reconciler.yaml declares none."""

DEFAULT_CATALOG = "default"
DEFAULT_CATALOG_PATH = "catalogs/default.duckdb"


class CatalogEngine(StrEnum):
    DUCKDB = "duckdb"


class Catalog(SpecModel):
    engine: CatalogEngine = CatalogEngine.DUCKDB
    path: str = Field(description="host path; relative paths are relative to .reconciler/")
    default: bool = False


class LocalTarget(SpecModel):
    max_concurrent_runs: int = Field(default=8, ge=1, description="host-wide cap")


class Targets(SpecModel):
    local: LocalTarget = Field(default_factory=LocalTarget)


class Limits(SpecModel):
    max_timeout_seconds: int = Field(default=86400, ge=1)
    default_timeout_seconds: int = Field(default=3600, ge=1)
    max_workers: int = Field(default=50, ge=1, description="caps worker.maxNodes")


class PipSettings(SpecModel):
    index_url: str | None = None
    find_links: list[str] = Field(default_factory=list)


class InstanceType(SpecModel):
    cpus: float = Field(gt=0)
    mem_gi_b: float = Field(gt=0, alias="memGiB")


class RepoSettings(SpecModel):
    """What `reconciler.yaml` says."""

    main_branch: str | None = Field(default=None, description="default: origin/HEAD, main, master")
    timezone: str = "UTC"
    default_profile: str = "default"
    catalogs: dict[str, Catalog] = Field(default_factory=dict)
    targets: Targets = Field(default_factory=Targets)
    limits: Limits = Field(default_factory=Limits)
    pip: PipSettings = Field(default_factory=PipSettings)
    instance_types: dict[str, InstanceType] | None = Field(
        default=None, description="instance-type catalog (default: common m5/c5/r5 sizes)"
    )
    retention_days: int = Field(default=90, ge=1)

    _check_timezone = field_validator("timezone")(check_timezone)

    def instance_type_names(self) -> list[str]:
        if self.instance_types is None:
            return sorted(BUILTIN_INSTANCE_TYPES)
        return sorted(self.instance_types)

    def catalog_names(self) -> list[str]:
        return sorted(self.catalogs) if self.catalogs else [DEFAULT_CATALOG]

    def default_catalog(self) -> str:
        if not self.catalogs:
            return DEFAULT_CATALOG
        marked = sorted(name for name, c in self.catalogs.items() if c.default)
        return marked[0] if marked else sorted(self.catalogs)[0]
