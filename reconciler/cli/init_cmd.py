"""`reconciler init DIR`: create a jobs repo from the template, as its first commit."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import click

from reconciler.cli.options import current_user
from reconciler.cli.schema_cmd import write_schemas
from reconciler.errors import UsageError

ADMIN_PLACEHOLDER = "admins: [ADMIN]"


def create_jobs_repo(target: Path, *, admin: str) -> str:
    """Copy the template into `target`, write schemas, `git init -b main`, commit.

    Returns the first commit's SHA. Raises UsageError when `target` is not empty.
    """
    from reconciler.repo.git import run_git
    from reconciler.repo.identity import commit_all

    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} is not empty; give a new or empty directory")
    target.mkdir(parents=True, exist_ok=True)
    template = resources.files("reconciler") / "template"
    with resources.as_file(template) as source:
        shutil.copytree(
            source,
            target,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    (target / "gitignore").rename(target / ".gitignore")
    teams = target / "teams.yaml"
    teams.write_text(
        teams.read_text(encoding="utf-8").replace(
            ADMIN_PLACEHOLDER, f"admins: [{json.dumps(admin)}]"
        ),
        encoding="utf-8",
    )
    write_schemas(target / "schemas")
    run_git(target, "init", "--quiet", "--initial-branch", "main")
    return commit_all(target, "Create jobs repo with reconciler init")


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--as", "as_user", default=None, help="Org admin to list (default: you).")
def init(directory: Path, as_user: str | None) -> None:
    """Create a jobs repo in DIRECTORY with example jobs, teams, a profile, schemas and CI
    pipelines (.github/workflows/reconciler.yml, .gitlab-ci.yml) for pull requests and main."""
    admin = current_user(as_user)
    sha = create_jobs_repo(directory, admin=admin)
    click.echo(f"created jobs repo {directory} (main at {sha[:12]}, org admin {admin})")
