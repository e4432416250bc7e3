"""The uplink's MQTT connection on paho-mqtt 2 (``[upstream] client = "paho"``), driven from the
asyncio loop. The default connection (:mod:`linli.uplink_conn`) speaks MQTT itself with
:mod:`linli.mqtt_wire` and costs the gateway far less CPU per event (bench/ingest.py); this one
is for sites that want the reference client, and both pass the same uplink tests.

As Home Assistant does it: the blocking TCP connect and TLS handshake run in an executor, then
the socket is watched with ``add_reader``/``add_writer`` and paho's ``loop_read``,
``loop_write`` and ``loop_misc`` run on the event loop, so there is no paho thread. Paho's
callbacks only queue what happened; the queue is handled in a separate loop callback, never
inside paho (its locks are not re-entrant: publishing from ``on_publish`` would deadlock; paho
issues #354, #346). Connection failures become typed errors whose messages name the config key
to check.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import threading
from typing import TYPE_CHECKING, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from linli import uplink_conn
from linli.uplink_conn import UplinkConnectError, connect_error, early_close_error  # the same error types as the default client

if TYPE_CHECKING:  # pragma: no cover
    from linli.outbox import Pending
    from linli.uplink import Uplink

PROTOCOLS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}


class _LastMessage(logging.Handler):
    """Keeps paho's last warning/error on the connection (for a clear error message)."""

    def __init__(self, conn: "Connection"):
        super().__init__(logging.WARNING)
        self.conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.conn.last_log = record.getMessage()
        except Exception:  # never let logging break paho
            pass


class _PackedProperties(Properties):
    """PUBLISH properties packed once by us: paho's Properties costs ~80 us per message."""

    def __init__(self, packed: bytes, row: "Pending"):
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "names", {})
        object.__setattr__(self, "_packed", packed)
        object.__setattr__(self, "_row", row)

    def pack(self) -> bytes:
        return self._packed

    def __str__(self) -> str:  # paho logs it; only then is it worth formatting
        r = self._row
        return "[UserProperty: id=%r, source=%r, type=%r, seq=%d]" % (r.id, r.source, "linli." + r.type, r.seq)


def event_properties(row: "Pending") -> Properties:
    """The same MQTT 5 properties as the default client's (:func:`linli.uplink_conn.event_properties`),
    as paho Properties."""
    return _PackedProperties(uplink_conn.event_properties(row).pack(), row)


class Connection:
    """One connection attempt: a paho client driven from the event loop, and what is in flight.

    As Home Assistant does it: the blocking TCP connect and TLS handshake run in an executor;
    then the socket is watched with ``add_reader``/``add_writer`` and paho's ``loop_read``,
    ``loop_write`` and ``loop_misc`` run on the event loop. No paho thread, so nothing is
    shared across threads except during ``connect()``. Paho's callbacks still only queue what
    happened; it is handled in a separate loop callback, never inside paho (whose locks are not
    re-entrant: publishing from ``on_publish`` would deadlock).
    """

    def __init__(self, up: "Uplink", protocol: str):
        """``up`` provides settings, contract, the TLS context and the ack/message handlers."""
        self.up = up
        self.protocol = protocol
        self.loop = up._loop
        self.connack: asyncio.Future = self.loop.create_future()
        self.closed: asyncio.Future = self.loop.create_future()
        self.window_free = asyncio.Event()
        self.inflight: dict[int, tuple] = {}
        self.events_inflight = 0
        self.last_log = ""
        self.abandoned = False
        self._pending: collections.deque = collections.deque()
        self._scheduled = False
        self._sock = None
        self._writing = False
        self._misc: Optional[asyncio.TimerHandle] = None
        self._loop_thread = threading.get_ident()
        s = up.settings
        cid = s.client_id or "linli-%s-%s" % (up.contract.site, up.contract.gateway)
        kw: dict = {"client_id": cid, "protocol": PROTOCOLS[protocol], "reconnect_on_failure": False}
        if protocol != "5":
            kw["clean_session"] = True
        c = mqtt.Client(CallbackAPIVersion.VERSION2, **kw)
        c.connect_timeout = s.connect_timeout_s
        c.max_inflight_messages_set(min(s.inflight, up._receive_max))
        c.max_queued_messages_set(0)
        if s.tls:
            c.tls_set_context(up._ssl)
        if s.username is not None:
            c.username_pw_set(s.username, s.password)
        c.will_set(up.contract.status_topic, up.contract.status("offline", reason="lost"), qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_register_write
        c.on_socket_unregister_write = self._on_unregister_write
        # Paho's own warnings and errors (a TLS alert, say) explain an early close; a logger
        # (not on_log) so that paho formats nothing below WARNING.
        plog = logging.Logger("linli.uplink.paho", logging.WARNING)
        plog.addHandler(_LastMessage(self))
        c.enable_logger(plog)
        self.client = c

    # -- paho callbacks: record and hand over, nothing else -----------------------------------
    def _on_loop(self, fn, *args) -> None:
        """Run ``fn`` soon on the event loop (paho calls some callbacks from connect()'s thread)."""
        try:
            if threading.get_ident() == self._loop_thread:
                self.loop.call_soon(fn, *args)
            else:
                self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _hand(self, item: tuple) -> None:
        self._pending.append(item)
        if not self._scheduled:
            self._scheduled = True
            self._on_loop(self._drain)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self._hand(("connack", reason_code, properties))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._hand(("disconnect", reason_code))

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._hand(("puback", mid, reason_code))

    def _on_message(self, client, userdata, msg):
        self._hand(("message", msg.topic, msg.payload))

    # Socket (un)registration touches only the selector, never paho: done at once on the loop.
    def _on_socket_close(self, client, userdata, sock):
        self._now_or_soon(self._detach, sock)

    def _on_register_write(self, client, userdata, sock):
        self._now_or_soon(self._want_write, sock)

    def _on_unregister_write(self, client, userdata, sock):
        self._now_or_soon(self._no_write, sock)

    def _now_or_soon(self, fn, sock) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(sock)
        else:
            self._on_loop(fn, sock)

    # -- socket plumbing (event loop) --------------------------------------------------------
    def _attach(self) -> None:
        sock = self.client.socket()
        if sock is None:
            return
        self._sock = sock
        self.loop.add_reader(sock, self._readable)
        if self.client.want_write():
            self._want_write(sock)
        self._misc = self.loop.call_later(1.0, self._tick)

    def _readable(self) -> None:
        self.client.loop_read()
        # TLS: bytes already decrypted inside the SSL object do not wake the selector again.
        sock = self._sock
        while sock is not None and isinstance(sock, ssl.SSLSocket) and sock.pending():
            if self.client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            sock = self._sock

    def _writable(self) -> None:
        self.client.loop_write()

    def _want_write(self, sock) -> None:
        if sock is self._sock and not self._writing and sock.fileno() >= 0:
            self._writing = True
            try:
                self.loop.add_writer(sock, self._writable)
            except (ValueError, OSError):
                self._writing = False

    def _no_write(self, sock) -> None:
        if sock is self._sock and self._writing:
            self._writing = False
            try:
                self.loop.remove_writer(sock)
            except (ValueError, OSError):  # closed under us
                pass

    def _tick(self) -> None:
        # Keepalive pings and their timeouts.
        self._misc = None
        if self._sock is None:
            return
        self.client.loop_misc()
        if self._sock is not None:
            self._misc = self.loop.call_later(1.0, self._tick)

    def _detach(self, sock=None) -> None:
        if self._sock is None or (sock is not None and sock is not self._sock):
            return
        s, self._sock = self._sock, None
        try:
            self.loop.remove_reader(s)
            if self._writing:
                self.loop.remove_writer(s)
        except (ValueError, OSError):  # already closed
            pass
        self._writing = False
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        # Paho reports a lost connection through on_disconnect; make sure we see it even if not.
        self._hand(("disconnect", "socket closed"))

    # -- on the event loop -------------------------------------------------------------------
    def _drain(self) -> None:
        self._scheduled = False
        while self._pending:
            item = self._pending.popleft()
            kind = item[0]
            if kind == "puback":
                self.up._puback(self, item[1], item[2])
            elif kind == "connack":
                if not self.connack.done():
                    self.connack.set_result((item[1], item[2]))
            elif kind == "disconnect":
                self._set_closed(item[1])
            elif kind == "message":
                self.up._message(item[1], item[2])

    def _set_closed(self, reason) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)
        if not self.connack.done():
            self.connack.set_exception(self._early_close_error(reason))
        self.window_free.set()

    def _early_close_error(self, reason) -> UplinkConnectError:
        return early_close_error(self.up.settings, self.last_log or str(reason))

    def _connect_blocking(self) -> None:
        """In an executor: the TCP connect and TLS handshake (paho then sends CONNECT)."""
        s = self.up.settings
        c = self.client
        try:
            if self.protocol == "5":
                c.connect(s.host, s.port, s.keepalive, clean_start=True)
            else:
                c.connect(s.host, s.port, s.keepalive)
        except (OSError, ValueError) as exc:  # TLS failures too (ssl.SSLError is an OSError)
            raise connect_error(s, exc) from None
        if self.abandoned:  # closed while connecting: do not leave a half-open session behind
            sock = c.socket()
            if sock is not None:
                sock.close()

    async def connect(self) -> None:
        await self.loop.run_in_executor(None, self._connect_blocking)
        if self.abandoned:  # closed while connecting
            self._close_now()
            return
        self._attach()

    def publish(self, topic: str, payload: bytes, *, retain: bool, props: Optional[Properties], what: tuple) -> bool:
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        self.inflight[info.mid] = what
        return True

    def _close_now(self) -> None:
        self._detach()
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    async def close(self, timeout: float = 2.0) -> None:
        """Send DISCONNECT if still connected (the will is then not published), then drop."""
        self.abandoned = True
        if self._sock is not None and not self.closed.done():
            try:
                self.client.disconnect()
                await asyncio.wait_for(asyncio.shield(self.closed), timeout)
            except (asyncio.TimeoutError, Exception):
                pass
        self._close_now()
