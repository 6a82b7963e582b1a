"""The loop's Prometheus metrics and the small HTTP server for /metrics and /healthz.

Edge: a daemon thread serving HTTP on `--listen HOST:PORT`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class LoopMetrics:
    """The metrics one `serve` process exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.fires = Counter(
            "reconciler_fires_total",
            "Scheduled times decided, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.lateness = Histogram(
            "reconciler_fire_lateness_seconds",
            "Durable fire-ledger row committed minus scheduled time.",
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.runs = Gauge(
            "reconciler_runs",
            "Runs by state (unfinished states).",
            ["state"],
            registry=self.registry,
        )
        self.sync_duration = Histogram(
            "reconciler_sync_duration_seconds",
            "Time to fetch, plan and apply main.",
            registry=self.registry,
        )
        self.last_sync = Gauge(
            "reconciler_last_sync_timestamp_seconds",
            "When main was last synced (UNIX time).",
            registry=self.registry,
        )
        self.is_leader = Gauge(
            "reconciler_is_leader", "1 while this replica holds the lease.", registry=self.registry
        )
        for outcome in ("FIRED", "SKIPPED", "MISSED"):
            self.fires.labels(outcome)
        for state in ("WAITING", "STARTING", "RUNNING", "STOPPING"):
            self.runs.labels(state).set(0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def serve_http(
    host: str, port: int, metrics: LoopMetrics, healthy: Callable[[], tuple[bool, str]]
) -> ThreadingHTTPServer:
    """Start serving /metrics and /healthz in a daemon thread; return the server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/metrics":
                body = metrics.render()
                self._reply(200, CONTENT_TYPE_LATEST, body)
            elif self.path.split("?")[0] == "/healthz":
                ok, text = healthy()
                self._reply(200 if ok else 503, "text/plain; charset=utf-8", (text + "\n").encode())
            else:
                self._reply(404, "text/plain; charset=utf-8", b"not found\n")

        def _reply(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server
