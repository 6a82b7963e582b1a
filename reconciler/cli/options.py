"""Options shared by commands (`--repo`, `--ref`, `--output`) and resolving them.

Thin: turns arguments into paths, snapshots and clocks; holds no logic of its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from reconciler.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])


def repo_option(func: F) -> F:
    return click.option(
        "--repo",
        "repo_path",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="The jobs repo (default: the git repo enclosing the current directory).",
    )(func)


def output_option(*choices: str) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        return click.option(
            "--output",
            "-o",
            "output",
            type=click.Choice(list(choices)),
            default=choices[0],
            show_default=True,
            help="Output format.",
        )(func)

    return decorate


def find_repo(repo_path: Path | None) -> Path:
    """The root of the jobs repo; RepoError when there is none."""
    from reconciler.repo.git import find_repo_root

    start = repo_path if repo_path is not None else Path.cwd()
    if repo_path is not None and not repo_path.exists():
        raise UsageError(f"--repo {repo_path}: no such directory")
    return find_repo_root(start)


def current_user(as_user: str | None = None) -> str:
    """`--as USER` > RECONCILER_USER > $USER > the login name."""
    if as_user:
        return as_user
    for var in ("RECONCILER_USER", "USER", "LOGNAME"):
        if os.environ.get(var):
            return os.environ[var]
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "reconciler"


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False))


def db_option(func: F) -> F:
    return click.option(
        "--db",
        "db_url",
        default=None,
        help="State store URL (default: RECONCILER_DB, else <repo>/.reconciler/state.db).",
    )(func)


def as_option(func: F) -> F:
    return click.option(
        "--as", "as_user", default=None, help="Act as this user (default: RECONCILER_USER, $USER)."
    )(func)


def store_url(repo: Path, db_url: str | None) -> str:
    from reconciler.store import resolve_store_url

    return resolve_store_url(db_url, os.environ, repo)


def store_exists(url: str) -> bool:
    """False only for a default SQLite file that was never created (nothing applied yet)."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :]).exists()
    return True
