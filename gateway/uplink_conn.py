"""The uplink's MQTT connection: a lean MQTT 5 / 3.1.1 client on the asyncio loop.

One :class:`Connection` per connection attempt: the TCP connect and TLS handshake are asyncio's
(``create_connection``), packets are :mod:`linli.mqtt_wire`'s. It replaced a paho-mqtt client
driven from the loop because paho's per-message Python work (a ``MQTTMessageInfo``, a
``ReasonCode`` and ``Properties`` per PUBACK, locks) was a third of the gateway's time at full
ingest rate (bench/ingest.py). What it does is what paho did for us: QoS 1 PUBLISH with at
most ``inflight`` on the wire (lowered to the broker's MQTT 5 Receive Maximum at once), the
rest queued in order and sent as PUBACKs free slots; PINGREQ when idle and a dropped
connection when the broker falls silent (keepalive); the will; SUBSCRIBE and PUBACKs for what
the backend sends. Everything one loop iteration publishes leaves in one write. Connection
failures become typed errors whose messages name the config key to check.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from typing import TYPE_CHECKING, Optional

from linli import mqtt_wire as wire
from linli.contract import CONTENT_TYPE
from linli.errors import LinliError

if TYPE_CHECKING:  # pragma: no cover
    from linli.outbox import Pending
    from linli.uplink import Uplink

log = logging.getLogger("linli.uplink")

PROTOCOLS = ("5", "3.1.1")


class UplinkError(LinliError):
    """The uplink could not reach or use the upstream broker."""


class UplinkConnectError(UplinkError):
    """A connection attempt failed (refused, unreachable, timed out, closed early)."""


class UplinkTLSError(UplinkConnectError):
    """The TLS handshake failed: wrong CA, expired or rejected certificate, wrong host name."""


class UplinkAuthError(UplinkConnectError):
    """The broker refused the credentials (username/password or client certificate)."""


class UplinkProtocolError(UplinkConnectError):
    """The broker refused the MQTT protocol version offered."""


def _utf8(s: str) -> bytes:
    return wire.field(s.encode("utf-8"))


class PackedProperties:
    """MQTT 5 PUBLISH properties packed once (with their length), ready for the wire."""

    __slots__ = ("_packed",)

    def __init__(self, packed: bytes):
        self._packed = packed

    def pack(self) -> bytes:
        return self._packed


# PayloadFormatIndicator=1 (UTF-8), ContentType, and the constant user property.
_CT = b"\x01\x01" + b"\x03" + _utf8(CONTENT_TYPE) + b"\x26" + _utf8("specversion") + _utf8("1.0")
_ID, _SOURCE, _TYPE, _SEQ = (b"\x26" + _utf8(k) for k in ("id", "source", "type", "seq"))
_CT_ID = _CT + _ID


def event_properties(row: "Pending") -> PackedProperties:
    """MQTT 5 properties of an event: the CloudEvents content type and the attributes a broker
    or consumer may route on, mirrored as user properties (CloudEvents MQTT binding)."""
    # Once per event published: the (source, type) part is the same for all of a node's
    # events of one type, so it is packed once.
    mid = _mid_props.get((row.source, row.type))
    if mid is None:
        if len(_mid_props) > 10000:
            _mid_props.clear()
        mid = _mid_props[(row.source, row.type)] = _SOURCE + _utf8(row.source) + _TYPE + _utf8("linli." + row.type) + _SEQ
    ident = row.id.encode("utf-8")
    seq = b"%d" % row.seq
    body = b"%s%s%s%s%s%s" % (_CT_ID, len(ident).to_bytes(2, "big"), ident, mid, len(seq).to_bytes(2, "big"), seq)
    n = len(body)
    return PackedProperties((bytes((n,)) if n < 128 else bytes((n & 0x7F | 0x80, n >> 7)) if n < 16384 else wire.varint(n)) + body)


_mid_props: dict = {}


_NO_PROPS = b"\x00"
_topics: dict = {}  # topic -> its UTF-8 bytes (a handful of event types and nodes)


def connect_error(s, exc: Exception) -> UplinkConnectError:
    """The error for a TCP connect or TLS handshake that failed with ``exc`` (an OSError or
    ValueError; ``s``: the uplink's settings), naming the config keys to check."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UplinkTLSError(
            "TLS handshake with %s:%d failed: certificate verify failed (%s): the broker's certificate is not signed by a CA in %s.ca_file (%s), or its name does not match %r"
            % (s.host, s.port, exc.verify_message or exc.reason, s.key, s.ca_file or "the system CAs", s.host)
        )
    if isinstance(exc, ssl.SSLError):
        return UplinkTLSError("TLS handshake with %s:%d failed: %s (check %s.tls, ca_file, cert_file, key_file)" % (s.host, s.port, exc.reason or exc, s.key))
    return UplinkConnectError("cannot connect to %s:%d: %s" % (s.host, s.port, exc))


def early_close_error(s, detail: str) -> UplinkConnectError:
    """The error for a connection the broker closed before its CONNACK (``s``: the uplink's
    settings; ``detail``: what the connection last logged or why it closed)."""
    if s.tls and any(w in detail.lower() for w in ("ssl", "tls", "alert", "certificate")):
        return UplinkTLSError(
            "%s:%d closed the TLS connection before accepting it (%s): the broker wants a client certificate it trusts: check %s.cert_file and %s.key_file" % (s.host, s.port, detail, s.key, s.key)
        )
    err = UplinkConnectError("%s:%d closed the connection before CONNACK (%s)" % (s.host, s.port, detail))
    err.before_connack = True  # what some 3.1.1-only brokers do to an MQTT 5 CONNECT
    return err


class _Props:
    """CONNACK properties by paho's names (``props.ReceiveMaximum``), only those present."""

    def __init__(self, props: dict):
        for ident, name in wire.PROPERTY_NAMES.items():
            if ident in props:
                setattr(self, name, props[ident])


class _Protocol(asyncio.Protocol):
    def __init__(self, conn: "Connection"):
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.conn._received(data)

    def connection_lost(self, exc) -> None:
        self.conn._lost(exc)

    def pause_writing(self) -> None:
        self.conn._writable.clear()

    def resume_writing(self) -> None:
        self.conn._writable.set()


class Connection:
    """One connection attempt and what is in flight on it.

    ``connack`` resolves to ``(reason, properties)`` (``reason.is_failure``, ``.value``);
    ``closed`` to why the connection ended. :meth:`publish` hands PUBACKs to
    ``up._puback(conn, pid, reason)`` and backend messages to ``up._message(topic, payload)``,
    both on the event loop.
    """

    def __init__(self, up: "Uplink", protocol: str):
        """``up`` provides settings, contract, the TLS context and the ack/message handlers."""
        self.up = up
        self.protocol = protocol
        self.v5 = protocol == "5"
        self.loop = up._loop
        self.connack: asyncio.Future = self.loop.create_future()
        self.closed: asyncio.Future = self.loop.create_future()
        self.window_free = asyncio.Event()
        self.inflight: dict[int, tuple] = {}  # packet id -> what, until its PUBACK
        self.events_inflight = 0
        self.last_log = ""
        self.abandoned = False
        # The paho-era interface: uplink.py subscribes through ``conn.client.subscribe``.
        self.client = self
        s = up.settings
        self.client_id = s.client_id or "linli-%s-%s" % (up.contract.site, up.contract.gateway)
        self._limit = min(s.inflight, up._receive_max)
        self._on_wire = 0
        self._queued: collections.deque = collections.deque()  # packets waiting for a slot
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._pid = 0
        self._rest = b""
        self._transport: Optional[asyncio.Transport] = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._tick_handle: Optional[asyncio.TimerHandle] = None
        self._last_rx = self._last_tx = time.monotonic()

    # -- connecting --------------------------------------------------------------------------
    async def connect(self) -> None:
        """TCP connect, TLS handshake, CONNECT sent (``connack`` resolves later)."""
        s = self.up.settings
        try:
            async with asyncio.timeout(s.connect_timeout_s):
                transport, _ = await self.loop.create_connection(lambda: _Protocol(self), s.host, s.port, ssl=self.up._ssl if s.tls else None)
        except TimeoutError:
            raise UplinkConnectError("cannot connect to %s:%d: timed out after %.0fs" % (s.host, s.port, s.connect_timeout_s)) from None
        except (OSError, ValueError) as exc:  # TLS failures too (ssl.SSLError is an OSError)
            raise connect_error(s, exc) from None
        if self.abandoned:  # closed while connecting: do not leave a half-open session behind
            transport.close()
            return
        self._transport = transport
        c = self.up.contract
        will = (c.status_topic, c.status("offline", reason="lost"), 1, True)
        self._send(wire.connect(self.client_id, keepalive=s.keepalive, username=s.username, password=s.password, will=will, v5=self.v5))
        if s.keepalive:
            self._tick_handle = self.loop.call_later(1.0, self._tick)

    def _tick(self) -> None:
        """Keepalive: PINGREQ when we sent nothing for a while, give up on a silent broker."""
        self._tick_handle = None
        if self._transport is None or self.closed.done():
            return
        ka = self.up.settings.keepalive
        now = time.monotonic()
        if now - self._last_rx > ka * 1.5:
            self.last_log = "no packet from the broker for %.0f s (keepalive %d s)" % (now - self._last_rx, ka)
            self._transport.abort()
            return
        if now - self._last_tx >= ka / 2:
            self._send(wire.PINGREQ)
        self._tick_handle = self.loop.call_later(1.0, self._tick)

    # -- packets in --------------------------------------------------------------------------
    def _received(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        try:
            packets, self._rest = wire.split(self._rest + data if self._rest else data)
            freed = False
            for b0, body in packets:
                t = b0 & 0xF0
                if t == 0x40:  # PUBACK
                    pid = body[0] << 8 | body[1]
                    reason = wire.Reason(body[2]) if len(body) > 2 and body[2] else wire.SUCCESS
                    if pid in self.inflight:
                        self._on_wire -= 1
                        freed = True
                    self.up._puback(self, pid, reason)
                elif t == 0x30:
                    topic, pid, payload = wire.parse_publish(b0, body, self.v5)
                    if pid:
                        self._send(wire.puback(pid))
                    self.up._message(topic.decode("utf-8", "replace"), payload)
                elif t == 0x20:
                    self._connack(body)
                elif t == 0x90:
                    codes = body[2:]
                    if self.v5:
                        _, p = wire.read_varint(body, 2)
                        codes = body[p:]
                    if any(c >= 0x80 for c in codes):
                        log.warning("%s:%d refused a subscription: %s", self.up.settings.host, self.up.settings.port, ", ".join(str(wire.Reason(c)) for c in codes))
                elif t == 0xE0:  # MQTT 5: the broker says why it disconnects us
                    self.last_log = "broker sent DISCONNECT: %s" % (wire.Reason(body[0]) if body else "normal")
            if freed:
                self._release()
            self._flush()  # now, not next iteration: each PUBACK round trip frees the next slots
        except (wire.MQTTProtocolError, IndexError, UnicodeDecodeError) as exc:
            self.last_log = "malformed packet from the broker: %s" % exc
            log.error("upstream %s; dropping the connection", self.last_log)
            self._transport.abort()

    def _connack(self, body: bytes) -> None:
        if self.connack.done():
            return
        code = body[1]
        props = None
        if self.v5:
            props = _Props(wire.parse_properties(body, 2)[0] if len(body) > 2 else {})
            rm = getattr(props, "ReceiveMaximum", None)
            if rm:
                self._limit = min(self._limit, rm)
            reason = wire.Reason(code, connack=True)
        else:
            reason = wire.Reason(wire.V311_CONNACK.get(code, code), connack=True)
        self.connack.set_result((reason, props))

    def _lost(self, exc) -> None:
        self._transport = None
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if exc is not None and not self.last_log:
            self.last_log = str(exc)
        self._set_closed(self.last_log or "connection closed")

    def _set_closed(self, reason) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)
        if not self.connack.done():
            self.connack.set_exception(self._early_close_error(reason))
            self.connack.exception()  # retrieved: nobody may be waiting any more
        self.window_free.set()

    def _early_close_error(self, reason) -> UplinkConnectError:
        return early_close_error(self.up.settings, self.last_log or str(reason))

    # -- packets out -------------------------------------------------------------------------
    def _send(self, packet: bytes) -> None:
        """Queue a packet; everything queued in this loop iteration is written at once."""
        self._out.append(packet)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._out))
            self._last_tx = time.monotonic()
        self._out.clear()

    def _release(self) -> None:
        """Send queued PUBLISHes while there are free in-flight slots."""
        q = self._queued
        while q and self._on_wire < self._limit:
            self._send(q.popleft())
            self._on_wire += 1

    def _next_pid(self) -> int:
        pid = self._pid
        while True:
            pid = pid % 0xFFFF + 1
            if pid not in self.inflight:
                self._pid = pid
                return pid

    def publish(self, topic: str, payload: bytes, *, retain: bool, props: Optional[PackedProperties], what: tuple) -> bool:
        """QoS 1 PUBLISH (sent now, or queued until an in-flight slot frees); ``what`` comes
        back with its PUBACK. False when the connection is gone."""
        if self._transport is None or self.closed.done() or len(self.inflight) >= 0xFFFF:
            return False
        pid = self._next_pid()
        t = _topics.get(topic)
        if t is None:
            if len(_topics) > 10000:
                _topics.clear()
            t = _topics[topic] = topic.encode("utf-8")
        pkt = wire.publish(t, payload, pid, retain=retain, props=(props.pack() if props is not None else _NO_PROPS) if self.v5 else None)
        self.inflight[pid] = what
        if self._on_wire < self._limit and not self._queued:
            self._on_wire += 1
            self._send(pkt)
        else:
            self._queued.append(pkt)
        return True

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """SUBSCRIBE to one filter (its SUBACK is only checked for a refusal)."""
        if self._transport is not None:
            self._send(wire.subscribe(self._next_pid(), topic_filter, qos, v5=self.v5))

    async def close(self, timeout: float = 2.0) -> None:
        """Send DISCONNECT if still connected (the will is then not published), then drop."""
        self.abandoned = True
        t = self._transport
        if t is not None and not self.closed.done():
            self._send(wire.DISCONNECT)
            self._flush()
            t.close()
            # asyncio.wait, not wait_for: on 3.11 wait_for can swallow a cancel and hang stop().
            await asyncio.wait([self.closed], timeout=timeout)
            if not self.closed.done() and self._transport is not None:
                self._transport.abort()
