"""The ownership rules on in-memory versions: who may change which file, who may operate runs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from reconciler.ownership.rules import (
    Change,
    Rule,
    VersionOwnership,
    check_changes,
    diff_listings,
    may_operate_runs,
    read_ownership,
)
from reconciler.spec.teams import TeamsSpec

TEAMS = "admins: [carol]\nteams:\n  sales: {members: [alice, bob]}\n  finance: {members: [dave]}\n"


@dataclass(frozen=True)
class Entry:
    blob: str
    is_symlink: bool = False


def version(files: dict[str, str], links: dict[str, str] | None = None) -> VersionOwnership:
    listing = {p: Entry(blob=str(hash(t))) for p, t in files.items()}
    listing.update({p: Entry(blob=str(hash(t)), is_symlink=True) for p, t in (links or {}).items()})
    contents = {p: t.encode() for p, t in {**files, **(links or {})}.items()}
    return read_ownership(listing, contents)


BASE = {
    "teams.yaml": TEAMS,
    "reconciler.yaml": "timezone: UTC\n",
    "README.md": "hi\n",
    "profiles/small.yaml": "mode: standalone\n",
    "profiles/big.yaml": "mode: standalone\n",
    "queries/sales/rollup.sql": "select 1\n",
    "queries/shared.sql": "select 2\n",
    "schedules/hourly.yaml": "cron: '0 * * * *'\n",
    "jobs/sales/daily.yaml": "team: sales\nsql: {query: sales.rollup}\nprofile: small\n",
    "jobs/sales/orders.yaml": "team: sales\nsql: {file: orders.sql}\n",
    "jobs/sales/orders.sql": "select 3\n",
    "jobs/finance/report.yaml": (
        "team: finance\nsharedWith: [sales]\nsql: {query: shared}\nprofile: big\n"
        "schedules:\n  - {use: hourly}\n"
    ),
    "jobs/sales/also.yaml": "team: sales\nsql: {query: shared}\nprofile: big\n",
    "jobs/ops/cleanup.yaml": "command: {cmd: echo}\n",
}


def judge(author: str, head_files: dict[str, str], base_files: dict[str, str] = BASE) -> list:
    base, head = version(base_files), version(head_files)
    listing_b = {p: Entry(blob=str(hash(t))) for p, t in base_files.items()}
    listing_h = {p: Entry(blob=str(hash(t))) for p, t in head_files.items()}
    return list(
        check_changes(diff_listings(listing_b, listing_h), base=base, head=head, author=author)
    )


def test_a_team_member_may_edit_and_delete_the_teams_jobs() -> None:
    head = dict(
        BASE, **{"jobs/sales/daily.yaml": BASE["jobs/sales/daily.yaml"] + "suspended: true\n"}
    )
    del head["jobs/sales/orders.yaml"]
    assert judge("alice", head) == []


def test_editing_another_teams_job_is_refused_naming_the_owner() -> None:
    head = dict(
        BASE, **{"jobs/finance/report.yaml": BASE["jobs/finance/report.yaml"] + "suspended: true\n"}
    )
    [violation] = judge("alice", head)
    assert violation.path == "jobs/finance/report.yaml"
    assert violation.rule is Rule.JOB_OWNER
    assert "team 'finance'" in violation.reason
    assert violation.users == ("carol", "dave")


def test_deleting_another_teams_job_is_refused() -> None:
    head = dict(BASE)
    del head["jobs/finance/report.yaml"]
    [violation] = judge("alice", head)
    assert (violation.change, violation.rule) == (Change.DELETED, Rule.JOB_OWNER)
    assert violation.reason.startswith("deleting job finance.report")


def test_a_job_without_team_is_owned_by_the_org_admins() -> None:
    head = dict(BASE, **{"jobs/ops/cleanup.yaml": "command: {cmd: echo 2}\n"})
    [violation] = judge("alice", head)
    assert "org admins" in violation.reason
    assert violation.users == ("carol",)
    assert judge("carol", head) == []


def test_a_new_job_must_name_a_team_of_its_author() -> None:
    mine = dict(BASE, **{"jobs/sales/new.yaml": "team: sales\ncommand: {cmd: x}\n"})
    theirs = dict(BASE, **{"jobs/sales/new.yaml": "team: finance\ncommand: {cmd: x}\n"})
    none = dict(BASE, **{"jobs/sales/new.yaml": "command: {cmd: x}\n"})
    assert judge("alice", mine) == []
    assert [v.rule for v in judge("alice", theirs)] == [Rule.NEW_JOB]
    assert [v.rule for v in judge("alice", none)] == [Rule.NEW_JOB]
    assert judge("carol", theirs) == judge("carol", none) == []


def test_handing_a_job_over_needs_the_old_team_and_then_the_new_team_owns_it() -> None:
    handed = dict(BASE, **{"jobs/sales/orders.yaml": "team: finance\nsql: {file: orders.sql}\n"})
    assert judge("alice", handed) == []  # old team may hand over
    [violation] = judge("dave", handed)  # the receiving team may not take it
    assert violation.rule is Rule.HANDOVER
    # after the handover commit, the previous team has no write access
    after = dict(
        handed,
        **{"jobs/sales/orders.yaml": "team: finance\nsql: {file: orders.sql}\ndescription: x\n"},
    )
    assert [v.rule for v in judge("alice", after, base_files=handed)] == [Rule.JOB_OWNER]
    assert [
        v.rule
        for v in judge("alice", dict(handed, **{"jobs/sales/orders.sql": "x"}), base_files=handed)
    ] == [Rule.JOB_FILE]
    assert judge("dave", after, base_files=handed) == []


def test_a_snapshot_file_follows_the_job_naming_it() -> None:
    head = dict(BASE, **{"jobs/sales/orders.sql": "select 4\n"})
    assert judge("alice", head) == []
    [violation] = judge("dave", head)
    assert (violation.rule, violation.teams) == (Rule.JOB_FILE, ("sales",))


def test_a_symlinked_snapshot_protects_its_target() -> None:
    files = dict(BASE, **{"lib/orders.sql": "select 5\n"})
    del files["jobs/sales/orders.sql"]
    base = version(files, links={"jobs/sales/orders.sql": "../../lib/orders.sql"})
    assert base.named_by["lib/orders.sql"] == ("jobs/sales/orders.yaml",)


def test_a_shared_file_may_be_changed_by_the_team_owning_every_job_using_it() -> None:
    rollup = dict(BASE, **{"queries/sales/rollup.sql": "select 9\n"})
    assert judge("alice", rollup) == []
    assert [(v.rule, v.teams) for v in judge("dave", rollup)] == [(Rule.SHARED_FILE, ("sales",))]
    shared = dict(BASE, **{"queries/shared.sql": "select 9\n"})  # used by sales and finance
    assert [v.users for v in judge("alice", shared)] == [("carol",)]
    assert judge("carol", shared) == []
    profile = dict(BASE, **{"profiles/small.yaml": "mode: cluster\n"})
    assert judge("alice", profile) == []
    schedule = dict(BASE, **{"schedules/hourly.yaml": "cron: '5 * * * *'\n"})
    assert judge("dave", schedule) == []  # only finance.report uses it
    assert [v.rule for v in judge("alice", schedule)] == [Rule.SHARED_FILE]


def test_a_new_shared_file_may_be_added_by_any_team_member_but_not_by_outsiders() -> None:
    head = dict(BASE, **{"queries/new.sql": "select 1\n"})
    assert judge("dave", head) == []
    assert [v.rule for v in judge("mallory", head)] == [Rule.SHARED_FILE]


@pytest.mark.parametrize("path", ["teams.yaml", "reconciler.yaml"])
def test_teams_and_settings_are_changed_by_org_admins_only(path: str) -> None:
    head = dict(BASE, **{path: BASE[path] + "# edit\n"})
    [violation] = judge("alice", head)
    assert (violation.rule, violation.users) == (Rule.ADMIN_FILE, ("carol",))
    assert judge("carol", head) == []


def test_a_user_cannot_grant_themselves_membership_in_the_same_change() -> None:
    teams = TEAMS.replace("[dave]", "[dave, alice]")
    head = dict(
        BASE,
        **{"teams.yaml": teams, "jobs/finance/report.yaml": "team: finance\ncommand: {cmd: x}\n"},
    )
    assert sorted(v.rule for v in judge("alice", head)) == [Rule.ADMIN_FILE, Rule.JOB_OWNER]


def test_without_teams_yaml_everyone_is_an_org_admin() -> None:
    base = {p: t for p, t in BASE.items() if p != "teams.yaml"}
    head = dict(base, **{"jobs/finance/report.yaml": "command: {cmd: x}\n", "reconciler.yaml": ""})
    assert judge("anyone", head, base_files=base) == []


def test_other_files_are_unrestricted() -> None:
    assert judge("mallory", dict(BASE, **{"README.md": "changed\n", "docs/x.md": "new\n"})) == []


def test_runs_are_operated_by_owning_and_shared_teams_and_admins() -> None:
    teams = TeamsSpec.model_validate(
        {
            "admins": ["carol"],
            "teams": {"sales": {"members": ["alice"]}, "finance": {"members": ["dave"]}},
        }
    )
    assert may_operate_runs("alice", team="sales", shared_with=[], teams=teams)
    assert may_operate_runs("dave", team="sales", shared_with=["finance"], teams=teams)
    assert not may_operate_runs("dave", team="sales", shared_with=[], teams=teams)
    assert may_operate_runs("carol", team="sales", shared_with=[], teams=teams)
    assert not may_operate_runs("alice", team=None, shared_with=[], teams=teams)
    assert may_operate_runs("anyone", team="sales", shared_with=[], teams=None)
