"""The durable outbox: every event is stored (SQLite, WAL) before anything is acked, numbered,
chained, and deleted only after the upstream broker's PUBACK.

At insertion, in one transaction, each event gets the next per-gateway sequence number, the
hash of the previous event (``prevhash``) and its own ``hash``, and is stored as the exact
CloudEvent bytes the uplink will publish, so a re-publish after a crash is byte-identical
(same ``id``, same ``seq``). The chain state (last seq, last hash, chain id) lives in the same
database, so the chain continues across restarts.

**When full** (``max_events`` rows or ``max_bytes`` of payload): the oldest TELEMETRY events go
first, then the oldest NORMAL ones; ALARM events are never dropped. If only alarms remain the
outbox accepts alarms over the bound (``stats().over_bound``, and a warning in the log) rather
than drop one. Every drop is counted (``stats().dropped``) and reported upstream as a
``gateway.outbox.dropped`` event (itself an alarm) carrying the dropped sequence numbers and the
chain hashes at the edges of each run, so a verifier can tell a reported drop from a loss. The
first drop is reported at once, later ones at most every ``drop_report_s`` seconds.

All SQLite work runs on one dedicated thread; consecutive writes are committed together (one
fsync), each in its own savepoint, so one failing caller never rolls back another's. Stored
events are committed with the configured ``synchronous`` (``full``: they survive power loss
before any node is acked); deletes after PUBACK and node-state marks alone are committed
without an fsync, so after a power loss a few acknowledged events may be published again
(same ``id``, ``seq`` and bytes: at least once, as docs/events.md tells backends).

>>> import asyncio, tempfile, os
>>> from linli.contract import Contract
>>> from linli.events import new_event
>>> async def demo():
...     ob = await Outbox.open(os.path.join(tempfile.mkdtemp(), "gw.db"), Contract("site-1", "gw-1"))
...     await ob.add([new_event("bin.tipped", node="bin-1", data={"tilt_deg": 80})])
...     [p] = await ob.read(after=0, limit=10)
...     await ob.ack([p.seq])
...     st = await ob.stats()
...     await ob.close()
...     return p.seq, p.topic, st.pending
>>> asyncio.run(demo())
(1, 'linli/v1/site-1/gw-1/events/bin.tipped', 0)
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from linli.contract import GENESIS, Contract
from linli.errors import LinliError
from linli.events import EVENT_TYPES, Event
from linli.outbox_bound import SQL_VARS as _SQL_VARS, BoundPolicy

log = logging.getLogger("linli.outbox")

DEFAULT_MAX_EVENTS = 200_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class OutboxError(LinliError):
    """The outbox could not store or read events (disk full, database damaged, closed)."""


class OutboxClosed(OutboxError):
    """The outbox was closed; nothing more can be stored."""


class ChainBroken(OutboxError):
    """Not stored because an earlier write of the same :class:`Chain` failed."""


class Chain:
    """Ties writes that build on each other: once one fails (its ``fn``, its insert or its
    transaction's COMMIT), every later write of the chain fails with :class:`ChainBroken`
    without running, until :meth:`reset`. Ingest uses it to overlap batches safely.

    >>> # chain = outbox.new_chain(); await outbox.add(events, fn, chain=chain)
    """

    __slots__ = ("broken",)

    def __init__(self):
        self.broken = False

    def reset(self) -> None:
        """Call on the event loop once every write submitted before has finished."""
        self.broken = False


@dataclass(frozen=True)
class Pending:
    """One stored event ready to publish: the exact bytes, and what MQTT 5 properties mirror."""

    seq: int
    id: str
    type: str
    source: str  # the CloudEvents source
    topic: str
    payload: bytes


_PENDING_FIELDS = ("seq", "id", "type", "source", "topic", "payload")


def _pending(row: tuple) -> Pending:
    """A :class:`Pending` from its row, without the frozen dataclass's per-field setattr (the
    uplink reads every event once)."""
    p = object.__new__(Pending)
    p.__dict__.update(zip(_PENDING_FIELDS, row))
    return p


@dataclass(frozen=True)
class NodeStateMsg:
    node: str
    version: int
    topic: str
    payload: bytes


@dataclass
class OutboxStats:
    pending: int
    bytes: int
    max_events: int
    max_bytes: int
    last_seq: int
    chain: str
    dropped: int
    over_bound: bool


@dataclass
class _State:
    seq: int = 0
    hash: str = GENESIS
    count: int = 0
    bytes: int = 0
    dropped: int = 0
    over_bound: bool = False
    last_report: float = 0.0
    pending_drops: int = 0
    wrote: bool = False  # events were written in this group (wake the uplink)
    wrote_states: bool = False  # node states were written in this group

    def copy(self) -> "_State":
        return replace(self)


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    write: bool
    future: Optional[asyncio.Future] = None
    done: Optional[Callable] = field(default=None)
    chain: Optional[Chain] = None
    # False for bookkeeping that may be lost on power loss without losing an event: deleting
    # what the broker acknowledged (at worst it is published again, same id and bytes) and
    # marking a node state published (at worst it is published again).
    durable: bool = True


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    source TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    prevhash TEXT NOT NULL,
    hash TEXT NOT NULL,
    stored REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_events_by_priority ON outbox_events (priority, seq);
CREATE TABLE IF NOT EXISTS outbox_meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS outbox_drops (seq INTEGER PRIMARY KEY, type TEXT NOT NULL, prevhash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox_node_state (
    node TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
"""


class Outbox(BoundPolicy):
    """The gateway's durable event store. Create it with :meth:`open` (a coroutine).

    ``max_events`` / ``max_bytes`` bound it (see the module doc for the policy);
    ``chain_key`` switches the chain from SHA-256 to HMAC-SHA256 (``hashalg`` says which);
    ``synchronous`` is SQLite's: ``"full"`` survives power loss, ``"normal"`` only crashes.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        contract: Contract,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        chain_key: Optional[bytes] = None,
        synchronous: str = "full",
        drop_report_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ):
        if max_events < 1:
            raise OutboxError("max_events must be >= 1, got %r" % max_events)
        if max_bytes < 1024:
            raise OutboxError("max_bytes must be >= 1024, got %r" % max_bytes)
        if synchronous not in ("full", "normal", "extra"):
            raise OutboxError("synchronous must be 'full', 'normal' or 'extra', got %r" % synchronous)
        self.path = Path(path)
        self.contract = contract
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.chain_key = chain_key
        self.synchronous = synchronous
        self.drop_report_s = drop_report_s
        self.clock = clock
        self.chain = ""
        self._per_type: dict[str, tuple[int, str]] = {}  # event type -> (priority, topic)
        self._st = _State()
        self._q: "queue.SimpleQueue[Optional[_Job]]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._closed = False
        self._report_timer: Optional[asyncio.TimerHandle] = None
        #: set (on the event loop) whenever events were committed
        self.changed: Optional[asyncio.Event] = None
        #: set (on the event loop) whenever node states were committed
        self.states_changed: Optional[asyncio.Event] = None

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    async def open(cls, path: str | os.PathLike, contract: Contract, **kw) -> "Outbox":
        """Open (or create) the outbox database at ``path`` and start its thread."""
        ob = cls(path, contract, **kw)
        await ob._start()
        return ob

    @classmethod
    async def from_config(cls, cfg, **kw) -> "Outbox":
        """Open the outbox of a :class:`linli.config.Config` (``[outbox]``, ``gateway.db``)."""
        from linli.contract import Contract as _C

        return await cls.open(cfg.db_path, _C(cfg.gateway.site, cfg.gateway.id), max_events=cfg.outbox.max_events, max_bytes=int(cfg.outbox.max_mb * 1024 * 1024), **kw)

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.changed = asyncio.Event()
        self.states_changed = asyncio.Event()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ready: asyncio.Future = self._loop.create_future()
        self._thread = threading.Thread(target=self._worker, args=(ready,), name="linli-outbox", daemon=True)
        self._thread.start()
        await ready
        # Drops recorded before a crash are reported now.
        await self._submit(lambda conn: self._report_drops(conn, force=True), write=True)

    async def close(self) -> None:
        """Finish queued work and close the database."""
        if self._closed:
            return
        self._closed = True
        if self._report_timer:
            self._report_timer.cancel()
        self._q.put(None)
        if self._thread:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    async def __aenter__(self) -> "Outbox":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- the API -----------------------------------------------------------------------------
    def new_chain(self) -> Chain:
        """A :class:`Chain` for :meth:`add`."""
        return Chain()

    async def add(self, events: Iterable[Event], fn: Optional[Callable[[sqlite3.Connection], Any]] = None, *, chain: Optional[Chain] = None) -> Any:
        """Store ``events`` durably, in order, in one transaction; returns ``fn(conn)``'s result.

        ``fn`` (optional) runs first on the outbox thread inside the same transaction, so
        whatever it writes (a node's replay window, say) commits or rolls back together with
        the events. It must not commit, roll back or keep ``conn``. If ``fn`` or the insert
        raises, nothing of this call is stored and the exception is raised here.

        Each event gets ``seq`` and the hash chain now; ``events`` may be empty. With ``chain``
        it is not stored if an earlier write of that chain failed (see :class:`Chain`).
        """
        evs = list(events)
        try:
            for ev in evs:
                if ev.type not in EVENT_TYPES:
                    raise OutboxError("event type %r is not in the contract" % ev.type)
            if len({ev.id for ev in evs}) != len(evs):
                raise OutboxError("the same event (id) is twice in one add(); create each event once with new_event()")
        except OutboxError:
            if chain is not None:
                chain.broken = True  # before any later write of the chain is submitted
            raise

        def job(conn):
            result = fn(conn) if fn is not None else None
            if evs:
                self._insert(conn, evs)
                self._enforce_bound(conn)
                self._report_drops(conn)
            return result

        try:
            fut = self._submit(job, write=True, chain=chain)
        except OutboxClosed:
            if chain is not None:
                chain.broken = True
            raise
        return await fut

    async def transaction(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(conn)`` in a transaction on the outbox thread; returns its result."""
        return await self.add((), fn)

    async def query(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run a read-only ``fn(conn)`` on the outbox thread (no transaction of its own)."""
        return await self._submit(fn, write=False)

    def stage_node_state(self, conn: sqlite3.Connection, node: str, state: dict, at: Optional[float] = None) -> None:
        """Inside ``add(..., fn)``: store node ``node``'s latest state for the retained
        ``.../nodes/{node}/state`` topic (the uplink publishes it, latest only)."""
        topic = self.contract.node_state_topic(node)
        payload = self.contract.node_state(node, state, self.clock() if at is None else at)
        conn.execute(
            "INSERT INTO outbox_node_state (node, version, topic, payload) VALUES (?, 1, ?, ?) "
            "ON CONFLICT (node) DO UPDATE SET version = version + 1, topic = excluded.topic, payload = excluded.payload",
            (node, topic, payload),
        )
        self._st.wrote_states = True

    async def set_node_state(self, node: str, state: dict, at: Optional[float] = None) -> None:
        """Queue a retained snapshot of a node's state (replaces any unpublished one).

        >>> # await outbox.set_node_state("bin-0001", {"availability": "online", "fill_pct": 42})
        """
        await self.transaction(lambda conn: self.stage_node_state(conn, node, state, at))

    async def read(self, after: int = 0, limit: int = 1000) -> list[Pending]:
        """Stored events with ``seq > after``, oldest first (what the uplink publishes)."""

        def job(conn):
            rows = conn.execute("SELECT seq, id, type, source, topic, payload FROM outbox_events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall()
            return [_pending(r) for r in rows]

        return await self._submit(job, write=False)

    async def ack(self, seqs: Iterable[int]) -> int:
        """Delete events the broker acknowledged; returns how many were still there."""
        ids = list(seqs)
        if not ids:
            return 0

        def job(conn):
            n = 0
            for i in range(0, len(ids), _SQL_VARS):
                chunk = ids[i : i + _SQL_VARS]
                sizes = conn.execute("DELETE FROM outbox_events WHERE seq IN (%s) RETURNING length(payload)" % ",".join("?" * len(chunk)), chunk).fetchall()
                n += len(sizes)
                self._st.count -= len(sizes)
                self._st.bytes -= sum(s for (s,) in sizes)
            if self._st.over_bound and self._st.count <= self.max_events and self._st.bytes <= self.max_bytes:
                self._st.over_bound = False
                log.warning("outbox back within its bound (%d events, %d bytes)", self._st.count, self._st.bytes)
            return n

        return await self._submit(job, write=True, durable=False)

    async def node_states(self) -> list[NodeStateMsg]:
        """Node states not yet published (or changed since)."""
        return await self._submit(lambda conn: [NodeStateMsg(*r) for r in conn.execute("SELECT node, version, topic, payload FROM outbox_node_state WHERE version > published ORDER BY node")], write=False)

    async def node_state_published(self, node: str, version: int) -> None:
        """The broker acked ``version`` of ``node``'s state.

        Returns once queued, not committed: the mark is bookkeeping (lost, the state is only
        published again), the outbox runs jobs in order so a later :meth:`node_states` sees
        it, and marks queued together commit together (the uplink marks one node at a time,
        and a commit round trip per node made ingest's next batch wait)."""
        fut = self._submit(lambda conn: conn.execute("UPDATE outbox_node_state SET published = ? WHERE node = ? AND published < ?", (version, node, version)), write=True, durable=False)
        fut.add_done_callback(_log_mark_failure)

    async def stats(self) -> OutboxStats:
        def job(conn):
            s = self._st
            return OutboxStats(s.count, s.bytes, self.max_events, self.max_bytes, s.seq, self.chain, s.dropped, s.over_bound)

        return await self._submit(job, write=False)

    # -- the thread --------------------------------------------------------------------------
    def _submit(self, fn, *, write: bool, chain: Optional[Chain] = None, durable: bool = True) -> "asyncio.Future":
        if self._closed:
            raise OutboxClosed("the outbox is closed")
        fut = self._loop.create_future()
        self._q.put(_Job(fn, write, fut, chain=chain, durable=durable))
        return fut

    def _resolve(self, fut: asyncio.Future, result: Any, exc: Optional[BaseException]) -> None:
        if fut.cancelled():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def _post(self, fut, result, exc=None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._resolve, fut, result, exc)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _worker(self, ready: asyncio.Future) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            self._post(ready, None, OutboxError("cannot open the outbox database %s: %s" % (self.path, exc)))
            return
        self._post(ready, None)
        stop = False
        try:
            while not stop:
                job = self._q.get()
                jobs = [job]
                while len(jobs) < 256:
                    try:
                        jobs.append(self._q.get_nowait())
                    except queue.Empty:
                        break
                i = 0
                while i < len(jobs):
                    if jobs[i] is None:
                        stop = True
                        i += 1
                        continue
                    if jobs[i].write:
                        j = i
                        while j < len(jobs) and jobs[j] is not None and jobs[j].write:
                            j += 1
                        self._run_writes(conn, jobs[i:j])
                        i = j
                    else:
                        try:
                            self._post(jobs[i].future, jobs[i].fn(conn))
                        except BaseException as exc:
                            self._post(jobs[i].future, None, _wrap(exc))
                        i += 1
        finally:
            conn.close()

    def _run_writes(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        # A group of only non-durable jobs (deletes after PUBACK, state marks) commits without
        # an fsync: at full rate the uplink's acks were most of the outbox's commits, and each
        # fsync made the next ingest batch wait. In WAL mode synchronous=NORMAL keeps the
        # database consistent; a power loss can only undo these last commits (events published
        # again with the same id and bytes: at least once, as the contract says). Any group
        # with an event or other state in it is committed with the configured synchronous.
        light = self.synchronous != "normal" and not any(j.durable for j in jobs)
        if light:
            conn.execute("PRAGMA synchronous=NORMAL")
        try:
            self._run_group(conn, jobs)
        finally:
            if light:
                conn.execute("PRAGMA synchronous=%s" % self.synchronous.upper())

    def _run_group(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        snap = self._st.copy()
        self._st.wrote = self._st.wrote_states = False
        results = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                if job.chain is not None and job.chain.broken:
                    results.append((job, None, ChainBroken("not stored: an earlier write it builds on failed")))
                    continue
                before = self._st.copy()
                conn.execute("SAVEPOINT job")
                try:
                    r = job.fn(conn)
                    conn.execute("RELEASE job")
                    results.append((job, r, None))
                except BaseException as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    self._st = before
                    if job.chain is not None:
                        job.chain.broken = True
                    results.append((job, None, exc))
            self._save_meta(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._st = snap
            err = OutboxError("outbox transaction failed: %s" % exc)
            err.__cause__ = exc
            for job in jobs:
                if job.chain is not None:
                    job.chain.broken = True
                self._post(job.future, None, err)
            return
        # One hand-over to the loop for the whole group (each wakes it through a pipe).
        try:
            self._loop.call_soon_threadsafe(self._committed, results, self._st.wrote, self._st.wrote_states, bool(self._st.pending_drops))
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _committed(self, results: list, wrote: bool, wrote_states: bool, drops: bool) -> None:
        """On the loop: a group's results, then wake the uplink."""
        for job, r, exc in results:
            self._resolve(job.future, r, exc)
        if wrote:
            self.changed.set()
        if wrote_states:
            self.states_changed.set()
        if drops:
            self._schedule_report()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=10.0, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=%s" % self.synchronous.upper())
        conn.execute("PRAGMA journal_size_limit=%d" % (64 * 1024 * 1024))
        conn.executescript(_SCHEMA)
        meta = dict(conn.execute("SELECT key, value FROM outbox_meta"))
        if "chain" not in meta:
            meta["chain"] = os.urandom(8).hex()
            conn.execute("INSERT INTO outbox_meta VALUES ('chain', ?)", (meta["chain"],))
        self.chain = meta["chain"]
        st = self._st
        st.seq = int(meta.get("seq", 0))
        st.hash = meta.get("hash", GENESIS)
        st.dropped = int(meta.get("dropped", 0))
        st.count, st.bytes = conn.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox_events").fetchone()
        st.pending_drops = conn.execute("SELECT count(*) FROM outbox_drops").fetchone()[0]
        # A chain continues from the newest stored event even if meta lagged (it never should).
        row = conn.execute("SELECT seq, hash FROM outbox_events ORDER BY seq DESC LIMIT 1").fetchone()
        if row and row[0] > st.seq:
            st.seq, st.hash = row
        st.over_bound = st.count > self.max_events or st.bytes > self.max_bytes
        return conn

    def _save_meta(self, conn) -> None:
        st = self._st
        conn.executemany("INSERT OR REPLACE INTO outbox_meta VALUES (?, ?)", [("seq", st.seq), ("hash", st.hash), ("dropped", st.dropped)])

    # -- inside a transaction ----------------------------------------------------------------
    def _insert(self, conn, events: list[Event]) -> None:
        st = self._st
        now = self.clock()
        rows = []
        per_type = self._per_type
        contract, chain, key = self.contract, self.chain, self.chain_key
        fast = contract.encode_fast
        seq, h, nbytes = st.seq, st.hash, 0
        for ev in events:
            seq += 1
            r = fast(ev, seq=seq, chain=chain, prevhash=h, key=key)
            if r is None:  # data the careful RFC 8785 encoder must write
                ce, payload = contract.encode(ev, seq=seq, chain=chain, prevhash=h, key=key)
                r = ce["source"], ce["hash"], payload
            source, new_h, payload = r
            t = per_type.get(ev.type)
            if t is None:
                t = per_type[ev.type] = (int(ev.priority), contract.event_topic(ev.type))
            rows.append((seq, ev.id, ev.type, t[0], source, t[1], payload, h, new_h, now))
            h = new_h
            nbytes += len(payload)
        conn.executemany("INSERT INTO outbox_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        # Only once the insert succeeded (a failing one leaves the state as it was).
        st.seq, st.hash = seq, h
        st.count += len(rows)
        st.bytes += nbytes
        st.wrote = True


def _log_mark_failure(fut: asyncio.Future) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("could not mark a node state published (it will be published again): %s", fut.exception())


def _wrap(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        err = OutboxError("outbox database error: %s" % exc)
        err.__cause__ = exc
        return err
    return exc
