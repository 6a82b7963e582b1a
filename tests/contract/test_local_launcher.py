"""The contract of the local launcher's helpers and the supervisor's pure parts:
process liveness, status files, stop requests on nothing, redaction and JSON."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from reconciler.errors import TargetError
from reconciler.targets.local.launcher import (
    group_pids,
    kill_group,
    process_alive,
    read_status,
    request_stop,
    wait_status,
)
from reconciler.targets.local.supervision import Redactor, parse_json, render_json

STATUS = {
    "phase": "running",
    "supervisorPid": 1234,
    "supervisorStart": 99,
    "childPid": 1240,
    "pgid": 1240,
    "startedAt": "2026-01-15T12:00:00.000001+00:00",
    "endedAt": None,
    "exitCode": None,
    "signal": None,
    "outcome": None,
    "message": None,
}


def own_start_time() -> int:
    stat = Path(f"/proc/{os.getpid()}/stat").read_bytes()
    return int(stat.rsplit(b")", 1)[1].split()[19])


def unused_pid() -> int:
    return next(p for p in range(4_000_000, 3_000_000, -1) if not Path(f"/proc/{p}").exists())


def test_process_alive_knows_this_process_and_refuses_a_reused_pid() -> None:
    assert process_alive(os.getpid(), None)
    assert process_alive(os.getpid(), own_start_time())
    assert not process_alive(os.getpid(), own_start_time() + 1)
    assert not process_alive(unused_pid(), None)
    assert not process_alive(0, None)
    assert not process_alive(-1, None)


def test_a_zombie_is_not_alive() -> None:
    with subprocess.Popen(["true"]) as child:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z":
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert not process_alive(child.pid, None)
        assert child.wait() == 0


def test_read_status_is_none_until_written_and_parses_what_is(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None
    (tmp_path / "status.json").write_text(json.dumps(STATUS))

    status = read_status(tmp_path)

    assert status is not None
    assert (status.phase, status.supervisor_pid, status.pgid) == ("running", 1234, 1240)
    assert status.started_at is not None
    assert status.started_at.utcoffset() is not None
    assert status.ended_at is None


def test_a_status_that_stays_torn_is_a_target_error(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text(json.dumps(STATUS)[:40])

    with pytest.raises(TargetError, match=r"status\.json"):
        read_status(tmp_path)


def test_wait_status_gives_up_at_its_deadline(tmp_path: Path) -> None:
    assert wait_status(tmp_path, phase="exited", timeout=0.02) is None
    with pytest.raises(ValueError, match="phase"):
        wait_status(tmp_path, phase="done", timeout=0.02)


def test_an_exited_status_is_returned_to_a_wait_for_running(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text(json.dumps({**STATUS, "phase": "exited"}))

    status = wait_status(tmp_path, phase="running", timeout=1)

    assert status is not None
    assert status.phase == "exited"


def test_request_stop_signals_nothing_when_there_is_nothing_to_stop(tmp_path: Path) -> None:
    assert not request_stop(tmp_path)
    (tmp_path / "status.json").write_text(json.dumps({**STATUS, "phase": "exited"}))
    assert not request_stop(tmp_path)
    dead = {**STATUS, "supervisorPid": unused_pid(), "pgid": unused_pid(), "childPid": None}
    (tmp_path / "status.json").write_text(json.dumps(dead))
    assert not request_stop(tmp_path)


def test_kill_group_of_a_gone_group_is_fine() -> None:
    pgid = unused_pid()
    kill_group(pgid)
    assert group_pids(pgid) == []


def test_group_pids_lists_the_members_of_a_group() -> None:
    assert os.getpid() in group_pids(os.getpgrp())


SECRETS = [b"abcdef", b"cd", b"xyab", b"zz", b"\xe2\x82\xac\xe2\x82\xac"]
STREAM = b"..abcdef..abcd..xyabcdef..zzz..cd..\xe2\x82\xac\xe2\x82\xac.ab"


def test_redaction_is_the_same_however_the_stream_is_cut() -> None:
    whole = Redactor(SECRETS).feed(STREAM, final=True)
    assert whole == b"..****..ab****..********ef..****z..****..****.ab"
    for cuts in itertools.combinations(range(1, len(STREAM)), 2):
        redactor = Redactor(SECRETS)
        pieces = [STREAM[: cuts[0]], STREAM[cuts[0] : cuts[1]], STREAM[cuts[1] :]]
        out = b"".join(redactor.feed(p) for p in pieces) + redactor.feed(b"", final=True)
        assert out == whole, cuts


def test_redaction_holds_back_only_what_may_begin_a_secret() -> None:
    redactor = Redactor([b"secret"])

    assert redactor.feed(b"line one\nsec") == b"line one\n"
    assert redactor.feed(b"ond\n") == b"second\n"
    assert redactor.feed(b"a secr") == b"a "
    assert redactor.feed(b"et!") == b"****!"


def test_no_secrets_pass_output_through() -> None:
    assert Redactor([b""]).feed(b"anything") == b"anything"


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, -2, None, True, False, 'x"y\\\n\u00e9\U0001f600'], "b": {}},
        [],
        "plain",
        0,
    ],
)
def test_the_supervisors_json_agrees_with_the_json_module(value: object) -> None:
    assert parse_json(render_json(value)) == value
    assert json.loads(render_json(value)) == value
    assert parse_json(json.dumps(value, indent=2)) == value


@pytest.mark.parametrize("text", ["", "{", '{"a": 1} x', "nope"])
def test_the_supervisor_refuses_text_that_is_not_json(text: str) -> None:
    with pytest.raises(ValueError, match=r"JSON|Expecting|Unterminated"):
        parse_json(text)
