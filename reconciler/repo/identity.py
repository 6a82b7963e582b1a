"""Who commits that reconciler writes (``init``, ``rollback``) are by, and writing them.

Invariants: git's configured identity (``user.name``/``user.email`` for that repo, or
the ``GIT_AUTHOR_*``/``GIT_COMMITTER_*`` variables already set) is always used when
present; only a missing part is filled in, as ``USER <USER@localhost>`` with ``USER``
from ``$USER`` (else ``reconciler``), so a commit never fails for want of an identity
and never carries a guessed host name. `commit_all` never stages ``.reconciler/``.

Does not push, and does not decide what to commit: callers write the files first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from reconciler.ids import CommitSha
from reconciler.repo.git import query_git, run_git

FALLBACK_USER = "reconciler"
_STATE_DIR = ".reconciler"


def commit_identity_env(repo: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment variables a commit in `repo` needs for an identity: {}
    when git has both a name and an email configured, else the missing
    ``GIT_AUTHOR_*``/``GIT_COMMITTER_*`` variables.

    `environ` defaults to the process environment. Raises `RepoError` when git fails.
    """
    environ = os.environ if environ is None else environ
    user = environ.get("USER") or FALLBACK_USER
    fallback = {"NAME": user, "EMAIL": f"{user}@localhost"}
    env: dict[str, str] = {}
    for part, key in (("NAME", "user.name"), ("EMAIL", "user.email")):
        configured = (query_git(repo, "config", "--get", key) or "").strip()
        if configured:
            continue
        for role in ("AUTHOR", "COMMITTER"):
            var = f"GIT_{role}_{part}"
            if not environ.get(var):
                env[var] = fallback[part]
    return env


def commit_all(repo: Path, message: str) -> CommitSha:
    """Stage every change in the working tree (except ``.reconciler/``), commit it with
    `message` and return the new commit's SHA.

    Raises `RepoError` when there is nothing to commit or git fails (a hook refusing,
    for example).
    """
    run_git(repo, "add", "--all", "--", ".", f":(exclude){_STATE_DIR}")
    run_git(
        repo,
        "commit",
        "--quiet",
        "--file=-",
        input=message.encode("utf-8"),
        env=commit_identity_env(repo),
    )
    return CommitSha(run_git(repo, "rev-parse", "--verify", "HEAD").strip())
