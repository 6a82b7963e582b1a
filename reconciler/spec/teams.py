"""`teams.yaml`: org admins and teams with their members (forge logins).

Pure: no I/O.
"""

from __future__ import annotations

from pydantic import Field

from reconciler.spec.base import SpecModel


class Team(SpecModel):
    members: list[str] = Field(default_factory=list)


class TeamsSpec(SpecModel):
    admins: list[str] = Field(default_factory=list, description="org admins: everything")
    teams: dict[str, Team] = Field(default_factory=dict)
