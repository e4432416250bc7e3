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
import copy
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional, Protocol

from linli import commands as cmdstore
from linli import registry
from linli.config import Config
from linli.events import Event, new_event
from linli.link import Flag, Kind, LinkKeys, Reason, Role, Window, seal
from linli.link.frame import encode_body
from linli.link.receiver import Receiver
from linli.pets import BUZZ, PetRegistry
from linli.rules import PayloadError, Rules

log = logging.getLogger("linli.ingest")

Reply = Callable[[bytes], Awaitable[None]]


class EventSink(Protocol):
    """What ingest needs from the outbox: store events and run ``fn(conn)`` in one transaction."""

    async def add(self, events: list[Event], fn: Optional[Callable[[sqlite3.Connection], Any]] = None) -> Any: ...


@dataclass
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
        self._task: Optional[asyncio.Task] = None
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
        for node, (last, bitmap) in windows.items():
            self.receiver.windows[node] = Window(last, bitmap)
        self._task = asyncio.create_task(self._worker(), name="ingest")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

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
    async def _worker(self) -> None:
        while True:
            items = [await self.queue.get()]
            while len(items) < self.batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
            try:
                await self._process(items)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one batch kill ingest; its frames will be retried
                log.exception("ingest batch of %d frames failed; not acknowledged, nodes will retry", len(items))
                self._count("batch_failed")

    async def _process(self, items: list[_Item]) -> None:
        events: list[Event] = []
        out = _Out()
        touched: dict[str, Optional[registry.NodeState]] = {}
        windows_before: dict[str, Window] = {}
        accepted = []  # (frame) committed to windows after storage
        now = time.time()
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
            if f.verdict is not None and f.verdict.value == "duplicate":
                self._count("duplicate", f.node_id)
                out.frames.append((f.node_id, Kind.ACK, {"c": f.counter, "r": 0}, it.reply))
                continue
            if f.node_id not in windows_before:
                windows_before[f.node_id] = copy.copy(self.receiver.window(f.node_id))
                touched[f.node_id] = copy.deepcopy(self.nodes.get(f.node_id))
            st = self.nodes.get(f.node_id)
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
        if not accepted and not out.frames:
            return
        nodes_in_batch = {f.node_id for f in accepted}
        need_down = {}
        for node, *_ in out.frames:
            need_down[node] = need_down.get(node, 0) + 1

        def txn(conn: sqlite3.Connection):
            # Runs before the sink inserts ``events``, so the result events can be completed here.
            for ev, node, seq in out.results:
                found = cmdstore.resolve(conn, node, seq, ev.data["ok"], ev.data["result"])
                if found:
                    ev.data["command_id"], ev.data["op"] = found
            for node in nodes_in_batch:
                registry.save(conn, self.nodes[node])
                w = self.receiver.window(node)
                registry.save_window(conn, node, w.last, w.bitmap)
                if self.stage_state:
                    self.stage_state(conn, self.nodes[node])
            for f in accepted:
                registry.history(conn, f.node_id, f.kind.label, encode_body(_summary(f)).decode()[:200], at=now)
            due = {}
            for node in nodes_in_batch:
                rows = cmdstore.due(conn, node)
                for seq, *_ in rows:
                    cmdstore.mark_sent(conn, seq, now)
                if rows:
                    due[node] = rows
            self._reserve_down(conn, need_down, due)
            return due

        try:
            due = await self.sink.add(events, txn)
        except Exception:
            # Undo the batch in memory: the nodes get no ack and will send these frames again.
            for node, w in windows_before.items():
                self.receiver.windows[node] = w
            for node, st in touched.items():
                if st is None:
                    self.nodes.pop(node, None)
                else:
                    self.nodes[node] = st
            raise
        for node, rows in (due or {}).items():
            reply = self._replies.get(node)
            for seq, cmd_id, op, args in rows:
                out.frames.append((node, Kind.COMMAND, {"id": seq, "op": op, "a": args}, reply))
        await self._send(out)
        if self.on_events and events:
            self.on_events(events)

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
        # The backend's command id is looked up inside the batch's transaction (see _process).
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
            raw = seal(keys, kind, role, node, counter=counter, ts=int(time.time()), payload=encode_body(body), flags=Flag.DOWN)
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


def _summary(f) -> dict:
    return {"c": f.counter, **({"ev": f.body.get("ev")} if "ev" in f.body else {})}
