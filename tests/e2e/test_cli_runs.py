"""The installed `reconciler` command running jobs on this machine: run (arguments, --wait,
--follow), runs, run-info, logs, stop, bookmark and gc, with real supervisors, real
processes, real DuckDB and real git, on a SQLite store outside the repo.

Jobs that must stay running wait for a "gate" file the test creates (a run argument), so
no test depends on how fast this machine is; every wait polls with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.ids import JobId, RunId
from reconciler.runs.record import Run
from reconciler.store import Store
from reconciler.store.runs import RunStore
from reconciler.targets.local.launcher import (
    group_pids,
    kill_group,
    process_alive,
    read_status,
    wait_status,
)
from tests.conftest import commit_tree, make_jobs_repo
from tests.integration.test_venvs import WHEEL_SOURCES, build_wheel

RECONCILER = str(Path(sys.executable).parent / "reconciler")
DEADLINE = 30.0
SECRET = "s3cr3t-Value-91f2"
SECRET_VAR = "RECONCILER_TEST_RUN_SECRET"

# Waits until the file named by the first run argument ($2) exists (at most ~20 s).
GATE = 'i=0; while [ ! -e "$2" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done'


def gated(extra: str = "", **fields: str) -> str:
    lines = [
        "arguments: {gate: /nonexistent}",
        f"command: {{cmd: '{GATE}; echo released{extra}'}}",
        "taskKillGracePeriodSeconds: 1",
    ]
    lines += [f"{key}: {value}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


TRAPPER = (
    "arguments: {mode: hold}\n"
    "command:\n"
    "  cmd: >-\n"
    '    if [ "$2" = quick ]; then exit 0; fi;\n'
    '    trap "" TERM; sleep 100 & echo "grandchild=$!";\n'
    "    i=0; while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n"
    "taskKillGracePeriodSeconds: 1\n"
    "maxConcurrentRuns: 2\n"
)
BOOKMARKED = (
    "bookmark: enable\n"
    'arguments: {n: "1", code: "0"}\n'
    "command:\n"
    "  cmd: >-\n"
    '    echo "in=$(cat "$RECONCILER_BOOKMARK_IN")";\n'
    '    printf \'{"n": %s}\' "$4" > "$RECONCILER_BOOKMARK_OUT";\n'
    '    exit "$2"\n'
)
DAILY_SQL = (
    "CREATE TABLE IF NOT EXISTS seen (d VARCHAR);\n"
    "INSERT INTO seen VALUES ($day);\n"
    "SELECT d, count(*) AS n FROM seen WHERE d = $day GROUP BY d;\n"
)
WHEEL = "tinypkg-0.1-py3-none-any.whl"


def shared_files(tmp: Path) -> dict[str, str]:
    return {
        "reconciler.yaml": (
            "catalogs:\n"
            "  wh: {engine: duckdb, path: wh.duckdb, default: true}\n"
            f"  dir: {{engine: duckdb, path: {tmp / 'catalog-dir'}}}\n"
            f"  junk: {{engine: duckdb, path: {tmp / 'junk.duckdb'}}}\n"
        ),
        "queries/sales/daily.sql": DAILY_SQL,
        "jobs/echo.yaml": (
            "arguments: {day: yesterday, x: one}\n"
            "command: {cmd: 'echo \"args:$#:$*\"; echo to-stderr >&2'}\n"
        ),
        "jobs/argv.yaml": "command: {args: [/bin/echo, 'a;echo pwned']}\n",
        "jobs/exitcode.yaml": (
            'arguments: {code: "0"}\ncommand: {cmd: \'echo "exiting $2"; exit "$2"\'}\n'
        ),
        "jobs/follow.yaml": (
            "arguments: {gate: /nonexistent}\n"
            f"command: {{cmd: 'echo first; {GATE}; echo second; echo third >&2'}}\n"
        ),
        "jobs/killcli.yaml": gated(),
        "jobs/killsup.yaml": gated(),
        "jobs/conc.yaml": gated(),
        "jobs/orphan.yaml": gated(),
        "jobs/deadline.yaml": "timeoutSeconds: 1\ntaskKillGracePeriodSeconds: 1\n"
        "command: {cmd: 'sleep 30'}\n",
        "jobs/slow.yaml": "taskKillGracePeriodSeconds: 1\ncommand: {cmd: 'sleep 30'}\n",
        "jobs/stoppable.yaml": TRAPPER,
        "jobs/retrying.yaml": (
            "restart: {policy: ON_FAILURE, maxAttempts: 3}\n"
            "command: {cmd: 'echo attempt $RECONCILER_ATTEMPT; exit 1'}\n"
        ),
        "jobs/secret.yaml": (
            f"secrets: {{TOKEN: {{fromEnv: {SECRET_VAR}}}}}\n"
            'command: {cmd: \'echo "token=$TOKEN"; echo "err-token=$TOKEN" >&2\'}\n'
        ),
        "jobs/bm.yaml": BOOKMARKED,
        "jobs/sales/daily.yaml": "arguments: {day: '2026-01-01'}\nsql: {query: sales.daily}\n",
        "jobs/py/month.yaml": "python: {file: month.py}\n",
        "jobs/py/month.py": (
            "import json, sys\nprint(json.dumps({'argv': sys.argv[1:], 'prefix': sys.prefix}))\n"
        ),
        "jobs/py/tiny.yaml": (
            f'python: {{wheel: {{package: wheels/{WHEEL}, entryPoint: "tinypkg:main"}}}}\n'
        ),
        "jobs/refuse/image.yaml": "command: {cmd: 'echo hi', image: 'alpine:3'}\n",
        "jobs/refuse/forcepull.yaml": "command: {cmd: 'echo hi', forcePull: true}\n",
        "jobs/refuse/privileged.yaml": "command: {cmd: 'echo hi', privileged: true}\n",
        "jobs/refuse/parameters.yaml": (
            "command: {cmd: 'echo hi', parameters: [{key: a, value: b}]}\n"
        ),
        "jobs/refuse/artifacts.yaml": (
            "command: {cmd: 'echo hi', artifacts: [{uri: 'https://example.com/a.tgz'}]}\n"
        ),
        "jobs/refuse/streaming.yaml": (
            "streaming: {command: {cmd: 'sleep 100'}, desiredState: running}\n"
        ),
        "jobs/refuse/catdir.yaml": "sql: {query: sales.daily, catalog: dir}\n",
        "jobs/refuse/catjunk.yaml": "sql: {query: sales.daily, catalog: junk}\n",
    }


@dataclass(frozen=True, slots=True)
class Workspace:
    """A jobs repo on main, applied, its store (outside the repo) and the command's env."""

    repo: Path
    db_url: str
    env: dict[str, str]
    tmp: Path

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RECONCILER, *args],
            cwd=self.repo,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )

    def ok(self, *args: str, **env: str) -> str:
        result = self.run(*args, **env)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def json(self, *args: str, **env: str) -> Any:
        return json.loads(self.ok(*args, "--output", "json", **env))

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [RECONCILER, *args],
            cwd=self.repo,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def start(self, job: str, *args: str) -> str:
        """`run JOB` without waiting; the new run's id."""
        run_id: str = self.json("run", job, *args)["id"]
        return run_id

    def gate(self, name: str) -> Path:
        return self.tmp / f"gate-{name}"

    def run_dir(self, run_id: str) -> Path:
        return self.repo / ".reconciler" / "runs" / run_id

    def stdout(self, run_id: str) -> str:
        """The run's stdout log, read directly (the `logs` command has its own tests)."""
        return (self.run_dir(run_id) / "stdout.log").read_text()

    def commit(self, message: str) -> str:
        return commit_tree(self.repo, message)

    def git(self, *args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(self.repo), *args], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    # --- the store, read directly (cheap polling, and what "nowhere in the store" means) --

    def runs_of(self, job: str) -> list[Run]:
        with Store.open(self.db_url) as store:
            page, _ = RunStore(store).list_runs([JobId(job)], include_drafts=True, max_results=200)
        return page

    def stored(self, run_id: str) -> Run:
        with Store.open(self.db_url) as store:
            run = RunStore(store).get(RunId(run_id))
        assert run is not None, run_id
        return run

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = DEADLINE) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def wait_state(self, run_id: str, *states: str, timeout: float = DEADLINE) -> Run:
        def reached() -> Run | None:
            run = self.stored(run_id)
            return run if run.state.value in states else None

        run: Run = self.wait_for(f"run {run_id} to be {'/'.join(states)}", reached, timeout)
        return run

    def kill_leftovers(self) -> None:
        """Kill what a failed test may have left running (supervisors and job groups)."""
        runs_dir = self.repo / ".reconciler" / "runs"
        if not runs_dir.exists():
            return
        for run_dir in runs_dir.iterdir():
            status = read_status(run_dir)
            if status is None or status.phase == "exited":
                continue
            if process_alive(status.supervisor_pid, status.supervisor_start):
                os.kill(status.supervisor_pid, signal.SIGKILL)
            if status.pgid is not None:
                kill_group(status.pgid)


def make_workspace(
    tmp: Path, files: dict[str, str], *, binary: dict[str, bytes] | None = None
) -> Workspace:
    repo = make_jobs_repo(tmp / "jobs", files)
    if binary:
        for path, data in binary.items():
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_bytes(data)
        commit_tree(repo, "binary files")
    db_url = f"sqlite:///{tmp / 'state.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")},
        "RECONCILER_DB": db_url,
        "RECONCILER_USER": "ci",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    ws = Workspace(repo=repo, db_url=db_url, env=env, tmp=tmp)
    ws.ok("apply", "--yes")
    return ws


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """One applied jobs repo shared by the tests of this module; each test uses its own jobs."""
    tmp = tmp_path_factory.mktemp("runs-cli")
    (tmp / "catalog-dir").mkdir()
    (tmp / "junk.duckdb").write_text("not a duckdb file\n")
    wheel = build_wheel(WHEEL_SOURCES / "tinypkg", tmp / "wheel-build")
    workspace = make_workspace(
        tmp, shared_files(tmp), binary={f"jobs/py/wheels/{WHEEL}": wheel.read_bytes()}
    )
    yield workspace
    workspace.kill_leftovers()


def last_line_id(out: str) -> str:
    return out.split()[0]


# --- arguments, --wait, --follow -----------------------------------------------------------


def test_a_cmd_gets_arguments_as_positional_parameters_with_defaults_replaced_key_by_key(
    ws: Workspace,
) -> None:
    out = ws.ok("run", "echo", "--arg", "day=today", "--wait")
    run_id = last_line_id(out)
    assert "SUCCEEDED" in out
    assert ws.ok("logs", "echo", run_id, "--stream", "stderr") == "to-stderr\n"
    both = ws.run("logs", "echo", run_id)
    assert (both.stdout, both.stderr) == ("args:4:--day today --x one\n", "to-stderr\n")
    assert dict(ws.stored(run_id).arguments) == {"day": "today", "x": "one"}


def test_args_are_execd_without_a_shell_so_a_semicolon_is_just_a_character(
    ws: Workspace,
) -> None:
    run = ws.json("run", "argv", "--arg", "z=b;echo injected", "--wait")
    assert run["state"] == "SUCCEEDED"
    out = ws.stdout(run["id"])
    assert out == "a;echo pwned --z b;echo injected\n"


def test_run_wait_exits_0_on_succeeded_and_1_on_failed_with_the_exit_code_recorded(
    ws: Workspace,
) -> None:
    assert ws.run("run", "exitcode", "--wait").returncode == 0
    failed = ws.run("run", "exitcode", "--arg", "code=7", "--wait", "--output", "json")
    assert failed.returncode == 1, failed.stderr
    body = json.loads(failed.stdout)
    assert (body["state"], body["exitCode"]) == ("FAILED", 7)
    assert "exited with code 7" in body["errorMessage"]
    # restart policy NEVER (the default): the failure is not retried
    assert [r.state.value for r in ws.runs_of("exitcode")][:2] == ["FAILED", "SUCCEEDED"]


def test_follow_streams_the_output_while_the_run_is_still_running(ws: Workspace) -> None:
    gate = ws.gate("follow")
    with ws.popen("run", "follow", "--arg", f"gate={gate}", "--follow") as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "first\n"
            (run,) = ws.runs_of("follow")
            assert run.state.value == "RUNNING"  # the gate is closed: the job cannot have ended
            gate.touch()
            out, err = process.communicate(timeout=DEADLINE)
        finally:
            process.kill()
    assert process.returncode == 0, err
    assert out.startswith("second\n")
    assert f"{run.id}  follow  SUCCEEDED" in out
    assert "third" in err


# --- the CLI or the supervisor killed --------------------------------------------------


def test_a_run_outlives_its_cli_killed_with_sigkill_and_its_success_is_recorded(
    ws: Workspace,
) -> None:
    gate = ws.gate("killcli")
    with ws.popen("run", "killcli", "--arg", f"gate={gate}", "--wait") as process:
        try:
            run = ws.wait_for(
                "a RUNNING run",
                lambda: [r for r in ws.runs_of("killcli") if r.state.value == "RUNNING"],
            )[0]
        finally:
            process.kill()
        process.communicate(timeout=DEADLINE)
    assert process.returncode == -signal.SIGKILL
    gate.touch()
    ws.wait_state(run.id, "SUCCEEDED")  # recorded by the run's finisher, no CLI call
    (listed,) = ws.json("runs", "killcli")["jobRuns"]
    assert (listed["id"], listed["state"], listed["exitCode"]) == (run.id, "SUCCEEDED", 0)
    assert ws.stdout(run.id) == "released\n"


def test_a_run_whose_supervisor_is_killed_is_marked_error_and_its_process_group_is_gone(
    ws: Workspace,
) -> None:
    run_id = ws.start("killsup", "--arg", f"gate={ws.gate('never')}")
    status = wait_status(ws.run_dir(run_id), phase="running", timeout=DEADLINE)
    assert status is not None
    assert status.phase == "running"
    assert status.pgid is not None
    assert group_pids(status.pgid)
    supervisor = ws.json("run-info", "killsup", run_id)["supervisorPid"]
    assert supervisor == status.supervisor_pid
    os.kill(supervisor, signal.SIGKILL)
    ws.wait_for("the supervisor to die", lambda: not process_alive(supervisor, None))

    (listed,) = ws.json("runs", "killsup")["jobRuns"]
    assert listed["state"] == "ERROR"
    assert "supervisor" in listed["errorMessage"]
    assert "died" in listed["errorMessage"]
    assert group_pids(status.pgid) == []


# --- logs and secrets ------------------------------------------------------------------


def test_a_secret_is_redacted_in_logs_and_appears_nowhere_in_run_info_or_the_store(
    ws: Workspace,
) -> None:
    result = ws.run(
        "run",
        "secret",
        "--arg",
        f"note=x-{SECRET}-y",
        "--wait",
        "--output",
        "json",
        **{SECRET_VAR: SECRET},
    )
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["state"] == "SUCCEEDED"
    assert run["arguments"] == {"note": "x-****-y"}
    both = ws.run("logs", "secret", run["id"])
    assert both.stdout == "token=****\n"
    assert both.stderr == "err-token=****\n"
    info = ws.ok("run-info", "secret", run["id"], "--output", "json")
    assert SECRET not in info
    db = Path(ws.db_url.removeprefix("sqlite:///"))
    for path in [db, *db.parent.glob(db.name + "-*")]:
        assert SECRET.encode() not in path.read_bytes(), path
    for path in ws.run_dir(run["id"]).rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


# --- SQL and Python --------------------------------------------------------------------


def test_a_saved_query_binds_day_from_arguments_on_the_configured_catalog(
    ws: Workspace,
) -> None:
    run = ws.json("run", "sales.daily", "--arg", "day=2026-02-03", "--wait")
    assert run["state"] == "SUCCEEDED", run["errorMessage"]
    result = run["result"]
    assert result["rowCount"] == 1
    assert result["columns"] == ["d", "n"]
    assert result["preview"] == [["2026-02-03", 1]]
    assert run["snapshots"]["sql"]["query"] == "sales.daily"
    info = ws.json("run-info", "sales.daily", run["id"])
    assert info["result"] == result
    assert (ws.repo / ".reconciler" / "wh.duckdb").is_file()  # the catalog of reconciler.yaml


def test_a_python_file_job_gets_its_arguments_as_argv_and_runs_in_a_venv(ws: Workspace) -> None:
    run = ws.json("run", "py.month", "--arg", "month=current", "--wait")
    assert run["state"] == "SUCCEEDED", run["errorMessage"]
    printed = json.loads(ws.stdout(run["id"]))
    assert printed["argv"] == ["--month", "current"]
    venvs = ws.repo / ".reconciler" / "venvs"
    assert Path(printed["prefix"]).parent == venvs
    assert Path(printed["prefix"]) != Path(sys.prefix)


def test_a_wheel_committed_in_the_repo_runs_its_entry_point_and_exit_3_is_failed(
    ws: Workspace,
) -> None:
    result = ws.run("run", "py.tiny", "--arg", "k=v", "--wait", "--output", "json")
    assert result.returncode == 1
    run = json.loads(result.stdout)
    assert (run["state"], run["exitCode"]) == ("FAILED", 3)
    assert run["snapshots"]["wheel"]["file"] == f"jobs/py/wheels/{WHEEL}"
    printed = json.loads(ws.stdout(run["id"]))
    assert printed["argv"] == ["tinypkg:main", "--k", "v"]
    assert Path(printed["prefix"]).parent == ws.repo / ".reconciler" / "venvs"


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ("refuse.image", "command.image is not supported by the local target"),
        ("refuse.streaming", "streaming jobs cannot be run yet"),
        ("refuse.catjunk", "is not a DuckDB database"),
    ],
)
def test_what_the_local_target_cannot_run_is_refused_naming_why_and_nothing_is_recorded(
    ws: Workspace, job: str, expected: str
) -> None:
    runs_dir = ws.repo / ".reconciler" / "runs"
    before = set(runs_dir.iterdir())
    result = ws.run("run", job, "--wait")
    assert result.returncode == 1
    assert expected in result.stderr
    assert result.stderr.startswith(f"error: {job}: ")
    assert "Traceback" not in result.stderr
    assert ws.runs_of(job) == []
    assert set(runs_dir.iterdir()) == before


# --- listing, drafts, predecessors -------------------------------------------------------


def test_runs_are_listed_newest_first_paged_filtered_and_drafts_only_on_request(
    ws: Workspace,
) -> None:
    ws.git("checkout", "--quiet", "-b", "draftbranch")
    try:
        (ws.repo / "jobs" / "listed.yaml").write_text("command: {cmd: 'echo draft'}\n")
        ws.commit("a draft job")
    finally:
        ws.git("checkout", "--quiet", "main")
    draft = ws.run("run", "listed", "--ref", "draftbranch", "--wait", "--output", "json")
    assert draft.returncode == 0, draft.stderr
    draft_run = json.loads(draft.stdout)
    assert draft_run["draft"]["ref"] == "draftbranch"
    assert draft_run["version"] is None
    assert ws.stdout(draft_run["id"]) == "draft\n"

    assert ws.json("runs", "listed")["jobRuns"] == []
    with_drafts = ws.json("runs", "listed", "--drafts")["jobRuns"]
    assert [r["id"] for r in with_drafts] == [draft_run["id"]]
    assert with_drafts[0]["draft"] == {"ref": "draftbranch", "commit": draft_run["commit"]}

    ids = []
    for code in ("0", "1", "0"):
        started = ws.run("run", "exitcode", "--arg", f"code={code}", "--wait", "--output", "json")
        ids.append(json.loads(started.stdout)["id"])
    first = ws.json("runs", "exitcode", "--max-results", "2")
    assert [r["id"] for r in first["jobRuns"]] == [ids[2], ids[1]]  # newest first
    assert first["nextToken"]
    second = ws.json("runs", "exitcode", "--max-results", "2", "--next-token", first["nextToken"])
    assert second["jobRuns"][0]["id"] == ids[0]
    stored = [r.id for r in ws.runs_of("exitcode")]  # newest first, every run of the job
    assert [r["id"] for r in second["jobRuns"]] == stored[2:4]
    failed = ws.json("runs", "exitcode", "--state", "FAILED")["jobRuns"]
    assert ids[1] in [r["id"] for r in failed]
    assert {r["state"] for r in failed} == {"FAILED"}


def test_on_failure_retries_up_to_max_attempts_chained_and_run_info_shows_predecessors(
    ws: Workspace,
) -> None:
    ws.run("run", "retrying", "--wait")
    runs = ws.wait_for(
        "three finished attempts",
        lambda: (
            rs
            if len(rs := ws.runs_of("retrying")) == 3 and all(r.state.is_terminal for r in rs)
            else None
        ),
    )
    oldest_first = runs[::-1]
    assert [r.attempt for r in oldest_first] == [0, 1, 2]
    assert [r.state.value for r in oldest_first] == ["FAILED"] * 3
    assert [r.trigger for r in oldest_first] == ["manual:ci", "retry", "retry"]
    assert [r.previous_run_id for r in oldest_first] == [
        None,
        oldest_first[0].id,
        oldest_first[1].id,
    ]
    last = oldest_first[2]
    info = ws.json("run-info", "retrying", last.id, "--predecessors")
    assert info["previousRunId"] == oldest_first[1].id
    assert [(p["runId"], p["attempt"], p["state"]) for p in info["predecessorRuns"]] == [
        (oldest_first[1].id, 1, "FAILED"),
        (oldest_first[0].id, 0, "FAILED"),
    ]
    time.sleep(0.3)
    assert len(ws.runs_of("retrying")) == 3  # no fourth attempt


# --- stop and timeout -------------------------------------------------------------------


def test_stop_stops_live_runs_kills_trapping_children_and_reports_per_id_errors(
    ws: Workspace,
) -> None:
    finished = ws.json("run", "stoppable", "--arg", "mode=quick", "--wait")["id"]
    live = ws.start("stoppable")
    log = ws.run_dir(live) / "stdout.log"
    line = ws.wait_for("the grandchild's pid", lambda: log.exists() and log.read_text())
    grandchild = int(line.strip().removeprefix("grandchild="))
    assert process_alive(grandchild, None)

    result = ws.run("stop", "stoppable", live, finished, "bogus")
    assert result.returncode == 1
    assert result.stdout == f"stopping {live}\n"
    assert f"{finished}: InvalidInputException: the run already finished (SUCCEEDED)" in (
        result.stderr
    )
    assert "bogus: EntityNotFoundException" in result.stderr
    assert ws.stored(live).state.value in ("STOPPING", "STOPPED")

    stopped = ws.wait_state(live, "STOPPED")
    assert "killed" in (stopped.error_message or "")
    ws.wait_for("the grandchild to be gone", lambda: not process_alive(grandchild, None), 5)

    again = ws.run("stop", "stoppable", live, "--output", "json")
    assert again.returncode == 1
    assert json.loads(again.stdout)["errors"][0]["errorCode"] == "InvalidInputException"


def test_stop_refuses_more_than_25_ids(ws: Workspace) -> None:
    result = ws.run("stop", "stoppable", *[f"jr_{i:032x}" for i in range(26)])
    assert result.returncode == 1
    assert "give 1 to 25 run ids, got 26" in result.stderr


def test_timeout_seconds_and_run_timeout_end_a_sleeping_job_as_timeout(ws: Workspace) -> None:
    for job, extra in (("deadline", []), ("slow", ["--timeout", "1"])):
        result = ws.run("run", job, *extra, "--wait", "--output", "json")
        assert result.returncode == 1, result.stderr
        run = json.loads(result.stdout)
        assert run["state"] == "TIMEOUT"
        assert run["timeout"] == 1
        assert "timeout" in run["errorMessage"]


# --- concurrency ------------------------------------------------------------------------


def test_a_second_run_waits_and_starts_when_the_first_ends_and_no_queue_records_nothing(
    ws: Workspace,
) -> None:
    gate = ws.gate("conc")
    first = ws.start("conc", "--arg", f"gate={gate}")
    second_out = ws.ok("run", "conc", "--arg", f"gate={gate}")
    second = last_line_id(second_out)
    assert "WAITING" in second_out
    refused = ws.run("run", "conc", "--no-queue")
    assert refused.returncode == 1
    assert "ConcurrentRunsExceeded" in refused.stderr
    assert len(ws.runs_of("conc")) == 2

    gate.touch()
    done = ws.wait_state(second, "SUCCEEDED")  # the first run's finisher starts it
    before = ws.stored(first)
    assert before.state.value == "SUCCEEDED"
    assert before.completed_on is not None
    assert done.started_on is not None
    assert done.started_on >= before.completed_on


def test_run_wait_on_a_waiting_run_notices_that_the_run_ahead_lost_its_supervisor(
    ws: Workspace,
) -> None:
    first = ws.start("orphan", "--arg", f"gate={ws.gate('orphan-never')}")
    status = wait_status(ws.run_dir(first), phase="running", timeout=DEADLINE)
    assert status is not None
    assert status.pgid is not None
    with ws.popen("run", "orphan", "--arg", f"gate={ws.gate('orphan')}", "--wait") as process:
        try:
            second = ws.wait_for("a second run", lambda: len(ws.runs_of("orphan")) == 2)
            assert second
            os.kill(status.supervisor_pid, signal.SIGKILL)  # nothing will finish `first` now
            ws.gate("orphan").touch()
            out, err = process.communicate(timeout=DEADLINE)
        finally:
            process.kill()
    assert process.returncode == 0, err
    assert "SUCCEEDED" in out
    assert ws.stored(first).state.value == "ERROR"
    assert group_pids(status.pgid) == []


# --- bookmarks --------------------------------------------------------------------------


def test_a_bookmark_is_committed_only_by_succeeded_runs_and_can_be_reset(ws: Workspace) -> None:
    one = ws.json("run", "bm", "--arg", "n=1", "--wait")
    assert one["state"] == "SUCCEEDED"
    assert ws.stdout(one["id"]) == "in=null\n"
    assert ws.json("bookmark", "get", "bm")["value"] == {"n": 1}

    failed = ws.run("run", "bm", "--arg", "n=2", "--arg", "code=1", "--wait", "--output", "json")
    assert failed.returncode == 1
    failed_id = json.loads(failed.stdout)["id"]
    assert ws.stdout(failed_id) == 'in={"n": 1}\n'
    got = ws.json("bookmark", "get", "bm")
    assert (got["value"], got["runId"]) == ({"n": 1}, one["id"])

    three = ws.json("run", "bm", "--arg", "n=3", "--wait")
    assert three["bookmark"] == {"committed": {"n": 3}}
    listed = {b["jobName"]: b for b in ws.json("bookmark", "list")}
    assert listed["bm"]["value"] == {"n": 3}

    ws.ok("bookmark", "reset", "bm", "--run-id", one["id"])
    assert ws.json("bookmark", "get", "bm")["value"] == {"n": 1}
    ws.ok("bookmark", "reset", "bm")
    assert ws.json("bookmark", "get", "bm") is None


# --- gc and deleted jobs (own repos: they change the store for every job) ---------------


def test_gc_removes_runs_finished_before_retention_with_their_run_directories(
    tmp_path: Path,
) -> None:
    ws = make_workspace(tmp_path, {"jobs/hello.yaml": "command: {cmd: 'echo hello'}\n"})
    ids = [ws.json("run", "hello", "--wait")["id"]]
    assert all(ws.run_dir(i).is_dir() for i in ids)
    assert "removed 0 run(s)" in ws.ok("gc")
    clock = tmp_path / "clock"
    later = datetime.now(UTC) + timedelta(days=91)
    clock.write_text(later.isoformat())
    out = ws.ok("gc", RECONCILER_CLOCK_FILE=str(clock))
    assert "removed 1 run(s) finished more than 90 days ago" in out
    assert ws.runs_of("hello") == []
    assert not any(ws.run_dir(i).exists() for i in ids)


def test_a_deleted_jobs_runs_stay_listed_its_active_run_is_recorded_or_stopped_on_request(
    tmp_path: Path,
) -> None:
    ws = make_workspace(
        tmp_path, {"jobs/old.yaml": gated(), "jobs/gone.yaml": gated(), "jobs/keep.yaml": gated()}
    )
    ws.gate("open").touch()
    done = ws.json("run", "old", "--arg", f"gate={ws.gate('open')}", "--wait")
    assert done["state"] == "SUCCEEDED"
    active = ws.start("old", "--arg", f"gate={ws.gate('old')}")
    (ws.repo / "jobs" / "old.yaml").unlink()
    ws.commit("delete old")
    assert "1 deleted" in ws.ok("apply", "--yes")
    assert ws.stored(active).state.value == "RUNNING"  # deleting a job does not stop its runs

    stopped = ws.start("gone", "--arg", f"gate={ws.gate('gone')}")
    kept = ws.start("keep", "--arg", f"gate={ws.gate('keep')}")
    (ws.repo / "jobs" / "gone.yaml").unlink()
    ws.commit("delete gone")
    out = ws.ok("apply", "--yes", "--stop-running")
    assert "stopping 1 run(s) of deleted job gone" in out
    ws.wait_state(stopped, "STOPPED")
    assert ws.stored(active).state.value == "RUNNING"  # deleted by an earlier apply
    assert ws.stored(kept).state.value == "RUNNING"

    ws.gate("old").touch()
    ws.gate("keep").touch()
    ws.wait_state(active, "SUCCEEDED")
    ws.wait_state(kept, "SUCCEEDED")
    body = ws.json("runs", "old")
    assert [r["id"] for r in body["jobRuns"]] == [active, done["id"]]
    assert [r["state"] for r in body["jobRuns"]] == ["SUCCEEDED", "SUCCEEDED"]
    assert all(r["jobDeleted"] for r in body["jobRuns"])
    assert "(job old is not live: deleted or renamed; its history is kept)" in ws.ok("runs", "old")
