"""The clock seam: where "now" comes from, for the CLI, the loop and the tests.

Invariants: every `now()` is an aware datetime in UTC. The core never reads the
clock; callers read it once and pass the value down.

`RECONCILER_CLOCK_FILE` (test only): when set, "now" is the ISO-8601 instant
written in that file, re-read on every call, so tests fix or move time for CLI
processes and `serve` alike; `sleep()` then polls the file instead of the wall
clock so a test advancing the file wakes a sleeper.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

CLOCK_FILE_ENV = "RECONCILER_CLOCK_FILE"


class Clock(Protocol):
    """Tells the time and waits.

    `now()` returns an aware UTC datetime, never earlier than a previous call of the
    same instance unless the test that owns a fake clock moves it back.
    `sleep(seconds)` returns after at least `seconds` of this clock's time passed.
    """

    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@dataclass
class FakeClock:
    """A clock that only moves when told; `sleep` advances it."""

    current: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.current = self.current + timedelta(seconds=max(seconds, 0.0))

    def advance(self, seconds: float) -> None:
        self.sleep(seconds)


@dataclass(frozen=True)
class FileClock:
    """A clock whose "now" is the instant written in a file (see module docstring)."""

    path: Path
    poll_seconds: float = 0.01

    def now(self) -> datetime:
        return parse_instant(self.path.read_text(encoding="utf-8").strip())

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        deadline = self.now() + timedelta(seconds=seconds)
        # Wall-clock bound so a test that never advances the file cannot hang a sleeper.
        wall_deadline = time.monotonic() + seconds
        while self.now() < deadline and time.monotonic() < wall_deadline:
            time.sleep(self.poll_seconds)


def parse_instant(text: str) -> datetime:
    """Parse an ISO-8601 instant; naive values are taken as UTC. Raises ValueError."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def clock_from_environment(environ: dict[str, str] | None = None) -> Clock:
    """The clock for this process: a FileClock when RECONCILER_CLOCK_FILE is set."""
    env = os.environ if environ is None else environ
    path = env.get(CLOCK_FILE_ENV)
    if path:
        return FileClock(Path(path))
    return SystemClock()
