"""The local run supervisor with real processes: outcomes, logs, redaction, timeouts,
stops, survival of its launcher, death of the supervisor, and the finish program."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.targets.local.launcher import (
    Launch,
    SupervisorStatus,
    group_pids,
    kill_group,
    process_alive,
    read_status,
    request_stop,
    start_supervised,
    wait_status,
)

SUPERVISOR = Path(__file__).resolve().parents[2] / "reconciler/targets/local/supervisor.py"
WAIT = 15.0  # a deadline, not an expectation: every wait below polls


def launch_of(
    tmp_path: Path,
    argv: list[str],
    *,
    timeout: int | None = None,
    grace: int = 1,
    finish: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Launch:
    return Launch(
        argv=argv,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], **(env or {})},
        timeout_seconds=timeout,
        grace_seconds=grace,
        stdout=tmp_path / "logs" / "stdout.log",
        stderr=tmp_path / "logs" / "stderr.log",
        finish=finish,
    )


def run_to_end(
    run_dir: Path, launch: Launch, secrets: dict[str, str] | None = None
) -> SupervisorStatus:
    start_supervised(run_dir, launch, secrets or {})
    status = wait_status(run_dir, phase="exited", timeout=WAIT)
    assert status is not None, "the run did not end in time"
    assert status.phase == "exited"
    return status


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def assert_group_gone(pgid: int | None) -> None:
    assert pgid is not None
    wait_for(lambda: not group_pids(pgid), f"process group {pgid} to end")


def test_a_run_that_prints_succeeds_with_its_output_in_the_log_files(tmp_path: Path) -> None:
    launch = launch_of(tmp_path, ["sh", "-c", 'echo "out $1"; echo err >&2', "sh", "one"])

    status = run_to_end(tmp_path / "run", launch)

    assert (status.outcome, status.exit_code, status.signal) == ("SUCCEEDED", 0, None)
    assert status.child_pid == status.pgid
    assert status.started_at is not None
    assert status.ended_at is not None
    assert status.started_at <= status.ended_at
    assert launch.stdout.read_text() == "out one\n"
    assert launch.stderr.read_text() == "err\n"
    assert_group_gone(status.pgid)


def test_a_nonzero_exit_is_failed_with_its_exit_code(tmp_path: Path) -> None:
    status = run_to_end(tmp_path / "run", launch_of(tmp_path, ["sh", "-c", "exit 3"]))

    assert (status.outcome, status.exit_code, status.signal) == ("FAILED", 3, None)


@pytest.mark.parametrize(
    ("argv", "cwd", "named"),
    [
        (["no-such-program-xyz"], None, "no-such-program-xyz"),
        (["true"], "no-such-dir", "no-such-dir"),
    ],
)
def test_a_job_that_cannot_start_is_failed_with_a_message_naming_why(
    tmp_path: Path, argv: list[str], cwd: str | None, named: str
) -> None:
    launch = launch_of(tmp_path, argv)
    if cwd is not None:
        launch = dataclasses.replace(launch, cwd=tmp_path / cwd)

    status = run_to_end(tmp_path / "run", launch)

    assert (status.outcome, status.exit_code, status.child_pid) == ("FAILED", 127, None)
    assert status.message is not None
    assert named in status.message


def test_the_job_gets_its_env_cwd_and_the_secrets_but_not_the_callers_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_TEST_LEAK", "leaked")
    script = 'pwd; echo "$PLAIN $RECONCILER_TEST_LEAK"; [ -t 0 ] || cat; echo "stdin done"'
    launch = launch_of(tmp_path, ["sh", "-c", script], env={"PLAIN": "plain"})

    run_to_end(tmp_path / "run", launch, {"TOKEN": "x"})

    assert launch.stdout.read_text() == f"{tmp_path}\nplain \nstdin done\n"


def test_secret_values_are_redacted_from_logs_even_when_split_across_writes(
    tmp_path: Path,
) -> None:
    secret = "s3cr3t-Value-42"
    out = tmp_path / "logs" / "stdout.log"
    # The second half is written only once the supervisor has logged the first write,
    # so the secret surely arrives in two reads.
    script = (
        'printf "whole %s\\n" "$TOKEN"; printf "err %s\\n" "$TOKEN" >&2; '
        'printf "before\\nxx%s" "$FIRST"; '
        'while ! grep -q before "$OUT"; do sleep 0.01; done; '
        'printf "%s after\\n" "$SECOND"'
    )
    env = {"FIRST": secret[:6], "SECOND": secret[6:], "OUT": str(out)}
    launch = launch_of(tmp_path, ["sh", "-c", script], env=env)
    run_dir = tmp_path / "run"

    status = run_to_end(run_dir, launch, {"TOKEN": secret})

    assert status.outcome == "SUCCEEDED"
    assert out.read_text() == "whole ****\nbefore\nxx**** after\n"
    assert launch.stderr.read_text() == "err ****\n"
    for name in ("status.json", "launch.json", "supervisor.log"):
        assert secret not in (run_dir / name).read_text(), name
    assert (run_dir / "launch.json").stat().st_mode & 0o777 == 0o600


def test_a_run_past_its_timeout_is_timeout_and_its_group_is_gone(tmp_path: Path) -> None:
    script = 'sleep 1000 & echo $! > "$1"; sleep 1000'
    grandchild_file = tmp_path / "grandchild.pid"
    launch = launch_of(tmp_path, ["sh", "-c", script, "sh", str(grandchild_file)], timeout=1)

    status = run_to_end(tmp_path / "run", launch)

    assert (status.outcome, status.exit_code, status.signal) == ("TIMEOUT", None, signal.SIGTERM)
    assert_group_gone(status.pgid)
    assert not process_alive(int(grandchild_file.read_text()), None)


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_period_with_its_grandchild(
    tmp_path: Path,
) -> None:
    # `trap "" TERM` makes the shell and everything it starts ignore SIGTERM.
    script = 'trap "" TERM; sleep 1000 & echo $! > "$1"; while :; do sleep 0.05; done'
    grandchild_file = tmp_path / "grandchild.pid"
    launch = launch_of(tmp_path, ["sh", "-c", script, "sh", str(grandchild_file)], timeout=1)

    status = run_to_end(tmp_path / "run", launch)

    assert (status.outcome, status.signal) == ("TIMEOUT", signal.SIGKILL)
    assert status.message is not None
    assert "SIGTERM" in status.message
    assert_group_gone(status.pgid)
    grandchild = int(grandchild_file.read_text())
    wait_for(lambda: not process_alive(grandchild, None), "the grandchild to end")


def test_request_stop_ends_a_run_as_stopped(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    start_supervised(run_dir, launch_of(tmp_path, ["sleep", "1000"], grace=5), {})
    running = wait_status(run_dir, phase="running", timeout=WAIT)
    assert running is not None
    assert running.phase == "running"

    assert request_stop(run_dir)

    status = wait_status(run_dir, phase="exited", timeout=WAIT)
    assert status is not None
    assert (status.outcome, status.signal) == ("STOPPED", signal.SIGTERM)
    assert_group_gone(status.pgid)
    assert not request_stop(run_dir)


def test_a_stop_requested_while_the_supervisor_starts_is_not_lost(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    start_supervised(run_dir, launch_of(tmp_path, ["sleep", "1000"]), {})

    assert request_stop(run_dir)  # status.json is not written yet: the pid file serves

    status = wait_status(run_dir, phase="exited", timeout=WAIT)
    assert status is not None
    assert status.outcome == "STOPPED"
    if status.pgid is not None:
        assert_group_gone(status.pgid)


def test_a_stop_after_a_timeout_keeps_the_timeout(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    terminated = tmp_path / "terminated"
    script = "trap 'echo > \"$1\"' TERM; while :; do sleep 0.05; done"
    launch = launch_of(tmp_path, ["sh", "-c", script, "sh", str(terminated)], timeout=1, grace=2)
    start_supervised(run_dir, launch, {})
    wait_for(terminated.exists, "the timeout's SIGTERM")

    assert request_stop(run_dir)

    status = wait_status(run_dir, phase="exited", timeout=WAIT)
    assert status is not None
    assert (status.outcome, status.signal) == ("TIMEOUT", signal.SIGKILL)


@pytest.mark.parametrize("launcher_end", ["exits", "is_killed"])
def test_the_run_survives_the_death_of_the_process_that_launched_it(
    tmp_path: Path, launcher_end: str
) -> None:
    run_dir = tmp_path / "run"
    go = tmp_path / "go"
    script = 'while [ ! -e "$1" ]; do sleep 0.01; done; echo finished'
    launch = launch_of(tmp_path, ["sh", "-c", script, "sh", str(go)])
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from reconciler.targets.local.launcher import Launch, start_supervised\n"
        f"launch = Launch(argv={launch.argv!r}, cwd=Path({str(tmp_path)!r}),"
        f" env={dict(launch.env)!r},"
        f" timeout_seconds=None, grace_seconds=1, stdout=Path({str(launch.stdout)!r}),"
        f" stderr=Path({str(launch.stderr)!r}))\n"
        f"pid, start = start_supervised(Path({str(run_dir)!r}), launch, {{'K': 'v'}})\n"
        "print(pid, flush=True)\n"
        f"if {launcher_end == 'is_killed'}: time.sleep(1000)\n"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None
        supervisor_pid = int(p.stdout.readline())
        if launcher_end == "is_killed":
            p.kill()
        assert p.wait(timeout=WAIT) == (0 if launcher_end == "exits" else -signal.SIGKILL)
    running = wait_status(run_dir, phase="running", timeout=WAIT)
    assert running is not None
    assert running.phase == "running"
    assert running.supervisor_pid == supervisor_pid

    go.touch()

    status = wait_status(run_dir, phase="exited", timeout=WAIT)
    assert status is not None
    assert status.outcome == "SUCCEEDED"
    assert launch.stdout.read_text() == "finished\n"


def test_a_killed_supervisor_leaves_a_running_status_and_kill_group_ends_the_job(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    script = "sleep 1000 & sleep 1000"
    pid, start = start_supervised(run_dir, launch_of(tmp_path, ["sh", "-c", script]), {})
    running = wait_status(run_dir, phase="running", timeout=WAIT)
    assert running is not None
    assert running.pgid is not None
    wait_for(lambda: len(group_pids(running.pgid or 0)) == 3, "the job and its children")

    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not process_alive(pid, start), "the supervisor to die")

    status = read_status(run_dir)
    assert status is not None
    assert status.phase == "running"
    assert not process_alive(status.supervisor_pid, status.supervisor_start)
    assert group_pids(running.pgid), "the job outlives its supervisor until someone looks"
    kill_group(running.pgid)
    assert_group_gone(running.pgid)


def test_request_stop_ends_the_group_itself_when_the_supervisor_is_dead(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    pid, start = start_supervised(run_dir, launch_of(tmp_path, ["sleep", "1000"], grace=1), {})
    running = wait_status(run_dir, phase="running", timeout=WAIT)
    assert running is not None
    assert running.pgid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not process_alive(pid, start), "the supervisor to die")

    assert request_stop(run_dir)

    assert_group_gone(running.pgid)


def test_the_finish_program_is_execed_after_the_final_status(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    seen = tmp_path / "seen.json"
    finish = ["sh", "-c", f'echo "$$" > "{seen}.pid"; cat "{run_dir}/status.json" > "{seen}"']
    pid, _ = start_supervised(run_dir, launch_of(tmp_path, ["true"], finish=finish), {})

    wait_for(lambda: seen.exists() and seen.stat().st_size > 0, "the finish program")

    recorded = json.loads(seen.read_text())
    assert (recorded["phase"], recorded["outcome"]) == ("exited", "SUCCEEDED")
    assert int(Path(f"{seen}.pid").read_text()) == pid, "finish runs under the supervisor's pid"


def test_the_supervisor_imports_only_the_standard_library(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    launch = launch_of(tmp_path, ["true"])
    document = {
        "argv": launch.argv,
        "cwd": str(launch.cwd),
        "env": dict(launch.env),
        "timeoutSeconds": None,
        "graceSeconds": 1,
        "stdout": str(launch.stdout),
        "stderr": str(launch.stderr),
        "finish": None,
    }
    launch.stdout.parent.mkdir()
    (run_dir / "launch.json").write_text(json.dumps(document))

    result = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", str(SUPERVISOR), str(run_dir)],
        input="{}",
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )

    imported = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", result.stderr, re.M)
    assert "supervision" in imported, result.stderr
    assert "_json" in imported, result.stderr
    top_level = {name.split(".")[0] for name in imported} - {"supervision"}
    foreign = sorted(n for n in top_level if n not in sys.stdlib_module_names)
    assert foreign == []
    assert json.loads((run_dir / "status.json").read_text())["outcome"] == "SUCCEEDED"
