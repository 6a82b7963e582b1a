"""Apply under failure, on SQLite and PostgreSQL: a SIGKILLed apply leaves exactly the old
state or exactly the new one and no lock; applies started together record once; a held
lock makes a waiting apply give up with a clear message, and a dead holder frees it.

Knobs: `RECONCILER_KILL_TRIALS` (SQLite kill trials, default 20; PostgreSQL runs a
quarter of them, at least 5) and `RECONCILER_KILL_SEED` (the random seed, printed).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.errors import StoreError
from reconciler.ids import CommitSha
from reconciler.store import Store, applied_rows_hash
from reconciler.store.transaction import APPLICATION_NAME_PREFIX
from reconciler.sync.apply import SavedPlanRef, apply_main
from tests import pg
from tests.conftest import commit_tree, make_jobs_repo

RECONCILER = str(Path(sys.executable).parent / "reconciler")
JOBS = 1_000
KILL_TRIALS = int(os.environ.get("RECONCILER_KILL_TRIALS", "20"))
PG_KILL_TRIALS = max(5, KILL_TRIALS // 4)
NOW = datetime(2026, 1, 20, tzinfo=UTC)
DEADLINE = 60.0
"""Seconds any one subprocess may take before the test fails instead of hanging."""


def run(*args: str, repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RECONCILER, *args, "--repo", str(repo)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=DEADLINE,
    )


def apply_cmd(repo: Path, url: str, *extra: str) -> list[str]:
    return [RECONCILER, "apply", "--yes", "--repo", str(repo), "--db", url, *extra]


@dataclass(frozen=True, slots=True)
class Point:
    """What a kill may leave behind: the state serial and the applied rows hash."""

    serial: int
    rows_hash: str


def observe(url: str) -> Point:
    """The store's state, read without migrating it; checks the recorded rows hash and history."""
    with Store.open(url, migrate=False) as store:
        state = store.read_state()
        rows_hash = store.applied_rows_hash()
        applies = store.list_applies()
    assert [a.serial for a in applies] == list(range(state.serial, 0, -1))
    if state.serial:
        assert state.rows_hash == rows_hash, "the last apply recorded another rows hash"
    return Point(state.serial, rows_hash)


# --- the 1,000-job repo and its two states ------------------------------------------------


def job_files(version: int) -> dict[str, str]:
    """`JOBS` command jobs, each with one schedule; every cmd and cron differs per version."""
    return {
        f"jobs/j{i:04d}.yaml": (
            f"command:\n  cmd: echo {i} v{version}\n"
            f'schedules:\n  - {{id: daily, cron: "{i % 60} {version} * * *"}}\n'
        )
        for i in range(JOBS)
    }


@dataclass(frozen=True, slots=True)
class BigRepo:
    path: Path
    old: CommitSha
    """State A: the first commit."""
    new: CommitSha
    """State B, the tip of main: every job's cmd and cron changed."""
    old_store: Path
    """A SQLite store with `old` applied (serial 1), copied by each update trial."""


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> BigRepo:
    root = tmp_path_factory.mktemp("big")
    repo = make_jobs_repo(root / "jobs", job_files(1))
    old = CommitSha(_rev_parse(repo))
    old_store = root / "old.db"
    result = subprocess.run(
        apply_cmd(repo, f"sqlite:///{old_store}"),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert f"{JOBS} created" in result.stdout
    for path, text in job_files(2).items():
        (repo / path).write_text(text, encoding="utf-8")
    new = CommitSha(commit_tree(repo, "change every job"))
    return BigRepo(path=repo, old=old, new=new, old_store=old_store)


def _rev_parse(repo: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@dataclass(frozen=True, slots=True)
class Scenario:
    """One kind of trial: a store in state `before` to which applying main gives `after`."""

    name: str
    prepare: Callable[[str], None]
    """Bring the (new, empty) store at the URL into state `before`."""
    before: Point
    after: Point
    duration: float
    """Seconds an un-killed `reconciler apply` of this scenario took."""


def timed_apply(repo: Path, url: str) -> float:
    started = time.monotonic()
    result = subprocess.run(
        apply_cmd(repo, url),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        stdin=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "Applied" in result.stdout
    return elapsed


def reference_scenarios(
    big: BigRepo, fresh_url: Callable[[], str], seed_old: Callable[[str], None]
) -> list[Scenario]:
    """The create (empty -> B) and update (A -> B) scenarios, their end states computed by
    un-killed applies into stores of their own."""
    scenarios = []
    for name, prepare in (("create", lambda _url: None), ("update", seed_old)):
        url = fresh_url()
        prepare(url)
        before = observe(url)
        duration = timed_apply(big.path, url)
        scenarios.append(Scenario(name, prepare, before, observe(url), duration))
    create, update = scenarios
    assert update.before.serial == 1
    assert create.before == Point(0, applied_rows_hash(()))
    assert update.after.serial == 2
    assert create.after.serial == 1
    assert len({update.before.rows_hash, create.before.rows_hash, update.after.rows_hash}) == 3
    return scenarios


# --- killing applies ------------------------------------------------------------------------


def start_and_kill(repo: Path, url: str, user: str, delay: float) -> bool:
    """Run `reconciler apply --yes --as USER` and SIGKILL it (and its git children) after
    `delay` seconds; return whether it was killed (False: it finished first, and succeeded)."""
    proc = subprocess.Popen(
        apply_cmd(repo, url, "--as", user),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=DEADLINE)
    if proc.returncode == -signal.SIGKILL:
        return True
    assert proc.returncode == 0, err
    return False


def kill_trials(
    big: BigRepo,
    scenarios: list[Scenario],
    fresh_url: Callable[[], str],
    trials: int,
    report: Callable[[str], None],
    backend: str,
    settle: Callable[[str], None] = lambda _user: None,
) -> None:
    """Run `trials` kill trials over `scenarios` in turn; check and report each outcome.

    `settle(user)` returns once whatever the killed apply of `user` left running ended.
    """
    seed = int(os.environ.get("RECONCILER_KILL_SEED", str(random.randrange(2**32))))
    rng = random.Random(seed)
    landed = {s.name: {"before": 0, "after": 0, "finished": 0} for s in scenarios}
    durations = {s.name: s.duration for s in scenarios}
    for trial in range(trials):
        scenario = scenarios[trial % len(scenarios)]
        url = fresh_url()
        scenario.prepare(url)
        delay = rng.uniform(0, scenario.duration)
        user = f"killed-{trial}"
        killed = start_and_kill(big.path, url, user, delay)
        settle(user)
        where = f"{backend} trial {trial} ({scenario.name}, seed {seed}, kill at {delay:.3f} s)"
        point = observe(url)
        assert point in (scenario.before, scenario.after), f"{where}: a half-done apply {point}"
        committed = point == scenario.after
        landed[scenario.name]["after" if committed else "before"] += 1
        landed[scenario.name]["finished"] += not killed
        # No lock is left behind: the next apply takes it and completes.
        with Store.open(url) as store:
            outcome = apply_main(big.path, store, user="next", now=NOW, lock_timeout=10)
        assert (outcome.record is None) == committed, where
        assert observe(url) == scenario.after, where
    for name, counts in landed.items():
        report(
            f"{backend} kill trials ({name}, seed {seed}): {counts['before']} landed before "
            f"the commit, {counts['after']} after it ({counts['finished']} finished unkilled; "
            f"kills within {durations[name]:.2f} s)"
        )


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print past pytest's capture, so the figures show in every run."""

    def emit(line: str) -> None:
        with capsys.disabled():
            print(f"\n{line}", end="")  # noqa: T201 - the figures are the point

    return emit


@pytest.mark.slow
def test_a_killed_apply_leaves_the_old_or_the_new_state_and_no_lock_on_sqlite(
    big: BigRepo, tmp_path: Path, report: Callable[[str], None]
) -> None:
    counter = iter(range(1_000_000))

    def fresh_url() -> str:
        return f"sqlite:///{tmp_path / f'state{next(counter)}.db'}"

    def seed_old(url: str) -> None:
        shutil.copyfile(big.old_store, url.removeprefix("sqlite:///"))

    scenarios = reference_scenarios(big, fresh_url, seed_old)
    kill_trials(big, scenarios, fresh_url, KILL_TRIALS, report, "sqlite")


@pytest.mark.slow
def test_a_killed_apply_leaves_the_old_or_the_new_state_and_no_lock_on_postgresql(
    big: BigRepo, report: Callable[[str], None]
) -> None:
    pg.skip_without_postgres()
    with contextlib.ExitStack() as schemas:

        def fresh_url() -> str:
            return schemas.enter_context(pg.postgres_schema_url())

        def seed_old(url: str) -> None:
            # Apply exactly the old commit while main is at the new one: a saved plan of it.
            saved = SavedPlanRef(commit=big.old, main_tip=big.new, state_serial=0)
            with Store.open(url) as store:
                outcome = apply_main(
                    big.path, store, user="seed", now=NOW, lock_timeout=10, saved=saved
                )
            assert outcome.record is not None
            assert outcome.record.commit == big.old

        scenarios = reference_scenarios(big, fresh_url, seed_old)

        def settle(user: str) -> None:
            pg.wait_until_sessions_end(APPLICATION_NAME_PREFIX + user)

        kill_trials(big, scenarios, fresh_url, PG_KILL_TRIALS, report, "postgresql", settle)


# --- concurrent applies and the lock -------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a store that does not exist yet, of each implementation."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    pg.skip_without_postgres()
    with pg.postgres_schema_url() as url:
        yield url


@pytest.fixture
def small_repo(tmp_path: Path, git_identity: None) -> Path:
    return make_jobs_repo(
        tmp_path / "jobs",
        {
            "jobs/hello.yaml": "command:\n  cmd: echo hello\n",
            "jobs/sales/daily.yaml": (
                'command:\n  cmd: echo daily\nschedules:\n  - {id: nightly, cron: "0 2 * * *"}\n'
            ),
        },
    )


def history(repo: Path, url: str) -> list[dict[str, object]]:
    result = run("history", "--db", url, "--output", "json", repo=repo)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


def test_two_applies_started_together_both_succeed_and_exactly_one_records_the_apply(
    store_url: str, small_repo: Path
) -> None:
    tip = _rev_parse(small_repo)
    procs = [
        subprocess.Popen(
            apply_cmd(small_repo, store_url, "--as", user),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for user in ("first", "second")
    ]
    users = ("first", "second")
    outputs = {u: p.communicate(timeout=DEADLINE) for u, p in zip(users, procs, strict=True)}
    for proc, (user, (_, err)) in zip(procs, outputs.items(), strict=True):
        assert proc.returncode == 0, f"{user}: {err}"
    appliers = [u for u, (out, _) in outputs.items() if f"Applied {tip[:12]}" in out]
    idle = [u for u, (out, _) in outputs.items() if "Nothing to apply" in out]
    assert len(appliers) == 1, outputs
    assert len(idle) == 1, outputs
    rows = history(small_repo, store_url)
    assert [(r["serial"], r["commit"], r["user"]) for r in rows] == [(1, tip, appliers[0])]
    assert observe(store_url).serial == 1


def test_an_apply_waiting_past_lock_timeout_for_a_held_lock_exits_1_and_applies_nothing(
    store_url: str, small_repo: Path
) -> None:
    with Store.open(store_url) as store:
        with store.apply_transaction(holder="test-holder", lock_timeout=10):
            result = run(
                "apply", "--yes", "--lock-timeout", "1", "--db", store_url, repo=small_repo
            )
            assert result.returncode == 1
            assert "another apply holds the state lock" in result.stderr
            assert "gave up after 1 s (--lock-timeout)" in result.stderr
            if store_url.startswith("postgresql"):
                assert "(test-holder)" in result.stderr  # the holder's name is shown
        assert store.read_state().serial == 0
        assert store.list_applies() == []
    result = run("apply", "--yes", "--lock-timeout", "10", "--db", store_url, repo=small_repo)
    assert result.returncode == 0, result.stderr
    assert "as state serial 1: 2 created" in result.stdout
    assert observe(store_url).serial == 1


HOLDER = textwrap.dedent(
    """
    import sys
    from reconciler.store import Store, applied_rows_hash

    with Store.open(sys.argv[1]) as store, store.apply_transaction(holder="doomed"):
        print("holding", flush=True)
        sys.stdin.read()
    """
)


def test_a_lock_holder_killed_with_sigkill_does_not_block_the_next_apply(
    store_url: str, small_repo: Path
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], DEADLINE)
        assert ready, "the holder did not take the lock in time"
        line = holder.stdout.readline()
        assert line == "holding\n", holder.communicate(timeout=DEADLINE)[1]
        with (
            Store.open(store_url) as store,
            pytest.raises(StoreError, match="another apply holds the state lock"),
            store.apply_transaction(holder="probe", lock_timeout=0.2),
        ):
            pass
    finally:
        holder.kill()
        holder.communicate(timeout=DEADLINE)
    assert holder.returncode == -signal.SIGKILL
    result = run("apply", "--yes", "--lock-timeout", "10", "--db", store_url, repo=small_repo)
    assert result.returncode == 0, result.stderr
    assert "as state serial 1: 2 created" in result.stdout
    assert observe(store_url).serial == 1
