"""`reconciler serve` (the reconcile loop) and `reconciler status`."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar

import click

from reconciler.cli.options import db_option, echo_json, find_repo, output_option, repo_option
from reconciler.errors import UsageError

SHUTDOWN_SECONDS = 10


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and extra fields."""

    BASE: ClassVar[frozenset[str]] = frozenset(
        vars(logging.LogRecord("", 0, "", 0, "", None, None))
    )

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self.BASE and key not in ("message", "asctime"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(fmt: str, stream: IO[str] | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("reconciler")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _single_replica_lock(state_dir: Path) -> IO[str]:
    """SQLite means one replica: hold an exclusive lock for the life of `serve`."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "serve.lock"
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise UsageError(
            f"another serve ({holder}) already runs against this SQLite store ({path}); "
            "SQLite means a single replica: use a PostgreSQL store (--db) for several"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"{listen!r}: expected HOST:PORT", param_hint="--listen")
    return host or "127.0.0.1", int(port)


@click.command()
@click.option(
    "--repo",
    "repo_arg",
    default=None,
    help="The jobs repo: a local path, or a git URL to clone into --state-dir.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where a cloned repo lives (default: the current directory).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=10.0,
    show_default=True,
    help="Seconds between fetches of the jobs repo.",
)
@db_option
@click.option("--listen", default=None, help="HOST:PORT for /metrics and /healthz.")
@click.option("--lease-ttl", type=click.FloatRange(min=0.3), default=15.0, show_default=True)
@click.option("--no-self-heal", is_flag=True, help="Report drift without re-applying.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text")
@click.option("--replica-id", default=None, help="Name of this replica (default: host-pid).")
@click.option(
    "--record-only",
    is_flag=True,
    hidden=True,
    help="Benchmarks: runs succeed at once without a process.",
)
def serve(
    repo_arg: str | None,
    state_dir: Path | None,
    interval: float,
    db_url: str | None,
    listen: str | None,
    lease_ttl: float,
    no_self_heal: bool,
    log_format: str,
    replica_id: str | None,
    record_only: bool,
) -> None:
    """The reconcile loop: follow main, fire schedules exactly once, supervise runs."""
    from reconciler.cli.options import store_url
    from reconciler.clock import clock_from_environment
    from reconciler.loop.fetch import prepare_repo
    from reconciler.loop.metrics import LoopMetrics, serve_http
    from reconciler.loop.replica import LoopConfig, Replica
    from reconciler.runs.dispatch import Runner
    from reconciler.store import Store
    from reconciler.store.runs import RunStore

    setup_logging(log_format)
    log = logging.getLogger("reconciler.serve")
    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %s: finishing the tick and stepping down", signum)
        stopping.set()
        signal.alarm(SHUTDOWN_SECONDS)  # a hung tick still ends the process

    # Installed first, so a SIGTERM during start-up also stops serve cleanly.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    base = (state_dir or Path.cwd()).resolve()
    repo = prepare_repo(repo_arg, base) if repo_arg else find_repo(None)
    repo = find_repo(repo)
    url = store_url(repo, db_url)
    lock = _single_replica_lock(repo / ".reconciler") if url.startswith("sqlite") else None
    clock = clock_from_environment()
    name = replica_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    with Store.open(url) as store:
        runner = Runner(
            repo=repo,
            store=store,
            runs=RunStore(store),
            clock=clock,
            db_url=url,
            watching=True,
            record_only=record_only,
        )
        metrics = LoopMetrics()
        replica = Replica(
            repo=repo,
            store=store,
            runner=runner,
            clock=clock,
            metrics=metrics,
            config=LoopConfig(
                replica_id=name, interval=interval, lease_ttl=lease_ttl, self_heal=not no_self_heal
            ),
        )
        server = None
        if listen:
            host, port = _parse_listen(listen)

            def healthy() -> tuple[bool, str]:
                role = "leader" if replica.lease is not None else "standby"
                return (not replica.stopping.is_set(), f"ok {role} {name}")

            server = serve_http(host, port, metrics, healthy)

        replica.stopping = stopping
        log.info("serving %s as replica %s (store %s)", repo, name, store.url)
        try:
            replica.run()
        finally:
            if server is not None:
                server.shutdown()
            if lock is not None:
                lock.close()
    log.info("stopped")


@click.command()
@repo_option
@db_option
@output_option("text", "json")
def status(repo_path: Path | None, db_url: str | None, output: str) -> None:
    """The loop's state: leader, lease, last sync and its error, next fires, runs, queue."""
    from reconciler.cli.options import store_exists, store_url
    from reconciler.clock import clock_from_environment
    from reconciler.loop.status import read_status

    repo = find_repo(repo_path)
    url = store_url(repo, db_url)
    if not store_exists(url):
        raise UsageError(f"no state store at {url}: nothing was applied or served yet")
    from reconciler.store import Store

    with Store.open(url) as store:
        body = read_status(store, now=clock_from_environment().now())
    if output == "json":
        echo_json(body)
        return
    leader = body["leader"]
    click.echo(
        f"leader: {leader['replica']} (pid {leader['pid']}, lease until "
        f"{leader['leaseExpiresAt']}, token {leader['token']})"
        if leader
        else "leader: none"
    )
    click.echo(f"last synced: {body['lastSyncedCommit'] or '-'} at {body['lastSyncedAt'] or '-'}")
    if body["lastSyncError"]:
        error = body["lastSyncError"]
        click.echo(f"last sync error ({(error.get('commit') or '')[:12]}): {error['message']}")
    if body["drift"]:
        click.echo(f"drift: {body['drift']['reason']}")
    click.echo(f"runs: {body['runs']['running']} running, {body['runs']['waiting']} waiting")
    click.echo("next fires:")
    for fire in body["nextFires"]:
        click.echo(f"  {fire['at']}  {fire['jobId']}  [{fire['scheduleId']}]")
