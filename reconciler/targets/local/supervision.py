"""The supervision of one local run: one process per run, standard library only.

Runs in the process ``python -I -S supervisor.py RUN_DIR`` (started by
`launcher.start_supervised`, in its own session), with the run's secret environment,
a JSON object, on stdin; `supervisor.py` imports this module as a top-level module
(not as part of the reconciler package) and calls `main`. It reads
``RUN_DIR/launch.json``, starts the job in a new process group, pumps the job's stdout
and stderr into the log files with every secret value replaced by ``****``, enforces the
timeout and stop requests (SIGTERM or SIGINT to this process), writes
``RUN_DIR/status.json`` atomically at each phase, and finally execs the ``finish``
program, if any, under the same pid.

Invariants:

- When status.json says ``exited``, no process of the job's group is left: a timeout or
  stop sends SIGTERM to the group, then SIGKILL after ``graceSeconds``; when the job's
  main process exits, whatever is left of its group is SIGKILLed.
- Secret values reach only the job's environment; never the logs or status.json.
- The first reason to end a run wins: a stop after a timeout stays TIMEOUT.
- SIGHUP is ignored; the finish program starts with SIGTERM, SIGINT and SIGHUP ignored,
  so a late stop request cannot interrupt the recording of the result.

It must start in a few milliseconds, so it imports only C modules of the standard
library (``_json`` and ``_signal`` instead of ``json`` and ``signal``, which pull in
``re`` and ``enum``: ~10 ms), and nothing from the reconciler package or site-packages.
"""

import _json
import os
import select
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
else:
    import _signal

REDACTED = b"****"
READ_SIZE = 65536
# A job's group is SIGKILLed before the pipes are drained, so only a process that left
# the group (setsid) can hold them open; don't wait for it longer than this.
DRAIN_SECONDS = 2.0
# Exit code of a job that could not be started, as a shell reports a missing command.
NOT_STARTED = 127
STOP_SIGNALS = (_signal.SIGTERM, _signal.SIGINT)
JOB_DEFAULT_SIGNALS = (
    _signal.SIGHUP,
    _signal.SIGINT,
    _signal.SIGQUIT,
    _signal.SIGTERM,
    _signal.SIGPIPE,
    _signal.SIGXFSZ,
    _signal.SIGALRM,
    _signal.SIGUSR1,
    _signal.SIGUSR2,
    _signal.SIGCHLD,
    _signal.SIGTSTP,
    _signal.SIGTTIN,
    _signal.SIGTTOU,
)


class _JsonContext:
    """The settings `_json.make_scanner` reads: plain JSON, as `json.loads` parses it."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float


_scan = _json.make_scanner(_JsonContext())  # type: ignore[arg-type]


def parse_json(text: str) -> object:
    """The value of a JSON document; ValueError when it is not one."""
    text = text.strip()
    try:
        value, end = _scan(text, 0)
    except StopIteration as exc:
        raise ValueError("not a JSON document") from exc
    if end != len(text):
        raise ValueError(f"extra data after JSON value at offset {end}")
    return value


def render_json(value: object) -> str:
    """JSON text of a value made of dicts, lists, str, int, bool and None."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    if isinstance(value, list):
        return "[" + ", ".join(render_json(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{render_json(str(k))}: {render_json(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


class Redactor:
    """Replaces secret values in a byte stream that arrives in arbitrary pieces.

    Output equals redacting the whole stream at once (leftmost match; the longest
    secret at one position). Only a tail that could still begin a secret is held back,
    so ordinary output is written as soon as it arrives.
    """

    def __init__(self, secrets: list[bytes]) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.longest = len(self.secrets[0]) if self.secrets else 0
        self.carry = b""

    def feed(self, data: bytes, *, final: bool = False) -> bytes:
        """The redacted output that `data` completes; `final` flushes the held tail."""
        raw = self.carry + data if self.carry else data
        if not self.secrets:
            return raw
        out: list[bytes] = []
        pos = 0
        while True:
            # A match may be taken only if no secret could begin before it and run past
            # the end of what has arrived: it could be longer, or start earlier.
            cut = len(raw) if final else self._pending(raw, pos)
            at, length = self._first_match(raw, pos)
            if length == 0 or at >= cut:
                break
            out.append(raw[pos:at])
            out.append(REDACTED)
            pos = at + length
        out.append(raw[pos:cut])
        self.carry = raw[cut:]
        return b"".join(out)

    def _first_match(self, raw: bytes, pos: int) -> tuple[int, int]:
        best_at, best_len = len(raw), 0
        for secret in self.secrets:  # longest first: a tie keeps the longer one
            at = raw.find(secret, pos, best_at + len(secret))
            if at != -1 and at < best_at:
                best_at, best_len = at, len(secret)
        return best_at, best_len

    def _pending(self, raw: bytes, start: int) -> int:
        """The first position >= start where the rest of `raw` may begin a secret."""
        for at in range(max(start, len(raw) - self.longest + 1), len(raw)):
            tail = raw[at:]
            if any(len(s) > len(tail) and s.startswith(tail) for s in self.secrets):
                return at
        return len(raw)


def utc_now() -> str:
    """The current time as ISO 8601 UTC with microseconds."""
    now = time.time()
    micros = int((now % 1) * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{micros:06d}+00:00"


def start_time_of(pid: int | str) -> int | None:
    """Field 22 (starttime, clock ticks since boot) of /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rsplit(b")", 1)[1].split()[19])


def write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, READ_SIZE):
        chunks.append(chunk)
    return b"".join(chunks)


def find_program(name: str, path: str | None) -> str:
    """The file `name` names, searched in `path` (the job's PATH) as execvp would."""
    if "/" in name:
        return name
    for directory in (path if path is not None else os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(2, "command not found", name)


def kill_group(pgid: int, sig: int) -> None:
    try:  # noqa: SIM105 - contextlib would cost this script ~2 ms of start-up
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def has_exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (its pid keeps pinning the group)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


class Supervisor:
    """One run: its launch document, status and the pumping of its output."""

    def __init__(self, run_dir: str, launch: dict[str, object], secrets: dict[str, str]) -> None:
        self.run_dir = run_dir
        self.argv = [str(a) for a in as_list(launch["argv"])]
        self.cwd = str(launch["cwd"])
        self.env = {str(k): str(v) for k, v in as_dict(launch["env"]).items()}
        self.env.update(secrets)
        timeout = launch.get("timeoutSeconds")
        self.timeout = float(str(timeout)) if timeout is not None else None
        self.grace = float(str(launch.get("graceSeconds") or 0))
        self.log_paths = {1: str(launch["stdout"]), 2: str(launch["stderr"])}
        self.stop_requested = False
        self.status: dict[str, object] = {
            "phase": "running",
            "supervisorPid": os.getpid(),
            "supervisorStart": start_time_of("self"),
            "childPid": None,
            "pgid": None,
            "startedAt": None,
            "endedAt": None,
            "exitCode": None,
            "signal": None,
            "outcome": None,
            "message": None,
        }
        values = [v.encode("utf-8", "surrogateescape") for v in secrets.values()]
        self.redactors = {1: Redactor(values), 2: Redactor(values)}
        self.message_redactor = Redactor(values)

    def on_stop_signal(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def write_status(self, **changes: object) -> None:
        self.status.update(changes)
        message = self.status["message"]
        if isinstance(message, str):
            clean = self.message_redactor.feed(
                message.encode("utf-8", "surrogateescape"), final=True
            )
            self.status["message"] = clean.decode("utf-8", "surrogateescape")
        write_atomically(os.path.join(self.run_dir, "status.json"), render_json(self.status))

    def spawn(self, out_w: int, err_w: int) -> int:
        """Start the job in a new process group; its pid (= the group id)."""
        os.chdir(self.cwd)
        return os.posix_spawn(
            find_program(self.argv[0], self.env.get("PATH")),
            self.argv,
            self.env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
            ],
            setpgroup=0,
            setsigmask=(),
            # Ignored dispositions survive exec (Python ignores SIGPIPE and SIGXFSZ, we
            # ignore SIGHUP, the launcher's caller may ignore more): give the job defaults.
            setsigdef=JOB_DEFAULT_SIGNALS,
        )

    def run(self, wake_fd: int) -> None:
        """Run the job to its end and record the final status."""
        logs = {stream: open_log(path) for stream, path in self.log_paths.items()}
        if self.stop_requested:
            self.write_status(phase="exited", endedAt=utc_now(), outcome="STOPPED")
            return
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            pid = self.spawn(out_w, err_w)
        except OSError as exc:
            self.write_status(
                phase="exited",
                startedAt=utc_now(),
                endedAt=utc_now(),
                exitCode=NOT_STARTED,
                outcome="FAILED",
                message=f"could not start {self.argv[0]!r}: {describe(exc)}",
            )
            return
        finally:
            os.close(out_w)
            os.close(err_w)
        self.status.update(childPid=pid, pgid=pid, startedAt=utc_now())
        try:
            self.write_status()
            outcome, killed = self.watch(pid, {out_r: 1, err_r: 2}, logs, wake_fd)
        except BaseException:
            kill_group(pid, _signal.SIGKILL)  # never leave the job unsupervised
            raise
        _, wait_status = os.waitpid(pid, 0)
        code = os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None
        signum = os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None
        if outcome is None:
            outcome = "SUCCEEDED" if code == 0 else "FAILED"
        message = None
        if killed:
            message = f"the job did not end within {self.grace:g} s of SIGTERM and was killed"
        for log in logs.values():
            os.close(log)
        self.write_status(
            phase="exited",
            endedAt=utc_now(),
            exitCode=code,
            signal=signum,
            outcome=outcome,
            message=message,
        )

    def watch(
        self, pid: int, pipes: dict[int, int], logs: dict[int, int], wake_fd: int
    ) -> tuple[str | None, bool]:
        """Pump output until the job's main process exits, enforcing timeout and stop;
        then SIGKILL the rest of the group and drain the pipes. Returns the outcome
        forced by a timeout or stop (None when the job ended on its own) and whether
        SIGKILL had to end it."""
        poller = select.poll()
        pump = Pump(poller, pipes, logs, self.redactors)
        poller.register(wake_fd, select.POLLIN)
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = -1  # SIGCHLD wakes the poll instead (an older kernel)
        else:
            poller.register(pidfd, select.POLLIN)
        ending = Ending(pgid=pid, timeout=self.timeout, grace=self.grace)
        while not has_exited(pid):
            wait_ms = ending.enforce(time.monotonic(), stop_requested=self.stop_requested)
            for fd, _ in poller.poll(wait_ms):
                if fd in pipes:
                    pump.read(fd)
                elif fd == wake_fd:
                    read_available(wake_fd)
        kill_group(pid, _signal.SIGKILL)
        if pidfd != -1:
            poller.unregister(pidfd)
            os.close(pidfd)
        poller.unregister(wake_fd)
        pump.drain(time.monotonic() + DRAIN_SECONDS)
        return ending.outcome, ending.killed


class Ending:
    """When and how a run is ended early: timeout or stop, SIGTERM, then SIGKILL."""

    def __init__(self, *, pgid: int, timeout: float | None, grace: float) -> None:
        self.pgid = pgid
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.grace = grace
        self.outcome: str | None = None
        self.kill_at: float | None = None
        self.killed = False

    def enforce(self, now: float, *, stop_requested: bool) -> int | None:
        """Signal the group as due at `now`; the poll timeout (ms) until the next step."""
        if self.outcome is None:
            if stop_requested:
                self.outcome = "STOPPED"
            elif self.deadline is not None and now >= self.deadline:
                self.outcome = "TIMEOUT"
            if self.outcome is not None:
                kill_group(self.pgid, _signal.SIGTERM)
                self.kill_at = now + self.grace
        if self.kill_at is not None and now >= self.kill_at:
            kill_group(self.pgid, _signal.SIGKILL)
            self.killed, self.kill_at = True, None
        wake_at = self.deadline if self.outcome is None else self.kill_at
        return None if wake_at is None else max(0, int((wake_at - now) * 1000) + 1)


class Pump:
    """Copies the job's pipes into its log files, redacted, until EOF."""

    def __init__(
        self,
        poller: select.poll,
        pipes: dict[int, int],
        logs: dict[int, int],
        redactors: dict[int, Redactor],
    ) -> None:
        self.poller = poller
        self.pipes = pipes  # read end -> stream (1 stdout, 2 stderr)
        self.logs = logs
        self.redactors = redactors
        for fd in pipes:
            poller.register(fd, select.POLLIN)

    def read(self, fd: int) -> None:
        """Copy what is readable on `fd` to its log; close it at EOF."""
        stream = self.pipes[fd]
        data = os.read(fd, READ_SIZE)
        write_all(self.logs[stream], self.redactors[stream].feed(data, final=not data))
        if not data:
            self.poller.unregister(fd)
            os.close(fd)
            del self.pipes[fd]

    def drain(self, until: float) -> None:
        """Read every pipe to EOF, but not past monotonic time `until`."""
        while self.pipes and (left := until - time.monotonic()) > 0:
            for fd, _ in self.poller.poll(int(left * 1000) + 1):
                self.read(fd)
        for fd, stream in list(self.pipes.items()):
            write_all(self.logs[stream], self.redactors[stream].feed(b"", final=True))
            os.close(fd)
        self.pipes.clear()


def as_list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise ValueError(f"expected a JSON array, got {value!r}")
    return value


def as_dict(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {value!r}")
    return value


def describe(exc: OSError) -> str:
    """An OSError as "reason: 'file'", the way a shell would say it."""
    reason = exc.strerror or str(exc)
    return f"{reason}: {exc.filename!r}" if exc.filename is not None else reason


def open_log(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)


def read_available(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def exec_finish(finish: list[str]) -> None:
    """Replace this process with the finish program; exits 127 if it cannot start."""
    for signum in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
        _signal.signal(signum, _signal.SIG_IGN)
    _signal.set_wakeup_fd(-1)
    try:
        os.execvp(finish[0], finish)
    except OSError as exc:
        sys.stderr.write(f"supervisor: cannot exec finish program {finish!r}: {exc}\n")
        os._exit(NOT_STARTED)


def main(argv: list[str]) -> int:
    """Supervise the run in argv[1]; returns the exit code (when there is no finish)."""
    if len(argv) != 2:
        sys.stderr.write("usage: supervisor.py RUN_DIR  (the secret env as JSON on stdin)\n")
        return 2
    # Descriptors the launcher's process leaked to us must not reach the job.
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    run_dir = os.path.abspath(argv[1])
    with open(os.path.join(run_dir, "launch.json"), encoding="utf-8") as f:
        launch = parse_json(f.read())
    secrets = parse_json(read_all(0).decode("utf-8", "surrogateescape") or "{}")
    secret_env = {str(k): str(v) for k, v in as_dict(secrets).items()}
    supervisor = Supervisor(run_dir, as_dict(launch), secret_env)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    _signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    for signum in STOP_SIGNALS:
        _signal.signal(signum, supervisor.on_stop_signal)
    _signal.signal(_signal.SIGCHLD, lambda signum, frame: None)
    # The launcher starts us with these blocked, so none is lost before the handlers.
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, (_signal.SIGHUP, *STOP_SIGNALS))

    try:
        supervisor.run(wake_r)
    except Exception as exc:
        import traceback  # only on this path: it is slow to import

        traceback.print_exc()
        supervisor.write_status(
            phase="exited", endedAt=utc_now(), outcome=None, message=f"supervisor error: {exc!r}"
        )
    finish = as_dict(launch).get("finish")
    if isinstance(finish, list) and finish:
        exec_finish([str(a) for a in finish])
    return 0
