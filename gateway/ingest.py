"""Ingest: node frames in (from any transport), verified, turned into events, stored, acked.

One worker task drains a queue of received frames in batches. For each batch it

1. opens every frame (``linli.link``: header, key, HMAC, replay window, JSON),
2. runs the rules (registry state, thresholds, pseudonyms, pet answers, command results),
3. stores the events **and** the registry and replay state in **one** SQLite transaction
   (through the event sink, i.e. the outbox),
4. only then sends the acks (and any commands due for the nodes that just spoke).

If the transaction fails nothing is acked and the in-memory state of the batch is rolled back,
so the nodes retry and nothing already accepted is lost. Bad frames are counted by reason (per
node when the node is known) and never stop the worker.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional, Protocol

from linli import commands as cmdstore
from linli import registry
from linli.config import Config
from linli.events import Event, new_event
from linli.link import Flag, Kind, LinkKeys, Reason, Role, Verdict, Window, seal
from linli.link.frame import encode_body
from linli.link.receiver import Receiver
from linli.pets import BUZZ, PetRegistry
from linli.rules import PayloadError, Rules

log = logging.getLogger("linli.ingest")

Reply = Callable[[bytes], Awaitable[None]]


class EventSink(Protocol):
    """What ingest needs from the outbox: store events and run ``fn(conn)`` in one transaction.

    A sink that also has ``new_chain()`` and takes ``add(..., chain=...)`` (see
    :class:`linli.outbox.Chain`) lets ingest overlap consecutive batches; any other sink gets
    one batch at a time."""

    async def add(self, events: list[Event], fn: Optional[Callable[[sqlite3.Connection], Any]] = None) -> Any: ...


@dataclass(slots=True)
class _Item:
    raw: bytes
    reply: Reply
    topic_id: Optional[str]
    source: str
    received: float


@dataclass
class _Out:
    """What to send once the batch is stored: (node, kind, body, reply)."""

    frames: list = field(default_factory=list)
    results: list = field(default_factory=list)  # (command.result event, node, seq)


@dataclass(slots=True)
class _Batch:
    """One prepared batch between the worker and the committer."""

    events: list
    out: _Out
    txn: Callable
    touched: dict  # node -> its state before the batch (None: new node), for a rollback
    windows_before: dict
    size: int
    stored: Optional[asyncio.Future] = None


class Ingest:
    """The gateway's node-facing core. ``submit()`` is the one entry point for every transport."""

    def __init__(
        self,
        cfg: Config,
        lookup: Callable[[str], Optional[tuple[LinkKeys, Role]]],
        sink: EventSink,
        pets: PetRegistry,
        *,
        batch: int = 256,
        depth: int = 2,
        stage_state: Optional[Callable[[sqlite3.Connection, registry.NodeState], None]] = None,
    ):
        self.cfg = cfg
        self.lookup = lookup
        self.sink = sink
        self.pets = pets
        self.rules = Rules(cfg)
        self.batch = batch
        self.nodes: dict[str, registry.NodeState] = {}
        self.receiver = Receiver(lookup)
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=10000)
        self.counts: dict[str, int] = {}
        self._rejected_reported: dict[str, dict[str, int]] = {}  # node -> counts last sent upstream
        self._down: dict[str, list[int]] = {}  # node -> [next, reserved]
        self._replies: dict[str, Reply] = {}  # node -> how to reach it now
        self._tasks: list[asyncio.Task] = []
        self.depth = depth
        self._inflight: collections.deque[_Batch] = collections.deque()
        self._chain = None
        # Called inside the storing transaction for each node whose state changed (the outbox
        # queues its retained upstream snapshot there, so it commits with the events).
        self.stage_state = stage_state
        self.on_events: Optional[Callable[[list[Event]], None]] = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        def load(conn):
            registry.init(conn)
            cmdstore.init(conn)
            return registry.load_all(conn), registry.load_windows(conn)

        nodes, windows = await self.sink.add([], load)
        self.nodes = nodes
        for node, (last, bitmap, keyfp) in windows.items():
            self.receiver.windows[node] = Window(last, bitmap, keyfp)
        # A sink that can chain writes (the outbox) lets batches overlap; any other, one at a time.
        self._chain = self.sink.new_chain() if hasattr(self.sink, "new_chain") else None
        self._slots = asyncio.Semaphore(self.depth if self._chain is not None else 1)
        self._gate = asyncio.Lock()
        self._more = asyncio.Event()
        self._tasks = [asyncio.create_task(self._worker(), name="ingest"), asyncio.create_task(self._committer(), name="ingest-acks")]

    async def stop(self) -> None:
        """Stop taking frames; batches already handed to the sink still get their acks."""
        worker, committer = self._tasks or (None, None)
        if worker is None:
            return
        worker.cancel()
        await asyncio.wait([worker])
        deadline = time.monotonic() + 5.0
        while self._inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the committer acks what is being stored
        committer.cancel()
        await asyncio.wait([committer])
        self._tasks = []

    def submit(self, raw: bytes, reply: Reply, *, topic_id: Optional[str] = None, source: str = "mqtt") -> None:
        """Hand over one received frame (from the event loop). Drops and counts when overloaded."""
        try:
            self.queue.put_nowait(_Item(bytes(raw), reply, topic_id, source, time.time()))
        except asyncio.QueueFull:
            self._count("overload")

    def count_line_error(self, label: str) -> None:
        """A transport-level rejection (serial CRC, oversize burst) with no node to blame."""
        self.receiver.counts[label] += 1
        self._count(label)

    def _count(self, what: str, node: Optional[str] = None) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        st = self.nodes.get(node) if node else None
        if st is not None:
            st.rejected[what] = st.rejected.get(what, 0) + 1

    # -- the worker --------------------------------------------------------------------------
    # Two tasks: the worker opens frames, applies the rules and hands each batch's transaction
    # to the sink; the committer waits for the commits in order and only then sends the acks.
    # Up to ``depth`` batches are between the two, so the next batch is verified while the
    # previous one is written and fsynced. The sink's chain makes a batch fail when an earlier
    # one failed (each is built on the in-memory state of the one before); the committer then
    # undoes all of them in memory, newest first, and nothing of them is acked.
    async def _worker(self) -> None:
        while True:
            items = [await self.queue.get()]
            while len(items) < self.batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
            await self._slots.acquire()
            async with self._gate:  # only taken while failed batches are being undone
                try:
                    b = self._prepare(items)
                except Exception:  # never let one batch kill ingest; its frames will be retried
                    log.exception("ingest batch of %d frames failed; not acknowledged, nodes will retry", len(items))
                    self._count("batch_failed")
                    b = None
                if b is None:
                    self._slots.release()
                    continue
                kw = {"chain": self._chain} if self._chain is not None else {}
                b.stored = asyncio.ensure_future(self.sink.add(b.events, b.txn, **kw))
                self._inflight.append(b)
                self._more.set()

    async def _committer(self) -> None:
        while True:
            while not self._inflight:
                self._more.clear()
                await self._more.wait()
            b = self._inflight[0]
            try:
                due = await asyncio.shield(b.stored)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._undo_inflight(exc)
                continue
            self._inflight.popleft()
            try:
                await self._finish(b, due)
            except Exception:  # stored: the nodes retry and get a duplicate's ack
                log.exception("sending the acks of a stored batch failed")
            finally:
                self._slots.release()

    async def _undo_inflight(self, exc: Exception) -> None:
        async with self._gate:
            failed = list(self._inflight)
            # The later batches fail too (the chain): wait until they have, so none is running.
            await asyncio.wait([b.stored for b in failed])
            for b in reversed(failed):
                if not b.stored.exception():
                    log.error("a batch after a failed one was stored anyway; its frames may be stored twice")
                self._rollback(b)
            self._inflight.clear()
            if self._chain is not None:
                self._chain.reset()
            for b in failed:
                log.error("ingest batch of %d frames failed; not acknowledged, nodes will retry: %s", b.size, b.stored.exception() or exc)
                self._count("batch_failed")
                self._slots.release()

    def _rollback(self, b: "_Batch") -> None:
        """Undo a batch in memory: the nodes get no ack and will send these frames again."""
        for node, w in b.windows_before.items():
            self.receiver.windows[node] = w
        for node, st in b.touched.items():
            if st is None:
                self.nodes.pop(node, None)
            else:
                self.nodes[node] = st

    def _prepare(self, items: list[_Item]) -> Optional["_Batch"]:
        """Open, apply and build the transaction of one batch (on the event loop, in one go:
        letting the loop run halfway only handed the GIL to the outbox thread more often, and
        bench/ingest.py was slower for it)."""
        events: list[Event] = []
        out = _Out()
        touched: dict[str, Optional[registry.NodeState]] = {}
        windows_before: dict[str, Window] = {}
        accepted = []  # (frame) committed to windows after storage
        now = time.time()
        try:
            for it in items:
                r = self.receiver.open(it.raw, topic_id=it.topic_id)
                if not r.ok:
                    self._count(r.reason.label, r.node_id)
                    log.debug("rejected frame from %s via %s: %s", r.node_id, it.source, r.detail)
                    # The tag verified but the node will never get this frame accepted: tell it so it
                    # stops retrying. (Unauthenticated rejections get no answer: nothing to trust.)
                    if r.reason is Reason.REPLAYED and r.node_id and r.counter:
                        out.frames.append((r.node_id, Kind.ACK, {"c": r.counter, "r": int(r.reason)}, it.reply))
                    continue
                f = r.frame
                self._replies[f.node_id] = it.reply
                if f.verdict is Verdict.DUPLICATE:
                    self._count("duplicate", f.node_id)
                    out.frames.append((f.node_id, Kind.ACK, {"c": f.counter, "r": 0}, it.reply))
                    continue
                st = self.nodes.get(f.node_id)
                if f.node_id not in windows_before:
                    w = self.receiver.window(f.node_id)
                    windows_before[f.node_id] = Window(w.last, w.bitmap, w.keyfp)
                    touched[f.node_id] = st.copy() if st is not None else None
                if st is None:
                    st = self.nodes[f.node_id] = registry.NodeState(f.node_id, f.role.label, first_seen=now)
                at = float(f.ts) if f.ts else it.received
                old = st.availability
                try:
                    evs = self._apply(st, f, at, out, it.reply)
                except PayloadError as exc:
                    self._count("malformed", f.node_id)
                    log.info("malformed payload from %s (counter %d): %s", f.node_id, f.counter, exc)
                    evs = []
                    out.frames.append((f.node_id, Kind.ACK, {"c": f.counter, "r": int(Reason.MALFORMED)}, it.reply))
                else:
                    out.frames.append((f.node_id, Kind.ACK, {"c": f.counter, "r": 0}, it.reply))
                st.last_seen = max(st.last_seen or 0, it.received)
                if f.kind is not Kind.STATUS and st.asleep_until and st.asleep_until < it.received:
                    st.asleep_until = None  # it woke up
                new = registry.availability(st, now, self.cfg.availability.grace_s, self.cfg.availability.heartbeat_misses, self.cfg.availability.default_heartbeat_s)
                if old == "offline" and new != "offline":
                    evs = self.rules.availability_change(st, old, new, now) + evs
                st.availability = new
                events += evs
                # Mark seen now so a copy later in this batch is a duplicate; undone if storing fails.
                self.receiver.commit(f)
                accepted.append(f)
                self._count("accepted", f.node_id)
        except BaseException:  # a bug halfway: leave no half-applied batch behind
            self._rollback(_Batch(events, out, None, touched, windows_before, len(items)))
            raise
        if not accepted and not out.frames:
            return None
        # What this batch stores, as of now: the transaction runs on the outbox thread, maybe
        # while the next batch already changes the live state.
        states = {node: self.nodes[node].copy() for node in touched}
        windows = {node: (w.last, w.bitmap, w.keyfp) for node, w in ((n, self.receiver.window(n)) for n in touched)}
        history = [(f.node_id, now, _KIND_LABELS[f.kind], _summary(f)) for f in accepted]
        need_down: dict[str, int] = {}
        for node, *_ in out.frames:
            need_down[node] = need_down.get(node, 0) + 1

        def txn(conn: sqlite3.Connection):
            # Runs before the sink inserts ``events``, so the result events can be completed here.
            for ev, node, seq in out.results:
                found = cmdstore.resolve(conn, node, seq, ev.data["ok"], ev.data["result"])
                if found:
                    ev.data["command_id"], ev.data["op"] = found
            for node, st in states.items():
                registry.save(conn, st)
                registry.save_window(conn, node, *windows[node])
                if self.stage_state:
                    self.stage_state(conn, st)
            if history:
                registry.history_many(conn, history)
            due = {}
            for node in states:
                rows = cmdstore.due(conn, node)
                for seq, *_ in rows:
                    cmdstore.mark_sent(conn, seq, now)
                if rows:
                    due[node] = rows
            self._reserve_down(conn, need_down, due)
            return due

        return _Batch(events, out, txn, touched, windows_before, len(items))

    async def _finish(self, b: "_Batch", due: Optional[dict]) -> None:
        """After the commit: acks, then the commands that were due for the nodes that spoke."""
        out = b.out
        for node, rows in (due or {}).items():
            reply = self._replies.get(node)
            for seq, cmd_id, op, args in rows:
                out.frames.append((node, Kind.COMMAND, {"id": seq, "op": op, "a": args}, reply))
        await self._send(out)
        if self.on_events and b.events:
            self.on_events(b.events)

    def _apply(self, st: registry.NodeState, f, at: float, out: _Out, reply: Reply) -> list[Event]:
        body = f.body
        k = f.kind
        if k is Kind.HELLO:
            return self.rules.hello(st, body, at)
        if k is Kind.TELEMETRY:
            return self.rules.telemetry(st, body, at)
        if k is Kind.STATUS:
            return self.rules.status(st, body, at)
        if k is Kind.TIME_SYNC:
            out.frames.append((f.node_id, Kind.TIME_SYNC, {"t": int(time.time())}, reply))
            return []
        if k is Kind.EVENT:
            if st.role == "petscan" and body.get("ev") == "scan":
                if not isinstance(body.get("tag"), str):
                    raise PayloadError("scan needs tag (string)")
                answer = self.pets.answer(body["tag"])
                # The scanner waits for this: send it with the ack, before anything upstream.
                out.frames.append((f.node_id, Kind.COMMAND, {"id": 0, "op": "pet.status", "a": {"tag": answer[1], "status": answer[0], "buzz": BUZZ[answer[0]]}}, reply))
                return self.rules.event(st, body, at, pet_answer=answer)
            return self.rules.event(st, body, at)
        if k is Kind.COMMAND_RESULT:
            return self._command_result(st, body, at, out)
        raise PayloadError("a node does not send %s frames" % k.label)

    def _command_result(self, st, body, at, out: _Out) -> list[Event]:
        seq = body.get("id")
        if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(body.get("ok"), bool):
            raise PayloadError("command_result needs id (int) and ok (bool)")
        if seq == 0:
            return []  # the answer to a gateway-initiated display command (pet.status)
        result = {k: v for k, v in body.items() if k not in ("id", "ok")}
        ev = new_event("command.result", node=st.node, data={"command_id": None, "op": None, "ok": body["ok"], "result": result}, at=at)
        # The backend's command id is looked up inside the batch's transaction (see _prepare).
        out.results.append((ev, st.node, seq))
        return [ev]

    def _reserve_down(self, conn, need: dict, due: dict) -> None:
        for node in set(need) | set(due):
            n = need.get(node, 0) + len(due.get(node, ()))
            nxt = self._down.get(node)
            if nxt is None or nxt[0] + n > nxt[1]:
                start = registry.reserve_downlink(conn, node, block=max(256, n))
                self._down[node] = [start, start + max(256, n)]

    async def _send(self, out: _Out) -> None:
        now = int(time.time())
        for node, kind, body, reply in out.frames:
            entry = self.lookup(node)
            if entry is None or reply is None:
                continue
            keys, role = entry
            nxt = self._down.get(node)
            if nxt is None or nxt[0] >= nxt[1]:
                # Only for frames outside a stored batch (e.g. re-acks): reserve a block now.
                blk = await self.sink.add([], lambda conn, n=node: registry.reserve_downlink(conn, n))
                nxt = self._down[node] = [blk, blk + 256]
            counter = nxt[0]
            nxt[0] += 1
            if kind is Kind.ACK:  # the commonest frame by far: what encode_body() would write
                payload = b'{"c":%d,"r":%d}' % (body["c"], body["r"])
            else:
                payload = encode_body(body)
            raw = seal(keys, kind, role, node, counter=counter, ts=now, payload=payload, flags=Flag.DOWN)
            try:
                await reply(raw)
            except Exception as exc:  # a vanished port or broker: the node will retry and be re-acked
                log.warning("could not send %s to %s: %s", kind.label, node, exc)
                self._count("send_failed", node)

    async def send_due(self, node: str) -> int:
        """Send a node its pending commands now, if it is awake and reachable; returns how many."""
        st = self.nodes.get(node)
        reply = self._replies.get(node)
        if st is None or reply is None or st.availability in ("asleep", "offline"):
            return 0  # it gets them right after its next report

        def txn(conn):
            rows = cmdstore.due(conn, node)
            now = time.time()
            for seq, *_ in rows:
                cmdstore.mark_sent(conn, seq, now)
            self._reserve_down(conn, {}, {node: rows})
            return rows

        rows = await self.sink.add([], txn)
        out = _Out()
        for seq, cmd_id, op, args in rows:
            out.frames.append((node, Kind.COMMAND, {"id": seq, "op": op, "a": args}, reply))
        await self._send(out)
        return len(rows)

    # -- periodic ----------------------------------------------------------------------------
    _REJECTIONS = frozenset(r.label for r in Reason if r is not Reason.OK)

    def rejection_events(self) -> list[Event]:
        """``node.rejected`` for each known node with new rejections since the last call."""
        seen = self._rejected_reported
        out = []
        for node, st in self.nodes.items():
            now = {k: v for k, v in st.rejected.items() if k in self._REJECTIONS}
            before = seen.get(node, {})
            delta = {k: v - before.get(k, 0) for k, v in now.items() if v > before.get(k, 0)}
            if delta:
                out.append(new_event("node.rejected", node=node, data={"counts": delta}))
                seen[node] = now
        return out

    async def check_availability(self, now: Optional[float] = None) -> list[Event]:
        """Emit node.offline / node.online for state changes; run every few seconds."""
        now = time.time() if now is None else now
        a = self.cfg.availability
        events, changed = [], []
        for st in self.nodes.values():
            new = registry.availability(st, now, a.grace_s, a.heartbeat_misses, a.default_heartbeat_s)
            if new != st.availability:
                events += self.rules.availability_change(st, st.availability, new, now)
                st.availability = new
                changed.append(st)
        if changed:
            def txn(conn):
                for st in changed:
                    registry.save(conn, st)
                    registry.history(conn, st.node, "availability", st.availability, at=now)
                    if self.stage_state:
                        self.stage_state(conn, st)

            await self.sink.add(events, txn)
            if self.on_events and events:
                self.on_events(events)
        return events


_KIND_LABELS = {k: k.label for k in Kind}  # an enum's .name is a property: slow per frame


def _summary(f) -> str:
    """The node_history line of a frame (JSON, at most 200 characters)."""
    if "ev" not in f.body:
        return '{"c":%d}' % f.counter  # what encode_body() writes, without its cost
    return encode_body({"c": f.counter, "ev": f.body.get("ev")}).decode()[:200]
