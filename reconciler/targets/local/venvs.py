"""Virtualenvs for Python jobs: one per set of libraries, built once and shared.

A virtualenv lives at ``root/<key>/``, where the key hashes everything that decides its
contents: the sorted requirements, the name and sha256 of each wheel file, the pip
index settings, and reconciler's own interpreter (path and version), on which every
virtualenv is built (``python -m venv``).

Invariants:

- A directory at ``root/<key>/`` is complete: it is built in ``root/<key>.build/`` and
  renamed into place only after pip succeeded and the marker file
  ``reconciler-venv.json`` (the inputs, for people reading the cache) was written.
  Scripts that name the build directory (shebangs, activate scripts) are rewritten to
  the final path before the rename; the interpreter itself finds its prefix from its
  own location, so it needs no rewrite.
- Builders of one key exclude each other with ``fcntl.flock`` on ``root/<key>.lock``;
  readers of a finished virtualenv take no lock. A build that fails leaves nothing
  behind but the lock file.
- Without requirements or wheels the virtualenv has no pip (``--without-pip``: fast).
  With them it also has no pip of its own when reconciler's pip can install into
  another interpreter (``pip --python``, pip >= 22.3); otherwise it is built with pip.

`wheel_entry_argv` builds the command that calls a wheel's entry point in such a
virtualenv, which does not have reconciler installed. This module runs pip and venv
as child processes; it does not touch the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Final

from reconciler.errors import TargetError

MARKER_NAME: Final = "reconciler-venv.json"
PIP_ERROR_LINES: Final = 20
DEFAULT_TIMEOUT_SECONDS: Final = 1800.0

# Runs `module:attr` with sys.argv[1] as the entry point and the rest as its arguments,
# the way a console script would. User values reach it only as argv, never as code.
_ENTRY_CODE: Final = """\
import importlib, sys
entry = sys.argv[1]
module, _, attrs = entry.partition(":")
target = importlib.import_module(module)
for attr in attrs.split("."):
    target = getattr(target, attr)
sys.argv = [entry, *sys.argv[2:]]
sys.exit(target())
"""


def venv_python(venv: Path) -> Path:
    """The interpreter of the virtualenv at `venv`."""
    return venv / "bin" / "python"


def venv_key(
    requirements: Sequence[str],
    wheel_digests: Sequence[tuple[str, str]],
    *,
    index_url: str | None,
    find_links: Sequence[str],
) -> str:
    """The cache key of a virtualenv: 32 hex digits of a sha256 over its inputs.

    `wheel_digests` holds (file name, sha256 hex) pairs; order of requirements and wheels
    does not matter, order of `find_links` does (pip searches them in order).
    """
    inputs = {
        "python": sys.executable,
        "pythonVersion": sys.version,
        "requirements": sorted(requirements),
        "wheels": sorted(wheel_digests),
        "indexUrl": index_url,
        "findLinks": list(find_links),
    }
    encoded = json.dumps(inputs, sort_keys=True).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()[:32]


def ensure_venv(
    root: Path,
    requirements: Sequence[str],
    wheels: Sequence[Path],
    *,
    index_url: str | None,
    find_links: Sequence[str],
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> Path:
    """Return the python of a virtualenv holding `requirements` and `wheels`, building
    it under `root` unless a finished one exists.

    Raises `TargetError` when a requirement looks like an option, a wheel file cannot be
    read, or venv or pip fail or time out (the message ends with pip's last lines of
    stderr); no virtualenv is left behind then.
    """
    for requirement in requirements:
        if not requirement.strip() or requirement.lstrip().startswith("-"):
            raise TargetError(f"requirement {requirement!r} is not a requirement specifier")
    wheel_files = [wheel.resolve() for wheel in wheels]
    digests = [(wheel.name, _file_sha256(wheel)) for wheel in wheel_files]
    key = venv_key(requirements, digests, index_url=index_url, find_links=find_links)
    final = root / key
    if _is_finished(final):
        return venv_python(final)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TargetError(f"cannot create the virtualenv cache {root}: {exc}") from exc
    with _exclusive(root / f"{key}.lock"):
        if _is_finished(final):
            return venv_python(final)
        shutil.rmtree(final, ignore_errors=True)  # present without a marker: damaged
        build = root / f"{key}.build"
        shutil.rmtree(build, ignore_errors=True)  # left by a builder that died
        try:
            _build(
                build,
                [*requirements, *(str(wheel) for wheel in wheel_files)],
                _pip_options(index_url, find_links),
                timeout_seconds,
            )
            _relocate(build, final)
            marker = {
                "requirements": sorted(requirements),
                "wheels": [{"name": name, "sha256": digest} for name, digest in sorted(digests)],
                "indexUrl": index_url,
                "findLinks": list(find_links),
                "python": sys.executable,
                "pythonVersion": sys.version,
            }
            (build / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
            build.rename(final)
        except OSError as exc:
            raise TargetError(f"cannot build virtualenv {final}: {exc}") from exc
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return venv_python(final)


def wheel_entry_argv(python: Path, entry_point: str, args: Sequence[str]) -> list[str]:
    """The argv that calls `entry_point` (``module:function``, e.g. ``mypkg.main:run``)
    in `python` with `args` as its ``sys.argv[1:]``; the process exits with the
    function's return value as a console script does (None: 0, int: that code).

    Raises `TargetError` when `entry_point` is not ``module:attribute`` syntax.
    """
    module, colon, attrs = entry_point.partition(":")
    names = [*module.split("."), *attrs.split(".")]
    if not colon or not all(name.isidentifier() for name in names):
        raise TargetError(f"entry point {entry_point!r} is not of the form module:function")
    # -P: the working directory must not shadow the wheel's modules.
    return [str(python), "-P", "-c", _ENTRY_CODE, entry_point, *args]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise TargetError(f"cannot read wheel {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def _is_finished(venv: Path) -> bool:
    return (venv / MARKER_NAME).is_file() and venv_python(venv).exists()


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _pip_options(index_url: str | None, find_links: Sequence[str]) -> list[str]:
    options = ["--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    if index_url is not None:
        options += ["--index-url", index_url]
    for link in find_links:
        options += ["--find-links", link]
    return options


def _build(build: Path, targets: Sequence[str], options: Sequence[str], timeout: float) -> None:
    """Create a virtualenv at `build` and pip-install `targets` into it."""
    if not targets:
        _run([sys.executable, "-m", "venv", "--without-pip", str(build)], "venv", timeout)
        return
    python = str(venv_python(build))
    if _host_pip_can_target():
        _run([sys.executable, "-m", "venv", "--without-pip", str(build)], "venv", timeout)
        pip = [sys.executable, "-m", "pip", "--python", python]
    else:
        _run([sys.executable, "-m", "venv", str(build)], "venv", timeout)
        pip = [python, "-m", "pip"]
    _run([*pip, "install", *options, *targets], "pip", timeout)


def _host_pip_can_target() -> bool:
    """Whether reconciler's own pip can install into another interpreter (>= 22.3)."""
    try:
        version = metadata.version("pip")
    except metadata.PackageNotFoundError:
        return False
    parts = version.split(".")
    try:
        return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0) >= (22, 3)
    except ValueError:
        return False


def _run(argv: Sequence[str], tool: str, timeout: float) -> None:
    env = {k: v for k, v in os.environ.items() if k != "_PIP_RUNNING_IN_SUBPROCESS"}
    # A session of its own, so a timeout also stops the processes pip starts.
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise TargetError(f"{tool} did not finish within {timeout:g} s") from exc
    if process.returncode != 0:
        tail = _last_lines(stderr) or _last_lines(stdout)
        raise TargetError(f"{tool} failed with exit code {process.returncode}:\n{tail}")


def _last_lines(output: bytes) -> str:
    lines = [line for line in output.decode("utf-8", "replace").splitlines() if line.strip()]
    return "\n".join(lines[-PIP_ERROR_LINES:])


def _relocate(build: Path, final: Path) -> None:
    """Rewrite the text files in ``bin/`` (and ``pyvenv.cfg``) that name `build`."""
    old, new = str(build).encode(), str(final).encode()
    candidates = [build / "pyvenv.cfg", *(build / "bin").iterdir()]
    for path in candidates:
        if path.is_symlink() or not path.is_file():
            continue
        content = path.read_bytes()
        if old in content and b"\0" not in content:
            path.write_bytes(content.replace(old, new))
