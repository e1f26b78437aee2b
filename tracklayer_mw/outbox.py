"""The durable outbox: accepted events wait here until the worker has delivered them.

The core of litequeue, trimmed to what delivery needs. `put()` returns once its rows are committed
(WAL with `synchronous=NORMAL` survives a crash or kill -9 of the process, not a power cut).
`claim()` takes rows with `UPDATE … RETURNING` inside `BEGIN IMMEDIATE`, so processes sharing one
file never claim a row twice, and sets a lease instead of a LOCKED status: what a crashed process had
claimed comes back by itself when the lease expires. Acked rows are deleted; dead letters stay, with
their reason. Payloads are hashed by the caller already and are still never logged.

Checkpoints: SQLite's automatic WAL checkpoint runs inside whichever commit crosses its threshold,
fsyncs included, while that writer holds the write lock, so a request's put() waited behind it
(5-35 ms, five times a second at 1,000 beacons/s). The delivery worker checkpoints instead, between
its cycles and outside every lock (`checkpoint()`); the automatic one only stays as a backstop for
a process whose worker does not run.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, Protocol

Merge = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]

SCHEMA_VERSION = 1
BUSY_TIMEOUT = 5.0  # seconds a writer waits for another process's transaction before giving up
# Pages (4 KiB) of WAL after which a commit checkpoints by itself: only when no worker checkpoints.
BACKSTOP_CHECKPOINT_PAGES = 10_000


@dataclass(frozen=True, slots=True)
class NewEvent:
    event_id: str
    event_name: str  # TrackLayer name, e.g. "Purchase"
    event_time: int  # unix seconds
    payload: dict[str, Any]  # JSON-serializable


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    id: int
    event_id: str
    event_name: str
    event_time: int
    payload: dict[str, Any]
    attempts: int  # including this claim (1 on the first send)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    event_id: str
    event_name: str
    event_time: int
    attempts: int
    reason: str
    died_at: float


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    pending: int  # never attempted, waiting
    retrying: int  # attempted at least once, waiting for their next try
    in_flight: int  # claimed, lease not expired
    dead: int


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of the delivery log: names, ids, outcomes and signal flags, never personal data."""

    at: float
    event_id: str
    event_name: str
    outcome: str  # "processed" | "failed" | "retry" | "dead"
    message: str  # Pinterest's error or our reason, "" when none
    warning: str  # Pinterest's warning_message, "" when none
    click_id: bool
    email: bool
    ip_ua: bool
    pixel: bool
    test: bool  # sent with test=true


@dataclass(frozen=True, slots=True)
class Settlement:
    """What became of a claimed batch, written in one transaction: acked, buried, retried, logged."""

    now: float
    done: Sequence[int] = ()
    dead: Sequence[tuple[int, str]] = ()  # (id, reason)
    retry: Sequence[int] = ()
    retry_at: float = 0.0
    retry_error: str = ""
    log: Sequence[LogEntry] = ()


class Outbox(Protocol):
    def put(self, events: Sequence[NewEvent]) -> None: ...
    def put_nowait(self, events: Sequence[NewEvent]) -> bool: ...
    def claim(self, limit: int, *, now: float, lease: float) -> list[ClaimedEvent]: ...
    def ack(self, ids: Iterable[int]) -> None: ...
    def retry(self, ids: Iterable[int], *, at: float, error: str) -> None: ...
    def bury(self, failures: Iterable[tuple[int, str]], *, now: float) -> None: ...
    def settle(self, settlement: Settlement) -> None: ...
    def release(self, ids: Iterable[int], *, at: float) -> None: ...
    def checkpoint(self) -> None: ...
    def bury_expired(self, *, event_time_before: int, reason: str, now: float) -> int: ...
    def counts(self, *, now: float) -> OutboxCounts: ...
    def next_due(self, *, now: float) -> float | None: ...
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]: ...
    def retry_dead(self, *, now: float) -> int: ...
    def log(self, entries: Sequence[LogEntry]) -> None: ...
    def log_since(self, since: float) -> list[LogEntry]: ...
    def purge_log(self, *, before: float) -> int: ...
    def close(self) -> None: ...


def _dump(payload: dict[str, Any]) -> str:
    # NaN is not JSON: refuse it here rather than have Pinterest reject a whole batch later.
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


def _dump_rows(rows: Sequence[Any]) -> str:
    return json.dumps(rows, separators=(",", ":"))


def _rollback(conn: sqlite3.Connection) -> None:
    # Also after a failed COMMIT (disk full, I/O error), which may leave the transaction open: an
    # open one would keep SQLite's write lock from every other writer for good.
    with contextlib.suppress(sqlite3.Error):
        conn.rollback()


def _load_or_empty(payload: str) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return {}  # the worker buries it as unreadable instead of failing the whole claim every cycle


def _insert_log(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(_LOG_COLUMNS)
    chunk = max(1, min(_LOG_CHUNK, limit))
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        conn.execute(_LOG_INSERT + ", ".join([_LOG_ROW] * len(part)), [v for row in part for v in row])


# Invariant kept by every write: available_at >= leased_until. claim() moves available_at to the end of
# the lease too, so "claimable" is one range on one index and next_due() is a single index lookup.
# `mergeable` is 1 or NULL: NULLs are distinct in a UNIQUE index, so rows put without a merge function
# or revived from the dead never collide, and outbox_unclaimed still holds every pending row (counts()).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    event_time INTEGER NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    available_at REAL NOT NULL DEFAULT 0,
    leased_until REAL NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0,
    died_at REAL,
    last_error TEXT NOT NULL DEFAULT '',
    mergeable INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS outbox_unclaimed
    ON outbox(event_name, event_id, mergeable) WHERE attempts = 0 AND dead = 0;
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(available_at) WHERE dead = 0;
CREATE INDEX IF NOT EXISTS outbox_leased ON outbox(leased_until) WHERE leased_until > 0 AND dead = 0;
CREATE INDEX IF NOT EXISTS outbox_expiry ON outbox(event_time) WHERE dead = 0;
CREATE INDEX IF NOT EXISTS outbox_dead ON outbox(died_at) WHERE dead = 1;
CREATE TABLE IF NOT EXISTS delivery_log (
    at REAL NOT NULL, event_id TEXT NOT NULL, event_name TEXT NOT NULL, outcome TEXT NOT NULL,
    message TEXT NOT NULL, warning TEXT NOT NULL, click_id INTEGER NOT NULL, email INTEGER NOT NULL,
    ip_ua INTEGER NOT NULL, pixel INTEGER NOT NULL, test INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS delivery_log_at ON delivery_log(at);
"""
_PUT = """INSERT INTO outbox (event_id, event_name, event_time, payload, mergeable) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (event_name, event_id, mergeable) WHERE attempts = 0 AND dead = 0
DO UPDATE SET payload = tl_merge(payload, excluded.payload)"""
# Oldest due first. put() has no clock, so new rows are due from time 0: under a backlog they go before
# retries, which wait for a backoff anyway.
#
# Batch statements take their ids as one JSON array (json_each) and answer in one JSON document
# (json_group_array): one sqlite3_step each. Python's sqlite3 gives up the GIL around every step and
# must win it back from the event loop and the request threads after each one, so a statement run
# row by row (executemany, RETURNING) held the write lock for milliseconds while ingest waited.
_CLAIM_IDS = """SELECT json_group_array(id) FROM (SELECT id FROM outbox
    WHERE dead = 0 AND available_at <= :now AND leased_until <= :now
    ORDER BY available_at, id LIMIT :limit)"""
_CLAIM = """UPDATE outbox SET attempts = attempts + 1, leased_until = :until, available_at = :until
WHERE id IN (SELECT value FROM json_each(:ids))"""
# The claimed rows as one JSON array of [id, event_id, event_name, event_time, payload, attempts], the
# payloads spliced in as stored (re-rendering them with json() took as long again as the parse).
_CLAIMED = """SELECT '[' || group_concat('[' || id || ',' || json_quote(event_id) || ',' ||
    json_quote(event_name) || ',' || event_time || ',' || payload || ',' || attempts || ']') || ']'
FROM outbox WHERE id IN (SELECT value FROM json_each(?))"""
_CLAIMED_ROWS = """SELECT id, event_id, event_name, event_time, payload, attempts FROM outbox
WHERE id IN (SELECT value FROM json_each(?))"""
# Each count walks one partial index, never the table (1M rows: ~65 ms); retrying is what is left over.
# INDEXED BY because, without statistics, the planner picks outbox_expiry and reads every row for `attempts`.
_COUNTS = """SELECT (SELECT COUNT(*) FROM outbox WHERE dead = 0),
    (SELECT COUNT(*) FROM outbox INDEXED BY outbox_unclaimed WHERE attempts = 0 AND dead = 0),
    (SELECT COUNT(*) FROM outbox WHERE leased_until > 0 AND dead = 0 AND leased_until > ?),
    (SELECT COUNT(*) FROM outbox WHERE dead = 1)"""
_ACK = "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))"
_RETRY = """UPDATE outbox SET available_at = ?, leased_until = 0, last_error = ?
    WHERE id IN (SELECT value FROM json_each(?)) AND dead = 0"""
_RELEASE = """UPDATE outbox SET available_at = ?, leased_until = 0
    WHERE id IN (SELECT value FROM json_each(?)) AND dead = 0"""
_BURY = "UPDATE outbox SET dead = 1, died_at = ?, last_error = ?, leased_until = 0"
_BURY_ONE = _BURY + " WHERE id = ? AND dead = 0"
_RETRY_DEAD = """UPDATE outbox SET dead = 0, attempts = 0, mergeable = NULL, available_at = ?,
    leased_until = 0, died_at = NULL WHERE dead = 1"""
_DEAD_LETTERS = """SELECT id, event_id, event_name, event_time, attempts, last_error, died_at FROM outbox
    WHERE dead = 1 ORDER BY died_at DESC, id DESC LIMIT ?"""
_LOG_COLUMNS = tuple(field.name for field in fields(LogEntry))
_log_row = attrgetter(*_LOG_COLUMNS)  # an entry's fields as a tuple
# Many rows per INSERT (one step; faster than executemany or json_each here), in chunks of one size
# so the statement cache keeps it; fewer when SQLite was built with a low variable limit.
_LOG_INSERT = "INSERT INTO delivery_log VALUES "
_LOG_ROW = "(" + ", ".join("?" * len(_LOG_COLUMNS)) + ")"  # LogEntry's fields, in order
_LOG_CHUNK = 250
_LOG_SINCE = "SELECT * FROM delivery_log WHERE at >= ? ORDER BY at, rowid"

# Connections inherited through fork() are set aside here, never used and never closed: closing one in the
# child could disturb the parent's locks (sqlite.org/howtocorrupt.html: "carrying a connection across fork").
_INHERITED: list[sqlite3.Connection] = []


_OPEN: weakref.WeakSet[SQLiteOutbox] = weakref.WeakSet()


def _new_locks_after_fork() -> None:
    # A lock copied by fork may be held by a thread the child does not have.
    for outbox in list(_OPEN):
        outbox._write_lock = threading.Lock()
        outbox._group_lock = threading.Lock()
        outbox._group, outbox._leading = [], False  # the parent's waiting puts are the parent's


os.register_at_fork(after_in_child=_new_locks_after_fork)


class _Put:
    """One put() waiting for a group commit."""

    __slots__ = ("done", "error", "lead", "rows")

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows
        self.done = threading.Event()  # committed (or failed), or handed the lead
        self.lead = False
        self.error: BaseException | None = None


class SQLiteOutbox:
    """One file shared by every process and thread; one connection per process and thread."""

    def __init__(self, path: str, *, merge: Merge | None = None) -> None:
        self.path = os.path.abspath(path)  # a later chdir must not move the queue
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._merge = merge
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._group_lock = threading.Lock()  # guards _group and _leading
        self._group: list[_Put] = []  # puts waiting for the leader's next transaction
        self._leading = False  # a thread is committing puts: the others wait for it
        _OPEN.add(self)
        self._connect()  # fail now, at startup, on a bad path or a newer schema

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        self.close()  # a connection from before a fork is set aside, not reused
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
            conn.create_function("tl_merge", 2, self._merge_json, deterministic=True)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: outbox schema {version} is newer than {SCHEMA_VERSION}")
            if version < SCHEMA_VERSION:  # BEGIN IMMEDIATE: two processes starting at once create it once
                conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};COMMIT;")
        except BaseException:
            conn.close()
            raise
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _merge_json(self, old: str, new: str) -> str:
        assert self._merge is not None  # only rows put with a merge function are ever merged
        try:
            return _dump(self._merge(json.loads(old), json.loads(new)))
        except Exception as exc:
            self._local.merge_error = exc  # sqlite3 would only say "user-defined function raised exception"
            raise

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        # Threads of one process queue on a lock; left to SQLite's busy handler (sleep and retry, no
        # queue) some writers starve for seconds under load. Other processes still meet the busy handler.
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")  # take the write lock up front: no deadlock on a lock upgrade
            try:
                yield conn
                conn.commit()
            except BaseException:
                _rollback(conn)
                raise

    def _write(self, sql: str, params: Sequence[Any]) -> int:
        with self._tx() as conn:
            return conn.execute(sql, params).rowcount

    def put_nowait(self, events: Sequence[NewEvent]) -> bool:
        """put(), when it can be done at once; False, with nothing written, when it would wait.

        For an event loop (ingest): a commit without waiting is a few writes to the WAL (no fsync
        with synchronous=NORMAL), cheaper than handing the put to a thread and back, which costs two
        GIL hand-offs. It would wait when a thread of this process holds or awaits the write lock,
        or when another process holds SQLite's: then the caller falls back to put() off the loop.
        """
        rows = self._rows(events)
        if not rows:
            return True
        if self._leading or not self._write_lock.acquire(blocking=False):
            return False
        try:
            conn = self._connect()
            conn.execute("PRAGMA busy_timeout = 0")  # another process writing: SQLITE_BUSY at once
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return False
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            self._local.merge_error = None
            try:
                conn.executemany(_PUT, rows)
                conn.commit()
            except BaseException as exc:
                _rollback(conn)
                if isinstance(exc, sqlite3.Error) and self._local.merge_error is not None:
                    raise self._local.merge_error from exc
                raise
            return True
        finally:
            self._write_lock.release()

    def _rows(self, events: Sequence[NewEvent]) -> list[tuple[Any, ...]]:
        mergeable = 1 if self._merge is not None else None
        return [(e.event_id, e.event_name, e.event_time, _dump(e.payload), mergeable) for e in events]

    def put(self, events: Sequence[NewEvent]) -> None:
        """Durable on return: the rows are committed (or an error is raised).

        Group commit: a put arriving while another thread commits waits, and the next leader writes
        every waiting put in one transaction. Under load, requests queue once for a whole group instead
        of one by one for the write lock, each hand-off also waiting for the GIL.
        """
        rows = self._rows(events)
        if not rows:
            return
        mine = _Put(rows)
        with self._group_lock:
            self._group.append(mine)
            lead = not self._leading
            self._leading = True
        if not lead:
            try:
                mine.done.wait()
            except BaseException:  # interrupted (KeyboardInterrupt in the main thread): raise, unwritten
                self._abandon(mine)
                raise
            lead = mine.lead  # handed the lead: this put was not written yet
        if lead:
            self._commit_group()
        if mine.error is not None:
            raise mine.error

    def _abandon(self, put: _Put) -> None:
        """A put that stops waiting leaves the queue, and hands on the lead if it had been given it,
        so that the puts after it are still written (else every later put() would wait forever)."""
        with self._group_lock:
            if put in self._group:
                self._group.remove(put)
            if put.lead:
                put.lead = False
                if self._group:
                    self._group[0].lead = True
                    self._group[0].done.set()
                else:
                    self._leading = False

    def _commit_group(self) -> None:
        with self._group_lock:
            group, self._group = self._group, []
        try:
            try:  # the usual case: the whole group in one statement, as few GIL hand-offs as one put
                with self._tx() as conn:
                    self._local.merge_error = None
                    conn.executemany(_PUT, [row for put in group for row in put.rows])
            except sqlite3.Error as exc:
                if len(group) == 1:
                    group[0].error = self._local.merge_error or exc
                else:  # again, a savepoint each: a merge function raising fails its own put only
                    self._commit_each(group)
        except BaseException as exc:
            for put in group:
                put.error = put.error or exc
            raise
        finally:
            for put in group:
                put.done.set()  # after the commit: put() returns only once its rows are durable
            with self._group_lock:  # hand the lead to the oldest waiting put, if any
                if self._group:
                    self._group[0].lead = True
                    self._group[0].done.set()
                else:
                    self._leading = False

    def _commit_each(self, group: list[_Put]) -> None:
        with self._tx() as conn:
            for put in group:
                conn.execute("SAVEPOINT tl_put")
                self._local.merge_error = None
                try:
                    conn.executemany(_PUT, put.rows)
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO tl_put")
                    put.error = self._local.merge_error or exc
                conn.execute("RELEASE tl_put")

    def claim(self, limit: int, *, now: float, lease: float) -> list[ClaimedEvent]:
        with self._tx() as conn:
            (ids,) = conn.execute(_CLAIM_IDS, {"now": now, "limit": max(limit, 0)}).fetchone()
            conn.execute(_CLAIM, {"until": now + lease, "ids": ids})
        # Read after the commit, outside the lock: leased rows are ours until the lease ends, and nothing
        # else writes a leased row (bury_expired and a second claim both skip it).
        if ids == "[]":
            return []
        conn = self._connect()
        (text,) = conn.execute(_CLAIMED, (ids,)).fetchone()
        if text is None:  # every claimed row went meanwhile (another process settled it after our lease)
            return []
        try:
            rows = json.loads(text)  # one parse for the whole batch
        except ValueError:  # a payload that is not JSON: read row by row, and hand that one over as {}
            rows = [(*row[:4], _load_or_empty(row[4]), row[5]) for row in conn.execute(_CLAIMED_ROWS, (ids,))]
        # Sorted: the aggregate has no defined order.
        return [ClaimedEvent(*row) for row in sorted(rows)]

    def ack(self, ids: Iterable[int]) -> None:
        self.settle(Settlement(now=0.0, done=list(ids)))

    def retry(self, ids: Iterable[int], *, at: float, error: str) -> None:
        self.settle(Settlement(now=at, retry=list(ids), retry_at=at, retry_error=error))

    def bury(self, failures: Iterable[tuple[int, str]], *, now: float) -> None:
        self.settle(Settlement(now=now, dead=list(failures)))

    def settle(self, settlement: Settlement) -> None:
        """One transaction for a whole batch: one hand-off of the write lock instead of three or four."""
        s = settlement
        if not (s.done or s.dead or s.retry or s.log):
            return
        # Prepared before taking the lock. Not dataclasses.astuple: it deep-copies every entry.
        log_rows = [_log_row(e) for e in s.log]
        with self._tx() as conn:
            if s.done:
                conn.execute(_ACK, (_dump_rows(s.done),))
            if s.dead:  # rare, and each with its own reason: row by row
                conn.executemany(_BURY_ONE, [(s.now, reason, i) for i, reason in s.dead])
            if s.retry:
                conn.execute(_RETRY, (s.retry_at, s.retry_error, _dump_rows(s.retry)))
            _insert_log(conn, log_rows)

    def release(self, ids: Iterable[int], *, at: float) -> None:
        """Give claimed rows back unsent, due at `at`; their attempt still counts (claims are attempts)."""
        ids = list(ids)
        if ids:
            self._write(_RELEASE, (at, _dump_rows(ids)))

    def checkpoint(self) -> None:
        """Copy the WAL back into the database, keeping it bounded: the worker calls this between cycles.

        PASSIVE takes no write lock (ours or SQLite's): puts go on meanwhile, and its fsyncs happen on
        the calling thread, not inside a request's commit. Frames a reader still needs wait for the next.
        """
        self._connect().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def bury_expired(self, *, event_time_before: int, reason: str, now: float) -> int:
        where = " WHERE dead = 0 AND event_time < ? AND leased_until <= ?"
        return self._write(_BURY + where, (now, reason, event_time_before, now))

    def counts(self, *, now: float) -> OutboxCounts:
        alive, pending, in_flight, dead = self._connect().execute(_COUNTS, (now,)).fetchone()
        return OutboxCounts(pending, alive - pending - in_flight, in_flight, dead)

    def next_due(self, *, now: float) -> float | None:
        # max(available_at, leased_until) is available_at itself, by the invariant above the schema.
        (due,) = self._connect().execute("SELECT MIN(available_at) FROM outbox WHERE dead = 0").fetchone()
        return None if due is None else float(due)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return [DeadLetter(*row) for row in self._connect().execute(_DEAD_LETTERS, (limit,))]

    def retry_dead(self, *, now: float) -> int:
        return self._write(_RETRY_DEAD, (now,))

    def log(self, entries: Sequence[LogEntry]) -> None:
        self.settle(Settlement(now=0.0, log=entries))

    def log_since(self, since: float) -> list[LogEntry]:
        rows = self._connect().execute(_LOG_SINCE, (since,))
        return [LogEntry(*r[:6], *(bool(flag) for flag in r[6:])) for r in rows]

    def purge_log(self, *, before: float) -> int:
        return self._write("DELETE FROM delivery_log WHERE at < ?", (before,))

    def close(self) -> None:
        """Close the calling thread's connection (sqlite3 lets only its own thread close it).

        Other threads' connections close when those threads end or call close() themselves;
        using the outbox again afterwards opens a new connection.
        """
        conn, self._local.conn = getattr(self._local, "conn", None), None
        if conn is not None:
            if self._local.pid == os.getpid():
                conn.close()
            else:
                _INHERITED.append(conn)


@dataclass(slots=True)
class _Row:
    id: int
    event: NewEvent
    payload: str  # JSON, as in SQLite: claims get a fresh copy and a bad payload fails in put()
    mergeable: bool
    attempts: int = 0
    available_at: float = 0.0
    leased_until: float = 0.0
    dead: bool = False
    died_at: float = 0.0
    error: str = ""


class MemoryOutbox:
    """The same semantics in dicts behind a lock, for tests and dry runs: nothing survives the process."""

    def __init__(self, *, merge: Merge | None = None) -> None:
        self._merge = merge
        self._lock = threading.Lock()
        self._rows: dict[int, _Row] = {}
        self._unclaimed: dict[tuple[str, str], _Row] = {}  # merge candidates, rechecked when used
        self._log: list[LogEntry] = []
        self._last_id = 0

    def put_nowait(self, events: Sequence[NewEvent]) -> bool:
        self.put(events)  # a lock held only for dict updates: never worth a thread hop
        return True

    def put(self, events: Sequence[NewEvent]) -> None:
        dumped = [(e, _dump(e.payload)) for e in events]
        with self._lock:  # unlike SQLite, a merge function that raises keeps the batch's earlier events
            for e, payload in dumped:
                row = self._unclaimed.get((e.event_name, e.event_id))
                if self._merge and row and row.id in self._rows and row.attempts == 0 and not row.dead:
                    row.payload = _dump(self._merge(json.loads(row.payload), json.loads(payload)))
                    continue
                self._last_id += 1
                row = self._rows[self._last_id] = _Row(self._last_id, e, payload, self._merge is not None)
                if row.mergeable:
                    self._unclaimed[e.event_name, e.event_id] = row

    def claim(self, limit: int, *, now: float, lease: float) -> list[ClaimedEvent]:
        with self._lock:
            due = [r for r in self._alive() if r.available_at <= now and r.leased_until <= now]
            due = sorted(due, key=lambda r: (r.available_at, r.id))[: max(limit, 0)]
            for r in due:
                r.attempts += 1
                r.leased_until = r.available_at = now + lease
                if self._unclaimed.get((r.event.event_name, r.event.event_id)) is r:
                    del self._unclaimed[r.event.event_name, r.event.event_id]  # claimed: no longer mergeable
            return [
                ClaimedEvent(r.id, r.event.event_id, r.event.event_name, r.event.event_time,
                             json.loads(r.payload), r.attempts)
                for r in sorted(due, key=lambda r: r.id)
            ]  # fmt: skip

    def _alive(self, ids: Iterable[int] | None = None) -> list[_Row]:
        rows = self._rows.values() if ids is None else filter(None, map(self._rows.get, ids))
        return [r for r in rows if not r.dead]

    def ack(self, ids: Iterable[int]) -> None:
        self.settle(Settlement(now=0.0, done=list(ids)))

    def retry(self, ids: Iterable[int], *, at: float, error: str) -> None:
        self.settle(Settlement(now=at, retry=list(ids), retry_at=at, retry_error=error))

    def _bury(self, rows: list[_Row], reasons: Callable[[_Row], str], now: float) -> int:
        for r in rows:
            r.dead, r.died_at, r.error, r.leased_until = True, now, reasons(r), 0.0
        return len(rows)

    def bury(self, failures: Iterable[tuple[int, str]], *, now: float) -> None:
        self.settle(Settlement(now=now, dead=list(failures)))

    def bury_expired(self, *, event_time_before: int, reason: str, now: float) -> int:
        with self._lock:
            old = [
                r for r in self._alive() if r.event.event_time < event_time_before and r.leased_until <= now
            ]
            return self._bury(old, lambda _: reason, now)

    def counts(self, *, now: float) -> OutboxCounts:
        with self._lock:
            alive = self._alive()
            pending = sum(r.attempts == 0 for r in alive)
            in_flight = sum(r.leased_until > now for r in alive)
            dead = len(self._rows) - len(alive)
            return OutboxCounts(pending, len(alive) - pending - in_flight, in_flight, dead)

    def next_due(self, *, now: float) -> float | None:
        with self._lock:
            return min((r.available_at for r in self._alive()), default=None)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            dead = sorted((r for r in self._rows.values() if r.dead), key=lambda r: (-r.died_at, -r.id))
            return [
                DeadLetter(r.id, r.event.event_id, r.event.event_name, r.event.event_time, r.attempts,
                           r.error, r.died_at)
                for r in dead[:limit]
            ]  # fmt: skip

    def retry_dead(self, *, now: float) -> int:
        with self._lock:
            dead = [r for r in self._rows.values() if r.dead]
            for r in dead:
                r.dead, r.attempts, r.mergeable, r.available_at, r.leased_until = False, 0, False, now, 0.0
            return len(dead)

    def settle(self, settlement: Settlement) -> None:
        s = settlement
        with self._lock:  # all of it at once, as SQLite's one transaction
            for i in s.done:
                self._rows.pop(i, None)
            reasons = dict(s.dead)
            self._bury(self._alive(reasons), lambda r: reasons[r.id], s.now)
            for r in self._alive(s.retry):
                r.available_at, r.leased_until, r.error = s.retry_at, 0.0, s.retry_error
            self._log.extend(s.log)

    def release(self, ids: Iterable[int], *, at: float) -> None:
        with self._lock:
            for r in self._alive(ids):
                r.available_at, r.leased_until = at, 0.0

    def checkpoint(self) -> None:
        pass  # nothing on disk

    def log(self, entries: Sequence[LogEntry]) -> None:
        self.settle(Settlement(now=0.0, log=entries))

    def log_since(self, since: float) -> list[LogEntry]:
        with self._lock:
            return sorted((e for e in self._log if e.at >= since), key=lambda e: e.at)

    def purge_log(self, *, before: float) -> int:
        with self._lock:
            kept = [e for e in self._log if e.at >= before]
            purged, self._log = len(self._log) - len(kept), kept
            return purged

    def close(self) -> None:
        pass


def open_outbox(url: str, *, merge: Merge | None = None) -> Outbox:
    """`sqlite:///relative/to/cwd.db`, `sqlite:////absolute/path.db` or `memory://`."""
    if url == "memory://":
        return MemoryOutbox(merge=merge)
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
    if not path or path == ":memory:":  # an in-memory SQLite database would be one per thread: use memory://
        raise ValueError(f"outbox URL must be sqlite:///PATH or memory://, got {url!r}")
    return SQLiteOutbox(path, merge=merge)
