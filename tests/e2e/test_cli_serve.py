"""The installed `reconciler serve` and `status` on temp jobs repos: auto-sync, invalid
commits, drafts, DST nights, disabled/suspended/removed jobs, concurrency policies with
real processes, drift, status and metrics, JSON logs, SIGTERM and re-attachment, and a
repo followed through a URL.

Time is the clock file's (`RECONCILER_CLOCK_FILE`): serve only moves when a test moves
it; waits poll with deadlines. Runs use `--record-only` unless their processes matter.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from reconciler.store import Store
from reconciler.store.fires import Fire, FireStore
from tests.conftest import commit_tree, make_jobs_repo
from tests.integration.test_serve_exactly_once import (
    ClockFile,
    Serve,
    clean_env,
    read_runs,
    reconciler,
    start_serve,
    wait_for,
)

T = TypeVar("T")
EVERY = "command: {cmd: 'true'}\nschedules:\n  - {id: minutely, cron: \"* * * * *\"}\n"


def every(**fields: str) -> str:
    extra = "".join(f"{k}: {v}\n" for k, v in fields.items())
    return extra + EVERY


@dataclass
class Site:
    """A jobs repo on main with its default SQLite store, a clock file and serve processes."""

    repo: Path
    clock: ClockFile
    env: dict[str, str]
    tmp: Path
    serves: list[Serve]

    @property
    def url(self) -> str:
        return f"sqlite:///{self.repo / '.reconciler' / 'state.db'}"

    def serve(self, *args: str, record_only: bool = True, log: str = "serve.log") -> Serve:
        extra = ("--record-only",) if record_only else ()
        serve = start_serve(
            "--repo",
            str(self.repo),
            "--interval",
            "1",
            "--lease-ttl",
            "6",
            *extra,
            *args,
            env=self.env,
            log=self.tmp / log,
            cwd=self.repo,
        )
        self.serves.append(serve)
        wait_for("serve to lead", lambda: "became leader" in serve.output() or not serve.alive())
        assert serve.alive(), serve.output()
        return serve

    def write(self, files: dict[str, str | None]) -> str:
        for path, text in files.items():
            full = self.repo / path
            if text is None:
                full.unlink()
            else:
                full.parent.mkdir(parents=True, exist_ok=True)
                full.write_text(text, encoding="utf-8")
        return commit_tree(self.repo, "change")

    def ok(self, *args: str) -> str:
        result = reconciler(*args, env=self.env, cwd=self.repo)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.ok("status", "--output", "json"))
        return body

    def applied(self) -> str | None:
        if not (self.repo / ".reconciler" / "state.db").exists():
            return None
        with Store.open(self.url, migrate=False) as store:
            return store.read_state().commit

    def wait_applied(self, commit: str) -> None:
        """Nudge the clock (a sync is due each clock second) until `commit` is applied."""
        self.until(f"{commit[:12]} to be applied", lambda: self.applied() == commit)

    def until(self, what: str, check: Callable[[], T | None], step: float = 0.25) -> T:
        """Poll `check`, moving the clock by `step` seconds between looks."""

        def look() -> T | None:
            value = check()
            if not value:
                self.clock.advance(step)
            return value

        return wait_for(what, look)

    def walk(self, seconds: float, step: float = 5.0, pause: float = 0.03) -> None:
        target = self.clock.now + timedelta(seconds=seconds)
        while self.clock.now < target:
            self.clock.set(min(target, self.clock.now + timedelta(seconds=step)))
            time.sleep(pause)

    def fires(self, job: str | None = None) -> list[Fire]:
        with Store.open(self.url, migrate=False) as store:
            rows = FireStore(store).list()
        return [f for f in rows if job is None or f.job_id == job]

    def decided(self, job: str, schedule: str, at: datetime) -> None:
        """Wait until the ledger has decided `job`/`schedule` at `at` (nudging the clock)."""

        def done() -> bool:
            with Store.open(self.url, migrate=False) as store:
                cursor = FireStore(store).read_cursors().get((job, schedule))  # type: ignore[arg-type]
            return cursor is not None and cursor.cursor_at >= at

        if self.clock.now < at:
            self.walk((at - self.clock.now).total_seconds())
        self.until(f"{job}/{schedule} decided up to {at}", done, step=0.05)

    def sql(self, statement: str) -> None:
        with sqlite3.connect(self.repo / ".reconciler" / "state.db") as conn:
            conn.execute(statement)


@pytest.fixture
def site_factory(tmp_path: Path) -> Iterator[Callable[..., Site]]:
    sites: list[Site] = []

    def make(files: dict[str, str], start: datetime, *, apply: bool = True) -> Site:
        tmp = tmp_path / f"site{len(sites)}"
        repo = make_jobs_repo(tmp / "jobs", files)
        clock = ClockFile(tmp / "clock", start)
        env = clean_env(RECONCILER_CLOCK_FILE=str(clock.path), RECONCILER_USER="ci")
        site = Site(repo, clock, env, tmp, [])
        if apply:
            site.ok("apply", "--yes")
        sites.append(site)
        return site

    yield make
    for site in sites:
        for serve in site.serves:
            if serve.alive():
                serve.kill()


def minutes(start: datetime, first: int, last: int) -> list[datetime]:
    return [start + timedelta(minutes=m) for m in range(first, last + 1)]


T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


# --- auto-sync, invalid commits, drafts, status, metrics, JSON logs, SIGTERM -----------------


def test_serve_follows_main_reports_a_bad_commit_once_ignores_drafts_and_shows_its_state(
    site_factory: Callable[..., Site],
) -> None:
    site = site_factory({"jobs/every.yaml": EVERY}, T0, apply=False)
    serve = site.serve("--listen", "127.0.0.1:0", "--log-format", "json")
    first = subprocess.run(
        ["git", "-C", str(site.repo), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    site.wait_applied(first)
    added = site.write({"jobs/added.yaml": EVERY})
    site.wait_applied(added)
    history = json.loads(site.ok("history", "--output", "json"))
    assert [(h["commit"], h["user"]) for h in history[:2]] == [(added, "serve"), (first, "serve")]

    # A draft branch never fires.
    subprocess.run(["git", "-C", str(site.repo), "checkout", "-q", "-b", "draft"], check=True)
    site.write({"jobs/drafty.yaml": EVERY})
    subprocess.run(["git", "-C", str(site.repo), "checkout", "-q", "main"], check=True)

    # An invalid commit on main is not applied; the last good version keeps firing.
    bad = site.write({"jobs/added.yaml": EVERY.replace("minutely", "M")})
    site.until("the sync error", lambda: site.status()["lastSyncError"])
    error = site.status()["lastSyncError"]
    assert error["commit"] == bad
    assert "jobs/added.yaml:3:" in error["message"]
    site.walk(5 * 60)
    site.decided("added", "minutely", site.clock.now.replace(second=0))
    assert site.applied() == added
    fired = [f for f in site.fires("added") if f.outcome == "FIRED"]
    assert len(fired) >= 5
    assert not site.fires("drafty")
    lines = [json.loads(line) for line in serve.output().splitlines()]  # every line is JSON
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 1, errors
    assert "jobs/added.yaml:3:" in errors[0]["message"]

    # status --output json
    body = site.status()
    assert body["leader"]["pid"] == serve.pid
    assert body["leader"]["replica"]
    assert body["leader"]["leaseExpiresAt"].endswith("Z")
    assert body["lastSyncedCommit"] == added
    assert body["lastSyncedAt"].endswith("Z")
    assert len(body["nextFires"]) == 10
    assert body["nextFires"][0]["at"] > site.clock.now.isoformat()[:19]
    assert body["runs"] == {"running": 0, "waiting": 0, "active": []}
    assert body["queueDepth"] == 0

    # /healthz and /metrics
    port = _listen_port(serve)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
        assert reply.status == 200
        assert "leader" in reply.read().decode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        metrics = reply.read().decode()
    for name in (
        'reconciler_fires_total{outcome="FIRED"}',
        "reconciler_fire_lateness_seconds_bucket",
        'reconciler_runs{state="RUNNING"}',
        "reconciler_sync_duration_seconds_count",
        "reconciler_last_sync_timestamp_seconds",
        "reconciler_is_leader 1.0",
    ):
        assert name in metrics, name

    # Fixing main applies again and clears the error.
    good = site.write({"jobs/added.yaml": EVERY})
    site.wait_applied(good)
    assert site.status()["lastSyncError"] is None

    # SIGTERM: exit 0, the lease is released: another serve leads with the clock frozen.
    assert serve.terminate() == 0
    assert site.status()["leader"] is None
    site.serve()


def _listen_port(serve: Serve) -> int:
    """The port `--listen 127.0.0.1:0` bound, read from /proc (the log does not say)."""
    out = subprocess.run(
        ["ss", "-ltnpH"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for line in out:
        if f"pid={serve.pid}," in line:
            return int(line.split()[3].rsplit(":", 1)[1])
    pytest.fail(f"serve (pid {serve.pid}) listens on no port")


# --- DST ---------------------------------------------------------------------------------------


def test_a_fixed_time_berlin_schedule_fires_once_on_both_dst_nights(
    site_factory: Callable[..., Site],
) -> None:
    files = {
        "jobs/nightly.yaml": "command: {cmd: 'true'}\n"
        'schedules:\n  - {id: nightly, cron: "30 2 * * *", timezone: Europe/Berlin}\n'
        '  - {id: hourly, cron: "0 * * * *"}\n'  # decided in the same tick: a sentinel
    }
    spring = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    site = site_factory(files, spring)
    site.serve()
    site.walk(4 * 3600, step=300)  # 00:00-04:00 local, 02:00-03:00 skipped
    site.decided("nightly", "hourly", spring + timedelta(hours=4))
    fall = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    site.clock.set(fall)
    site.walk(4 * 3600, step=300)  # 00:00-05:00 local, 02:00-03:00 twice
    site.decided("nightly", "hourly", fall + timedelta(hours=4))
    rows = [f for f in site.fires("nightly") if f.schedule_id == "nightly"]
    night = [f for f in rows if spring < f.scheduled_at <= spring + timedelta(hours=4)]
    assert [(f.scheduled_at, f.outcome) for f in night] == [
        (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "FIRED")  # 03:00 CEST, after the gap
    ]
    night = [f for f in rows if fall < f.scheduled_at <= fall + timedelta(hours=4)]
    assert [(f.scheduled_at, f.outcome) for f in night] == [
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "FIRED")  # the first 02:30 (CEST) only
    ]


# --- enabled, suspended, removed ---------------------------------------------------------------


def test_disabled_suspended_and_removed_jobs_fire_nothing_from_the_stopped_period(
    site_factory: Callable[..., Site],
) -> None:
    files = {"jobs/toggled.yaml": EVERY, "jobs/paused.yaml": EVERY, "jobs/removed.yaml": EVERY}
    site = site_factory(files, T0)
    site.serve()
    for job in files:
        site.decided(job.split("/")[1][:-5], "minutely", T0 + timedelta(minutes=3))
    stopped = site.write(
        {
            "jobs/toggled.yaml": EVERY.replace('"* * * * *"', '"* * * * *", enabled: false'),
            "jobs/paused.yaml": every(suspended="true"),
            "jobs/removed.yaml": None,
        }
    )
    site.wait_applied(stopped)
    stopped_at = site.clock.now
    site.walk(10 * 60)
    resumed = site.write({"jobs/toggled.yaml": EVERY, "jobs/paused.yaml": EVERY})
    site.wait_applied(resumed)
    resumed_at = site.clock.now
    site.walk(3 * 60)
    end = site.clock.now.replace(second=0)
    for job in ("toggled", "paused"):
        site.decided(job, "minutely", end)
        rows = site.fires(job)
        assert all(f.outcome == "FIRED" for f in rows), rows
        times = [f.scheduled_at for f in rows]
        assert not [t for t in times if stopped_at < t <= resumed_at], job
        assert [t for t in times if t <= stopped_at] == minutes(T0, 1, 3)
        assert [t for t in times if t > resumed_at] == [
            t for t in minutes(T0, 0, 60) if resumed_at < t <= end
        ]
    removed = site.fires("removed")
    assert [f.scheduled_at for f in removed] == minutes(T0, 1, 3)
    runs = json.loads(site.ok("runs", "removed", "--output", "json"))["jobRuns"]
    assert sorted(r["id"] for r in runs) == sorted(str(f.run_id) for f in removed)


# --- concurrency policies with real processes --------------------------------------------------

GATE = 'i=0; while [ ! -e "$2" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done'


def gated(gate: Path, policy: str) -> str:
    return (
        f"arguments: {{gate: {gate}}}\n"
        f"command: {{cmd: '{GATE}; echo released'}}\n"
        "taskKillGracePeriodSeconds: 1\n"
        f'schedules:\n  - {{id: minutely, cron: "* * * * *", concurrencyPolicy: {policy}}}\n'
    )


def running(site: Site, job: str) -> list[str]:
    """Wait until `job` has a RUNNING run (nudging the clock); the ids of its RUNNING runs."""

    def look() -> list[str]:
        return [run_id for run_id, state in run_states(site, job) if state == "RUNNING"]

    return site.until(f"a run of {job} to run", look)


def run_states(site: Site, job: str) -> list[tuple[str, str]]:
    return sorted((r.id, r.state) for r in read_runs(site.url) if r.job_id == job)


def test_forbid_skips_while_a_run_is_active_and_replace_stops_it_then_starts(
    site_factory: Callable[..., Site], tmp_path: Path
) -> None:
    gate_forbid, gate_replace = tmp_path / "gate-forbid", tmp_path / "gate-replace"
    files = {
        "jobs/forbid.yaml": gated(gate_forbid, "FORBID"),
        "jobs/replace.yaml": gated(gate_replace, "REPLACE"),
    }
    start = T0 + timedelta(seconds=50)
    site = site_factory(files, start)
    site.serve(record_only=False)
    site.clock.set(T0 + timedelta(minutes=1))
    first = {job: running(site, job)[0] for job in ("forbid", "replace")}
    site.clock.set(T0 + timedelta(minutes=2))
    site.decided("forbid", "minutely", T0 + timedelta(minutes=2))
    site.decided("replace", "minutely", T0 + timedelta(minutes=2))
    skipped = [f for f in site.fires("forbid") if f.scheduled_at == T0 + timedelta(minutes=2)]
    assert [(f.outcome, (f.reason or "")[:6]) for f in skipped] == [("SKIPPED", "FORBID")]
    assert run_states(site, "forbid") == [(first["forbid"], "RUNNING")]
    second = [f for f in site.fires("replace") if f.scheduled_at == T0 + timedelta(minutes=2)]
    assert [f.outcome for f in second] == ["FIRED"]
    new = second[0].run_id
    assert new is not None
    site.until(
        "the replaced run to stop and the new one to run",
        lambda: dict(run_states(site, "replace")) == {first["replace"]: "STOPPED", new: "RUNNING"},
    )
    gate_forbid.touch()
    gate_replace.touch()
    site.until(
        "both to succeed",
        lambda: dict(run_states(site, "forbid")) == {first["forbid"]: "SUCCEEDED"},
    )
    site.until(
        "the new one to succeed", lambda: dict(run_states(site, "replace"))[new] == "SUCCEEDED"
    )


# --- drift ---------------------------------------------------------------------------------------


def test_an_edited_applied_row_is_drift_reported_with_no_self_heal_and_healed_otherwise(
    site_factory: Callable[..., Site],
) -> None:
    site = site_factory({"jobs/every.yaml": EVERY}, T0)
    applies = len(json.loads(site.ok("history", "--output", "json")))
    site.sql("UPDATE applied_jobs SET content_hash = 'edited' WHERE job_id = 'every'")
    serve = site.serve("--no-self-heal")
    drift = site.until("drift to be reported", lambda: site.status()["drift"])
    assert "differ" in drift["reason"]
    site.walk(5)
    assert "not healing" in serve.output()
    assert len(json.loads(site.ok("history", "--output", "json"))) == applies
    assert serve.terminate() == 0
    healer = site.serve()
    site.until("drift to be healed", lambda: site.status()["drift"] is None)
    assert "healed drift" in healer.output()
    history = json.loads(site.ok("history", "--output", "json"))
    assert len(history) == applies + 1
    assert history[0]["user"] == "serve"
    with sqlite3.connect(site.repo / ".reconciler" / "state.db") as conn:
        (content_hash,) = conn.execute(
            "SELECT content_hash FROM applied_jobs WHERE job_id = 'every'"
        ).fetchone()
    assert content_hash != "edited"


# --- SIGTERM with a running run, re-attachment ----------------------------------------------------


def test_sigterm_leaves_runs_running_and_the_next_serve_records_their_end(
    site_factory: Callable[..., Site], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    site = site_factory({"jobs/long.yaml": gated(gate, "ALLOW")}, T0 + timedelta(seconds=55))
    serve = site.serve(record_only=False)
    site.clock.set(T0 + timedelta(minutes=1))
    (run_id,) = running(site, "long")
    started = time.monotonic()
    assert serve.terminate(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert site.status()["leader"] is None
    gate.touch()  # the job ends while no serve runs
    time.sleep(0.5)
    assert dict(run_states(site, "long"))[run_id] == "RUNNING"
    site.serve(record_only=False)  # leads at once: the lease was released
    site.until(
        "the run's end to be recorded",
        lambda: dict(run_states(site, "long"))[run_id] == "SUCCEEDED",
    )


# --- a repo followed through a URL -----------------------------------------------------------


@pytest.mark.parametrize("form", ["url", "bare-path"])
def test_serve_clones_a_url_or_bare_repo_into_its_state_dir_and_follows_pushes(
    site_factory: Callable[..., Site], tmp_path: Path, form: str
) -> None:
    origin = site_factory({"jobs/every.yaml": EVERY}, T0, apply=False)
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(origin.repo), str(bare)], check=True)
    state_dir = tmp_path / "state"
    repo_arg = bare.as_uri() if form == "url" else str(bare)
    serve = start_serve(
        "--repo",
        repo_arg,
        "--state-dir",
        str(state_dir),
        "--interval",
        "1",
        "--lease-ttl",
        "6",
        "--record-only",
        env=origin.env,
        log=tmp_path / "url.log",
    )
    origin.serves.append(serve)
    clone = state_dir / "jobs-repo"
    follower = Site(clone, origin.clock, origin.env, tmp_path, [])
    head = subprocess.run(
        ["git", "-C", str(origin.repo), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    wait_for("the clone", lambda: (clone / ".git").exists() or not serve.alive())
    assert serve.alive(), serve.output()
    follower.wait_applied(head)
    pushed = origin.write({"jobs/added.yaml": EVERY})
    subprocess.run(["git", "-C", str(origin.repo), "push", "-q", str(bare), "main"], check=True)
    follower.wait_applied(pushed)
    assert follower.status()["lastSyncedCommit"] == pushed  # status run in the clone finds it
    assert serve.terminate() == 0
