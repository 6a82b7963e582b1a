"""Leases: named, expiring claims with a fencing token, so one replica at a time leads.

Invariants:

- One `leases` row per name: holder, fencing token, expiry, and the holder's replica id
  and pid (for `status`). Time is the caller's clock (`now`), never the database's.
- `acquire_or_renew` is one conditional `UPDATE ... WHERE name = :name AND (holder = :me
  OR expires_at < :now)`; only when no row exists yet does a second statement insert
  it (`ON CONFLICT DO NOTHING`, so of two racing first acquirers one wins). The token
  is 1 on the first acquire and grows by one on every takeover (a change of holder);
  a renew keeps it. Of two replicas racing for an expired lease exactly one wins.
- A lease is held while `expires_at > now`; another holder may take it once
  `expires_at < now`. `release` moves the expiry to the epoch, so anyone may take it
  at once.
- Every leader write runs inside `leader_transaction` (or calls `check` first in its
  own write transaction): the lease row is re-read with that holder, token and an
  unexpired expiry, else `LeaseLost`. On PostgreSQL `check` holds the row `FOR SHARE`
  until the transaction ends, so a takeover (an UPDATE of that row) waits for the
  leader's transaction to commit or roll back and cannot interleave with it; the cost
  is that a renewal also waits, so leader transactions must be much shorter than the
  TTL. On SQLite the write transaction (`BEGIN IMMEDIATE`) already excludes every
  other writer, and SQLite means one replica anyway.
- Every method raises StoreError, naming what it did and the store, when the database
  fails, and takes an optional `conn` to run inside the caller's transaction instead
  of its own.

Holder names must be unique per process lifetime (e.g. replica, pid and a random
suffix): a holder that re-acquires its own expired lease keeps its token.
Does not read the clock, sleep or renew by itself: the loop does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, case, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from reconciler.errors import LeaseLost
from reconciler.store.engine import (
    SQLITE_BEGIN_IMMEDIATE,
    SQLITE_LOCK_TIMEOUT,
    in_transaction,
    translate_errors,
)
from reconciler.store.store import Store
from reconciler.store.tables import leases

LEADER_LEASE = "leader"
"""The name of the lease the `serve` replicas compete for."""

RELEASED_EXPIRY = datetime(1970, 1, 1, tzinfo=UTC)
"""The expiry `release` writes: before any `now`, so the lease is free at once."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """The state of one lease row: who holds it, with which token, until when."""

    name: str
    holder: str
    token: int
    expires_at: datetime
    renewed_at: datetime
    replica: str | None = None
    pid: int | None = None

    def is_held_at(self, now: datetime) -> bool:
        """True while the lease has not expired at `now`."""
        return self.expires_at > now


class LeaseStore:
    """The leases of one state store. Shares the Store's engine (closing it closes this)."""

    def __init__(self, store: Store) -> None:
        self._engine: Engine = store.engine

    def acquire_or_renew(
        self,
        name: str,
        holder: str,
        *,
        ttl: float,
        now: datetime,
        replica: str | None = None,
        pid: int | None = None,
        conn: Connection | None = None,
    ) -> Lease | None:
        """Take or extend lease `name` for `holder` until `now + ttl` seconds.

        Returns the Lease when `holder` holds it afterwards (its token unchanged on a
        renew, one more on a takeover, 1 on the first acquire), or None when another
        holder's lease has not expired at `now`. Raises ValueError for a `ttl` that is
        not a positive finite number or a naive `now`; StoreError when the database fails.
        """
        _require_aware(now)
        if not (math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"lease {name}: ttl must be a positive number of seconds, not {ttl}")
        expires_at = now + timedelta(seconds=ttl)
        claim = (
            update(leases)
            .where(
                leases.c.name == name,
                or_(leases.c.holder == holder, leases.c.expires_at < now),
            )
            .values(
                holder=holder,
                token=case((leases.c.holder == holder, leases.c.token), else_=leases.c.token + 1),
                expires_at=expires_at,
                renewed_at=now,
                replica=replica,
                pid=pid,
            )
            .returning(*leases.c)
        )
        first = (
            _insert_for(conn or self._engine)
            .values(
                name=name,
                holder=holder,
                token=1,
                expires_at=expires_at,
                renewed_at=now,
                replica=replica,
                pid=pid,
            )
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(*leases.c)
        )
        with self._transaction(f"acquiring lease {name} for {holder}", conn, write=True) as c:
            row = c.execute(claim).first()
            if row is None:
                # No row yet, or another holder's unexpired one: only the first inserts.
                row = c.execute(first).first()
        return None if row is None else _lease_of(row)

    def release(
        self, name: str, holder: str, token: int, *, conn: Connection | None = None
    ) -> bool:
        """Give lease `name` up if `holder` still holds it with `token`; True when it did.

        The row stays (its token keeps counting); its expiry becomes `RELEASED_EXPIRY`.
        """
        statement = (
            update(leases)
            .where(leases.c.name == name, leases.c.holder == holder, leases.c.token == token)
            .values(expires_at=RELEASED_EXPIRY)
            .returning(leases.c.name)
        )
        with self._transaction(f"releasing lease {name} of {holder}", conn, write=True) as c:
            return c.execute(statement).first() is not None

    def read(self, name: str, *, conn: Connection | None = None) -> Lease | None:
        """Return lease `name` as stored (held or expired), or None when it never existed."""
        with self._transaction(f"reading lease {name}", conn) as c:
            row = c.execute(select(leases).where(leases.c.name == name)).first()
        return None if row is None else _lease_of(row)

    def check(self, conn: Connection, name: str, holder: str, token: int, now: datetime) -> Lease:
        """Raise LeaseLost unless `holder` holds lease `name` with `token` at `now`.

        Run it first in a leader's write transaction (`conn`); on PostgreSQL it locks
        the lease row `FOR SHARE` until that transaction ends (see the module
        docstring). Returns the lease as read. Raises StoreError when the database fails.
        """
        _require_aware(now)
        query = select(leases).where(leases.c.name == name)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(read=True)
        with translate_errors(f"checking lease {name} of {holder}", self._engine.url):
            row = conn.execute(query).first()
        if row is None:
            raise LeaseLost(f"lease {name}: {holder} does not hold it (no lease row)")
        lease = _lease_of(row)
        if lease.holder != holder or lease.token != token:
            raise LeaseLost(
                f"lease {name}: {holder} (token {token}) lost it to {lease.holder}"
                f" (token {lease.token})"
            )
        if not lease.is_held_at(now):
            raise LeaseLost(
                f"lease {name}: {holder} (token {token}) let it expire at "
                f"{lease.expires_at.isoformat()} (now {now.astimezone(UTC).isoformat()})"
            )
        return lease

    @contextmanager
    def leader_transaction(
        self,
        name: str,
        holder: str,
        token: int,
        now: datetime,
        *,
        lock_timeout: float | None = None,
    ) -> Iterator[Connection]:
        """Begin a write transaction, `check` the lease in it, yield its connection.

        Commits on a clean exit, rolls back on any exception (LeaseLost included, so a
        replica that lost the lease writes nothing). `lock_timeout` bounds the wait for
        SQLite's write lock or PostgreSQL's row locks (default: the store's). Raises
        LeaseLost from `check`; StoreError when the database fails.
        """
        url = self._engine.url
        with translate_errors(f"beginning a transaction under lease {name}", url):
            conn = self._engine.connect()
        try:
            with translate_errors(f"beginning a transaction under lease {name}", url):
                options: dict[str, Any] = {SQLITE_BEGIN_IMMEDIATE: True}
                if lock_timeout is not None:
                    options[SQLITE_LOCK_TIMEOUT] = lock_timeout
                conn.execution_options(**options)
                conn.begin()
                if lock_timeout is not None and conn.dialect.name == "postgresql":
                    conn.execute(
                        text("SELECT set_config('lock_timeout', :ms, true)"),
                        {"ms": f"{max(int(lock_timeout * 1000), 1)}ms"},
                    )
            self.check(conn, name, holder, token, now)
            yield conn
        except BaseException:
            with translate_errors(f"rolling back under lease {name}", url):
                conn.rollback()
            raise
        else:
            with translate_errors(f"committing under lease {name}", url):
                conn.commit()
        finally:
            conn.close()

    def _transaction(
        self, what: str, conn: Connection | None, *, write: bool = False
    ) -> AbstractContextManager[Connection]:
        return in_transaction(self._engine, what, conn, write=write)


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"naive datetime {now.isoformat()} given; leases take aware UTC")


def _insert_for(bind: Connection | Engine) -> postgresql.Insert | sqlite.Insert:
    if bind.dialect.name == "postgresql":
        return postgresql.insert(leases)
    return sqlite.insert(leases)


def _lease_of(row: Row[Any]) -> Lease:
    return Lease(
        name=row.name,
        holder=row.holder,
        token=int(row.token),
        expires_at=row.expires_at,
        renewed_at=row.renewed_at,
        replica=row.replica,
        pid=row.pid,
    )
