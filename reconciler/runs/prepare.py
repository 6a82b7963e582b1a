"""Preparing runs: what a new run runs (live or draft definition, resolved at dispatch),
and how a run is launched (argv, environment, files in its run directory).

Edge: reads the store and git, writes the run directory, builds virtualenvs.
"""

from __future__ import annotations

import json
import posixpath
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import DefinitionError, UsageError
from reconciler.ids import CommitSha, JobId
from reconciler.runs.record import Run
from reconciler.runs.resolve import (
    RunPlan,
    catalog_path,
    job_path_for,
    merge_arguments,
    resolve_profile,
    resolve_sql,
    sha256_text,
)

if TYPE_CHECKING:
    from reconciler.runs.dispatch import Runner
    from reconciler.targets.local.launcher import Launch

PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME")


def plan_run(
    runner: Runner, job_id: JobId, *, ref: str | None, arguments: Mapping[str, str]
) -> RunPlan:
    """Resolve a new run of `job_id`: the live version, or the draft at `ref`."""
    from reconciler.repo.snapshot import open_commit

    if ref is None:
        definition, commit, version, settings = _live(runner, job_id)
        draft_ref = None
    else:
        definition, commit, settings = _draft(runner, job_id, ref)
        version, draft_ref = None, ref
    with open_commit(runner.repo, commit) as snapshot:
        wanted = _wanted_paths(job_id, definition, snapshot.files())
        blobs = snapshot.read(wanted)
    return _plan(
        job_id, definition, commit, version, draft_ref, settings, blobs, arguments, runner.state_dir
    )


def plan_at_commit(runner: Runner, run: Run) -> RunPlan:
    """Resolve what a recorded run (a scheduled fire) executes, at its commit."""
    from reconciler.repo.snapshot import open_commit

    definition = dict(run.details["definition"])
    with open_commit(runner.repo, run.commit) as snapshot:
        wanted = _wanted_paths(run.job_id, definition, snapshot.files())
        blobs = snapshot.read(wanted)
    settings = {"pip": run.details.get("pip") or {}}
    plan = _plan(
        run.job_id,
        definition,
        run.commit,
        run.version,
        run.draft_ref,
        settings,
        blobs,
        run.arguments,
        runner.state_dir,
        catalog=run.details.get("catalogPath"),
    )
    return plan


def plan_from_run(run: Run) -> RunPlan:
    """The plan of an earlier run (for retries): same commit, version, inputs."""
    return RunPlan(
        job_id=run.job_id,
        commit=run.commit,
        version=run.version,
        draft_ref=run.draft_ref,
        definition=run.details["definition"],
        arguments=dict(run.arguments),
        settings={"targets": {"local": {"maxConcurrentRuns": run.details.get("hostSlots")}}},
        profile=dict(run.profile or {}),
        snapshots=dict(run.snapshots or {}),
        catalog_path=run.details.get("catalogPath"),
    )


def _live(
    runner: Runner, job_id: JobId
) -> tuple[dict[str, Any], CommitSha, CommitSha, dict[str, Any]]:
    applied = runner.store.read_jobs([job_id]).get(job_id)
    if applied is None:
        raise UsageError(
            f"job {job_id!r} is not live: apply a commit that defines it, or run a draft "
            "with --ref BRANCH"
        )
    state = runner.store.read_state()
    files = runner.store.read_files(["reconciler.yaml"])
    settings_row = files.get("reconciler.yaml")
    settings = dict(settings_row.parsed) if settings_row is not None and settings_row.parsed else {}
    return dict(applied.definition), state.commit or applied.commit, applied.version, settings


def _draft(
    runner: Runner, job_id: JobId, ref: str
) -> tuple[dict[str, Any], CommitSha, dict[str, Any]]:
    from reconciler.load.loader import load_jobs_repo
    from reconciler.load.normalize import normalize_job
    from reconciler.repo.snapshot import open_commit

    with open_commit(runner.repo, ref) as snapshot:
        loaded = load_jobs_repo(snapshot, label=snapshot.label, commit=snapshot.commit)
        commit = snapshot.commit
    if loaded.errors:
        raise DefinitionError(loaded.errors)
    job = loaded.jobs.get(job_id)
    if job is None or commit is None:
        raise UsageError(f"no job {job_id!r} at {loaded.label}")
    return normalize_job(job), commit, loaded.settings.to_document()


def _wanted_paths(
    job_id: str, definition: Mapping[str, Any], files: Mapping[str, Any]
) -> list[str]:
    job_path = job_path_for(job_id)
    wanted = [f"profiles/{definition.get('profile', 'default')}.yaml"]
    sql = definition.get("sql") or {}
    if sql.get("query"):
        wanted.append("queries/" + sql["query"].replace(".", "/") + ".sql")
    if sql.get("file"):
        wanted.append(_beside(job_path, sql["file"]))
    python = definition.get("python") or {}
    if python.get("file"):
        wanted.append(_beside(job_path, python["file"]))
    wheel = python.get("wheel") or {}
    if str(wheel.get("package", "")).endswith(".whl"):
        wanted.append(_beside(job_path, wheel["package"]))
    return [p for p in wanted if p in files]


def _beside(job_path: str, ref: str) -> str:
    return posixpath.normpath(posixpath.join(posixpath.dirname(job_path), ref))


def _plan(
    job_id: JobId,
    definition: dict[str, Any],
    commit: CommitSha,
    version: CommitSha | None,
    draft_ref: str | None,
    settings: dict[str, Any],
    blobs: Mapping[str, bytes],
    arguments: Mapping[str, str],
    state_dir: Path,
    *,
    catalog: str | None = None,
) -> RunPlan:
    from reconciler.spec.settings import RepoSettings

    job_path = job_path_for(job_id)
    profile = resolve_profile(str(definition.get("profile", "default")), blobs)
    snapshots: dict[str, Any] = {}
    path: str | None = catalog
    if "sql" in definition:
        snapshots["sql"] = resolve_sql(definition, job_path, blobs)
        if path is None:
            path = catalog_path(
                RepoSettings.model_validate(settings), definition["sql"].get("catalog"), state_dir
            )
    python = definition.get("python") or {}
    files: dict[str, str] = {}
    if python.get("file"):
        source = _beside(job_path, python["file"])
        data = blobs[source]
        snapshots["python"] = {"file": source, "sha256": sha256_text(data)}
        files["job.py"] = source
    wheel = python.get("wheel") or {}
    if str(wheel.get("package", "")).endswith(".whl"):
        source = _beside(job_path, wheel["package"])
        snapshots["wheel"] = {"file": source, "sha256": sha256_text(blobs[source])}
    snapshots["files"] = {p: sha256_text(d) for p, d in sorted(blobs.items())}
    return RunPlan(
        job_id=job_id,
        commit=commit,
        version=version,
        draft_ref=draft_ref,
        definition=definition,
        arguments=merge_arguments(definition, arguments),
        settings=settings,
        profile=profile,
        snapshots=snapshots,
        catalog_path=path,
    )


def argument_flags(arguments: Mapping[str, str]) -> list[str]:
    """`{"day": "today"}` -> `["--day", "today"]`, by argument name: the store does not
    keep the order of keys (PostgreSQL's JSONB reorders them), so argv must not use it."""
    out: list[str] = []
    for key, value in sorted(arguments.items()):
        out += [f"--{key}", value]
    return out


def build_launch(runner: Runner, run: Run) -> Launch:
    """Write the run directory and return how to launch the run."""
    from reconciler.targets.local.launcher import Launch

    run_dir = runner.run_dir(run.id)
    work = run_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    definition = run.details["definition"]
    env = {k: v for k, v in runner.environ.items() if k in PASSED_ENV}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        {
            "RECONCILER_RUN_ID": run.id,
            "RECONCILER_JOB_ID": run.job_id,
            "RECONCILER_ATTEMPT": str(run.attempt),
        }
    )
    env.update(_bookmark_env(runner, run, run_dir))
    flags = argument_flags(run.arguments)
    command = definition.get("command")
    if command is not None:
        env.update(command.get("env") or {})
        if command.get("cmd") is not None:
            argv = ["/bin/sh", "-c", command["cmd"], "reconciler", *flags]
        else:
            argv = [*command["args"], *flags]
        if command.get("user"):
            argv = ["runuser", "-u", command["user"], "--", *argv]
    elif "sql" in definition:
        sql = (run.snapshots or {})["sql"]
        (run_dir / "sql.json").write_text(
            json.dumps(
                {
                    "sql": sql["text"],
                    "catalogPath": run.details["catalogPath"],
                    "arguments": dict(run.arguments),
                    "bookmark": {
                        "in": env.get("RECONCILER_BOOKMARK_IN"),
                        "out": env.get("RECONCILER_BOOKMARK_OUT"),
                    },
                }
            ),
            encoding="utf-8",
        )
        argv = [sys.executable, "-m", "reconciler.targets.local.sqlrun", str(run_dir)]
    else:
        argv = _python_argv(runner, run, run_dir, definition["python"], flags)
    return Launch(
        argv=argv,
        cwd=work,
        env=env,
        timeout_seconds=run.timeout,
        grace_seconds=int(definition.get("taskKillGracePeriodSeconds", 30)),
        stdout=run_dir / "stdout.log",
        stderr=run_dir / "stderr.log",
        finish=None
        if runner.watching
        else [
            sys.executable,
            "-m",
            "reconciler.runs.finish",
            "--repo",
            str(runner.repo),
            "--db",
            runner.db_url,
            run.id,
        ],
    )


def _python_argv(
    runner: Runner, run: Run, run_dir: Path, python: Mapping[str, Any], flags: list[str]
) -> list[str]:
    from reconciler.repo.snapshot import open_commit
    from reconciler.targets.local.venvs import ensure_venv, wheel_entry_argv

    profile_doc = (run.profile or {}).get("document") or {}
    requirements = [lib for lib in profile_doc.get("libraries", []) if isinstance(lib, str)]
    repo_files = [
        _beside(str((run.profile or {}).get("path", "profiles/x.yaml")), lib["wheel"])
        for lib in profile_doc.get("libraries", [])
        if isinstance(lib, dict)
    ]
    script: str | None = (run.snapshots or {}).get("python", {}).get("file")
    wheel = python.get("wheel") or {}
    package = str(wheel.get("package", ""))
    if package and not package.endswith(".whl"):
        requirements.append(package)
    elif package:
        repo_files.append((run.snapshots or {})["wheel"]["file"])
    wanted = [p for p in [script, *repo_files] if p]
    with open_commit(runner.repo, run.commit) as snapshot:
        contents = snapshot.read(wanted)
    wheels = []
    for path in repo_files:
        target = run_dir / "wheels" / posixpath.basename(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(contents[path])
        wheels.append(target)
    pip = run.details.get("pip") or {}
    python_bin = ensure_venv(
        runner.state_dir / "venvs",
        requirements,
        wheels,
        index_url=pip.get("indexUrl"),
        find_links=list(pip.get("findLinks") or []),
    )
    if script is not None:
        (run_dir / "job.py").write_bytes(contents[script])
        return [str(python_bin), str(run_dir / "job.py"), *flags]
    return wheel_entry_argv(python_bin, str(wheel["entryPoint"]), flags)


def _bookmark_env(runner: Runner, run: Run, run_dir: Path) -> dict[str, str]:
    mode = run.details["definition"].get("bookmark", "disable")
    if mode == "disable":
        return {}
    current = runner.runs.get_bookmark(run.job_id)
    bookmark_in = run_dir / "bookmark.in"
    bookmark_in.write_text(json.dumps(current.value if current else None), encoding="utf-8")
    return {
        "RECONCILER_BOOKMARK_IN": str(bookmark_in),
        "RECONCILER_BOOKMARK_OUT": str(run_dir / "bookmark.out"),
    }
