"""Starting and watching supervised local runs: the reconciler's side of `supervisor.py`.

A run lives in a run directory: `launch.json` (written here, mode 0600, no secret
values), `supervisor.pid` (written here), `status.json` and `supervisor.log` (written
by the supervisor and the finish program it execs). Each run gets one supervisor
process, started in its own session, so the run outlives the process that started it.

The supervisor is this process's child; a daemon thread per run reaps it with a
blocking `os.waitpid(pid)`, which needs no SIGCHLD handler and leaves other children
alone. If this process exits first, the supervisor is re-parented and reaped there.

Does not touch the store; decides nothing about run states (see `reconciler.runs`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.errors import TargetError

SUPERVISOR_SCRIPT = Path(__file__).resolve().with_name("supervisor.py")
LAUNCH_FILE = "launch.json"
STATUS_FILE = "status.json"
PID_FILE = "supervisor.pid"
SUPERVISOR_LOG = "supervisor.log"
PHASES = ("running", "exited")
POLL_SECONDS = 0.005
# The supervisor blocks these until its handlers are in place, so a stop request that
# arrives while it starts is delivered, not fatal.
_BLOCKED_AT_START = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """What to run and how: the non-secret part of a run's process."""

    argv: list[str]
    cwd: Path
    env: Mapping[str, str]  # the job's complete environment, secrets aside
    timeout_seconds: int | None
    grace_seconds: int
    stdout: Path
    stderr: Path
    finish: list[str] | None = None  # exec'd by the supervisor after the final status


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorStatus:
    """What a run's status.json says."""

    phase: str  # "running" | "exited"
    supervisor_pid: int
    supervisor_start: int | None
    child_pid: int | None
    pgid: int | None
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    signal: int | None
    outcome: str | None  # SUCCEEDED FAILED TIMEOUT STOPPED; None: the supervisor failed
    message: str | None


def start_supervised(
    run_dir: Path, launch: Launch, secrets: Mapping[str, str]
) -> tuple[int, int | None]:
    """Start the supervisor of a run in `run_dir` and return at once.

    Writes launch.json, starts the supervisor in a new session (with this process's
    environment, which the finish program inherits) and hands it `secrets` through a
    pipe. Returns the supervisor's pid and its /proc start time. Raises TargetError
    when the supervisor cannot be started.
    """
    run_dir = Path(os.path.abspath(run_dir))
    document = {
        "argv": list(launch.argv),
        "cwd": os.path.abspath(launch.cwd),
        "env": dict(launch.env),
        "timeoutSeconds": launch.timeout_seconds,
        "graceSeconds": launch.grace_seconds,
        "stdout": os.path.abspath(launch.stdout),
        "stderr": os.path.abspath(launch.stderr),
        "finish": list(launch.finish) if launch.finish is not None else None,
    }
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        for log in (launch.stdout, launch.stderr):
            Path(os.path.abspath(log)).parent.mkdir(parents=True, exist_ok=True)
        _write_private(run_dir / LAUNCH_FILE, json.dumps(document).encode())
        pid = _spawn_supervisor(run_dir, json.dumps(dict(secrets)).encode())
        start = _start_time(pid)
        _write_private(run_dir / PID_FILE, f"{pid} {start}\n".encode())
    except OSError as exc:
        raise TargetError(f"local: could not start the supervisor of {run_dir}") from exc
    return pid, start


def _spawn_supervisor(run_dir: Path, secrets: bytes) -> int:
    stdin_r, stdin_w = os.pipe()
    log = os.open(
        run_dir / SUPERVISOR_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
    )
    try:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-I", "-S", str(SUPERVISOR_SCRIPT), str(run_dir)],
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, stdin_r, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, log, 2),
            ],
            setsid=True,
            setsigmask=_BLOCKED_AT_START,
        )
    except BaseException:
        os.close(stdin_w)
        raise
    finally:
        os.close(stdin_r)
        os.close(log)
    try:
        view = memoryview(secrets)
        while view:
            view = view[os.write(stdin_w, view) :]
    except BrokenPipeError:
        pass  # the supervisor died already; its missing status says so
    finally:
        os.close(stdin_w)
    threading.Thread(target=_reap, args=(pid,), name=f"reap-{pid}", daemon=True).start()
    return pid


def _reap(pid: int) -> None:
    # ChildProcessError: reaped elsewhere (SIGCHLD ignored, or a waitpid(-1) here).
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, readable by this user only."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_status(run_dir: Path) -> SupervisorStatus | None:
    """The run's status.json, or None when the supervisor has not written it yet.

    A torn or partial file is read once more; raises TargetError if it is still not a
    valid status.
    """
    path = Path(run_dir) / STATUS_FILE
    for attempt in range(2):
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TargetError(f"local: cannot read {path}") from exc
        try:
            return _parse_status(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            if attempt:
                raise TargetError(f"local: {path} is not a valid status: {exc}") from exc
            time.sleep(POLL_SECONDS)
    raise AssertionError("unreachable")


def _parse_status(doc: dict[str, Any]) -> SupervisorStatus:
    phase = doc["phase"]
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}")
    return SupervisorStatus(
        phase=phase,
        supervisor_pid=int(doc["supervisorPid"]),
        supervisor_start=_optional_int(doc["supervisorStart"]),
        child_pid=_optional_int(doc["childPid"]),
        pgid=_optional_int(doc["pgid"]),
        started_at=_optional_time(doc["startedAt"]),
        ended_at=_optional_time(doc["endedAt"]),
        exit_code=_optional_int(doc["exitCode"]),
        signal=_optional_int(doc["signal"]),
        outcome=doc["outcome"],
        message=doc["message"],
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _read_stat(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(b")", 1)[1].split()


def _start_time(pid: int) -> int | None:
    fields = _read_stat(pid)
    return None if fields is None else int(fields[19])


def process_alive(pid: int, start_time: int | None) -> bool:
    """Whether `pid` is a live process (not a zombie) and, when `start_time` is given,
    the same process that had that /proc start time (not a reused pid)."""
    if pid <= 0:
        return False
    fields = _read_stat(pid)
    if fields is None or fields[0] in (b"Z", b"X", b"x"):
        return False
    return start_time is None or int(fields[19]) == start_time


def group_pids(pgid: int) -> list[int]:
    """The live (non-zombie) processes of process group `pgid`, by pid."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _read_stat(entry.name)
        if fields is not None and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry.name))
    return sorted(members)


def kill_group(pgid: int) -> None:
    """SIGKILL every process of group `pgid`; a group that is gone is fine.
    Raises TargetError when the group belongs to someone we may not signal."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise TargetError(f"local: not allowed to kill process group {pgid}") from exc


def request_stop(run_dir: Path) -> bool:
    """Ask a run to stop; returns whether anything was signalled.

    A live supervisor gets SIGTERM and escalates on its own (SIGTERM to the job's
    group, SIGKILL after the grace period). When the supervisor is dead but the job's
    group lives on, the group gets SIGTERM, then SIGKILL after the grace period; this
    call then waits that long.
    """
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    if status is not None and status.phase == "exited":
        return False
    supervisor = (
        (status.supervisor_pid, status.supervisor_start)
        if status is not None
        else _read_pid_file(run_dir)
    )
    if supervisor is not None and process_alive(*supervisor):
        try:
            os.kill(supervisor[0], signal.SIGTERM)
            return True
        except ProcessLookupError:
            pass  # it died just now; look again at what it left
    status = read_status(run_dir)
    if status is None or status.phase == "exited" or status.pgid is None:
        return False
    if not group_pids(status.pgid):
        return False
    try:
        os.killpg(status.pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + _grace_seconds(run_dir)
    while group_pids(status.pgid) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    kill_group(status.pgid)
    return True


def _read_pid_file(run_dir: Path) -> tuple[int, int | None] | None:
    try:
        pid, start = (run_dir / PID_FILE).read_text().split()
    except (OSError, ValueError):
        return None
    return int(pid), None if start == "None" else int(start)


def _grace_seconds(run_dir: Path) -> float:
    try:
        return float(json.loads((run_dir / LAUNCH_FILE).read_bytes())["graceSeconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def wait_status(run_dir: Path, *, phase: str, timeout: float) -> SupervisorStatus | None:
    """Poll status.json until it reaches `phase` (or a later one) and return it.

    If the supervisor dies first, returns the status it left, which has not reached
    `phase` (check it) or is None. Returns None when `timeout` seconds pass first.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
    wanted = PHASES.index(phase)
    deadline = time.monotonic() + timeout
    run_dir = Path(run_dir)
    while True:
        status = read_status(run_dir)
        if status is not None and PHASES.index(status.phase) >= wanted:
            return status
        supervisor = (
            (status.supervisor_pid, status.supervisor_start)
            if status is not None
            else _read_pid_file(run_dir)
        )
        if supervisor is not None and not process_alive(*supervisor):
            return read_status(run_dir)
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_SECONDS)
