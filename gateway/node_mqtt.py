"""The nodes' side of the local Mosquitto: frames in on ``linli/node/+/up``, acks and commands
out on ``linli/node/{id}/down`` (docs/protocol.md 4.1).

A lean MQTT 3.1.1 client on the gateway's asyncio loop (no paho thread, so nothing contends
for the GIL and nothing is handed across threads): each socket read is cut into packets in one
pass (:func:`linli.mqtt_wire.split`), every frame in it goes to ``on_frame``, and everything we
send in one loop iteration (PUBACKs, acks and commands to nodes, pings) leaves in one write.

Delivery: the broker's QoS 1 PUBLISHes are PUBACKed as soon as the frame is handed to ingest,
not after the outbox commit. That loses nothing: the node deletes a frame from its flash queue
only on the gateway's *link-level* ack, sent after the commit, and sends it again until then;
the MQTT PUBACK only tells the broker it may forget its copy (with a clean session it would
drop it on a reconnect anyway). Acking early keeps the broker's in-flight window (Mosquitto's
``max_inflight_messages``) open while a batch is stored.

The connection is kept up with jittered exponential backoff (1 s to 30 s), PINGREQ when
nothing was sent for half the keepalive, and a reconnect when the broker was silent for 1.5
keepalives. A broker that refuses the subscription (its ACL) is logged with what to fix.

>>> # nb = NodeBroker(cfg.local, lambda raw, node, reply: ...); await nb.start(); ...; await nb.stop()
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import uuid
from typing import Callable, Optional

from linli import mqtt_wire as wire
from linli.config import BrokerSection

log = logging.getLogger("linli.node_mqtt")

UP = "linli/node/+/up"
_UP_RE = re.compile(rb"^linli/node/([A-Za-z0-9._-]{1,16})/up$")
_CONNECT_TIMEOUT_S = 10.0
_BACKOFF = (1.0, 30.0)


def down_topic(node: str) -> str:
    return "linli/node/%s/down" % node


class _Protocol(asyncio.Protocol):
    """Bytes in and out of one connection; everything else is :class:`NodeBroker`'s."""

    def __init__(self, owner: "NodeBroker"):
        self.owner = owner
        self.transport: Optional[asyncio.Transport] = None
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.owner._received(self, data)

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class NodeBroker:
    """Connects to the local broker; ``on_frame(raw, node_id, reply)`` runs on the event loop.

    ``reply(raw)`` (a coroutine function) publishes a sealed frame to that node's down topic,
    QoS 1; it raises ``ConnectionError`` while the broker is unreachable.

    ``backlog()`` (optional) says how many frames the consumer still holds: at ``high`` the
    connection stops reading (the frames wait in the broker, which stops sending past its
    in-flight window) until the backlog is down to ``low``, so a burst never overflows ingest.
    """

    def __init__(self, cfg: BrokerSection, on_frame: Callable, *, client_id: Optional[str] = None,
                 backlog: Optional[Callable[[], int]] = None, high: int = 5000, low: int = 2500):
        self.cfg = cfg
        self.on_frame = on_frame
        self.backlog, self.high, self.low = backlog, high, low
        self._paused: Optional[asyncio.Task] = None
        self.connected = asyncio.Event()
        self.counts = {"frames": 0, "bad_topic": 0, "connects": 0, "disconnects": 0, "down": 0, "down_acked": 0, "pings": 0, "paused": 0}
        self.client_id = client_id or cfg.client_id or "linli-gw-ingest-%s" % uuid.uuid4().hex[:8]
        self.last_error: Optional[str] = None
        self._proto: Optional[_Protocol] = None
        self._rest = b""
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._pid = 0
        self._waiters: dict[int, asyncio.Future] = {}  # CONNACK (key -1) and SUBACK by packet id
        self._last_rx = self._last_tx = 0.0
        self._nodes: dict[bytes, str] = {}  # topic -> node id: the regex once per node
        self._repliers: dict[str, Callable] = {}
        self._task: Optional[asyncio.Task] = None
        self._ssl_ctx = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start connecting in the background (returns at once; see ``connected``)."""
        self._stopping = False
        self._ssl_ctx = self._ssl() if self.cfg.tls else None  # a bad file is a ConfigError now
        self._task = asyncio.create_task(self._run(), name="node-mqtt")

    async def stop(self, timeout: float = 2.0) -> None:
        """Send DISCONNECT (so the broker drops the session quietly) and close."""
        self._stopping = True
        if self._paused is not None:
            self._paused.cancel()
        p = self._proto
        if p is not None and p.transport is not None and not p.transport.is_closing():
            self._send(wire.DISCONNECT)
            self._flush()
            p.transport.close()
        if self._task is not None:
            self._task.cancel()
            # asyncio.wait, not wait_for: on 3.11 wait_for can swallow this cancel and hang.
            await asyncio.wait([self._task], timeout=timeout)
        self._set_connected(False)

    # -- the connection manager --------------------------------------------------------------
    async def _run(self) -> None:
        delay = _BACKOFF[0]
        while not self._stopping:
            try:
                await self._session()
                delay = _BACKOFF[0]  # it was up: start the backoff again
            except (OSError, asyncio.TimeoutError, wire.MQTTProtocolError, ConnectionError) as exc:
                msg = "local broker %s:%d: %s" % (self.cfg.host, self.cfg.port, exc or type(exc).__name__)
                if msg != self.last_error:
                    log.warning("%s (retrying with backoff)", msg)
                self.last_error = msg
            finally:
                self._drop()
            if self._stopping:
                return
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, _BACKOFF[1])

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        ctx = self._ssl_ctx
        async with asyncio.timeout(_CONNECT_TIMEOUT_S):
            _, proto = await loop.create_connection(lambda: _Protocol(self), cfg.host, cfg.port, ssl=ctx)
            self._proto = proto
            self._rest = b""
            connack = self._expect(-1)
            self._send(wire.connect(self.client_id, keepalive=cfg.keepalive, username=cfg.username, password=cfg.password))
            rc = await self._until(connack, proto)
            if rc:
                raise ConnectionError("refused the connection: %s (check local.username/password)" % wire.CONNACK_CODES.get(rc, "return code %d" % rc))
            pid = self._next_pid()
            suback = self._expect(pid)
            self._send(wire.subscribe(pid, UP, 1))
            granted = await self._until(suback, proto)
        if granted == 0x80:
            raise ConnectionError("refused the subscription to %s: the broker's ACL must let %s read it" % (UP, "user %r" % cfg.username if cfg.username else "anonymous clients"))
        self.last_error = None
        self._set_connected(True)
        log.info("local broker %s:%d connected, subscribed to %s", cfg.host, cfg.port, UP)
        keepalive = cfg.keepalive
        while not proto.closed.done():
            await asyncio.wait([proto.closed], timeout=max(0.5, keepalive / 4) if keepalive else None)
            now = time.monotonic()
            if keepalive and not proto.closed.done():
                if now - self._last_rx > keepalive * 1.5:
                    raise ConnectionError("silent for %.0f s (keepalive %d s)" % (now - self._last_rx, keepalive))
                if now - self._last_tx >= keepalive / 2:
                    self.counts["pings"] += 1
                    self._send(wire.PINGREQ)
        exc = proto.closed.result()
        raise ConnectionError("connection lost%s" % (": %s" % exc if exc else ""))

    def _ssl(self):
        from linli.uplink import UplinkSettings

        return UplinkSettings.from_config(self.cfg, key="local").ssl_context()

    def _expect(self, key: int) -> asyncio.Future:
        fut = self._waiters[key] = asyncio.get_running_loop().create_future()
        return fut

    async def _until(self, fut: asyncio.Future, proto: _Protocol):
        """Wait for a CONNACK/SUBACK, or fail when the connection closes first."""
        await asyncio.wait([fut, proto.closed], return_when=asyncio.FIRST_COMPLETED)
        if not fut.done():
            raise ConnectionError("closed the connection during the handshake")
        return fut.result()

    def _drop(self) -> None:
        p, self._proto = self._proto, None
        if p is not None and p.transport is not None:
            p.transport.close()
        for fut in self._waiters.values():
            fut.cancel()
        self._waiters.clear()
        self._out.clear()
        self._set_connected(False)

    def _set_connected(self, up: bool) -> None:
        if up and not self.connected.is_set():
            self.counts["connects"] += 1
            self.connected.set()
        elif not up and self.connected.is_set():
            self.counts["disconnects"] += 1
            self.connected.clear()

    # -- packets in --------------------------------------------------------------------------
    def _received(self, proto: _Protocol, data: bytes) -> None:
        if proto is not self._proto:
            return
        self._last_rx = time.monotonic()
        try:
            packets, self._rest = wire.split(self._rest + data if self._rest else data)
        except wire.MQTTProtocolError as exc:
            log.error("local broker sent a malformed packet (%s); reconnecting", exc)
            proto.transport.close()
            return
        acks = []
        for b0, body in packets:
            t = b0 & 0xF0
            if t == 0x30:
                topic, pid, payload = wire.parse_publish(b0, body)
                if pid:
                    acks.append(pid)
                self._dispatch(topic, payload)
            elif t == 0x40:
                self.counts["down_acked"] += 1
            elif t == 0x20:
                self._resolve(-1, body[1] if len(body) > 1 else 0xFF)
            elif t == 0x90:
                self._resolve(body[0] << 8 | body[1], body[2] if len(body) > 2 else 0x80)
        if acks:
            self._send(b"".join(map(wire.puback, acks)))
            self._flush()  # now: the broker sends the next frames as soon as slots free
        if self.backlog is not None and self._paused is None and self.backlog() >= self.high:
            proto.transport.pause_reading()
            self.counts["paused"] += 1
            self._paused = asyncio.get_running_loop().create_task(self._resume_when_drained(proto))

    async def _resume_when_drained(self, proto: _Protocol) -> None:
        try:
            while self.backlog() > self.low and not proto.closed.done():
                await asyncio.sleep(0.01)
            if not proto.closed.done():
                proto.transport.resume_reading()
        finally:
            self._paused = None

    def _resolve(self, key: int, value: int) -> None:
        fut = self._waiters.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(value)

    def _dispatch(self, topic: bytes, payload: bytes) -> None:
        node = self._nodes.get(topic)
        if node is None:
            m = _UP_RE.match(topic)
            if not m:
                self.counts["bad_topic"] += 1
                return
            if len(self._nodes) > 10000:
                self._nodes.clear()
            node = self._nodes[topic] = m.group(1).decode("ascii")
        self.counts["frames"] += 1
        self.on_frame(payload, node, self._replier(node))

    # -- packets out -------------------------------------------------------------------------
    def _next_pid(self) -> int:
        self._pid = self._pid % 0xFFFF + 1
        return self._pid

    def _send(self, packet: bytes) -> None:
        """Queue a packet; everything queued in this loop iteration is written at once."""
        self._out.append(packet)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        p = self._proto
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        if p is not None and p.transport is not None and not p.transport.is_closing():
            p.transport.write(data)
            self._last_tx = time.monotonic()

    def _replier(self, node: str):
        reply = self._repliers.get(node)
        if reply is None:
            if len(self._repliers) > 10000:
                self._repliers.clear()
            reply = self._repliers[node] = self._make_replier(node)
        return reply

    def _make_replier(self, node: str):
        topic = down_topic(node).encode()

        async def reply(raw: bytes) -> None:
            p = self._proto
            if p is None or not self.connected.is_set() or p.closed.done():
                raise ConnectionError("local broker %s:%d is not connected" % (self.cfg.host, self.cfg.port))
            if not p.writable.is_set():
                await p.writable.wait()  # the broker reads slower than we write: wait for it
                if p.closed.done():
                    raise ConnectionError("local broker %s:%d closed the connection" % (self.cfg.host, self.cfg.port))
            self.counts["down"] += 1
            self._send(wire.publish(topic, raw, self._next_pid()))

        return reply
