"""The uplink: publishes the outbox to the backend's MQTT broker, QoS 1, in order, at least once.

One paho-mqtt 2 client per connection attempt, MQTT 5 when the broker speaks it (3.1.1
otherwise), TLS with a CA and a client certificate, username/password, reconnect with jittered
exponential backoff. Paho is driven from the asyncio loop as Home Assistant does it (the
blocking connect and TLS handshake in an executor, then ``add_reader``/``add_writer``), so
there is one thread; paho's callbacks only queue what happened and never publish, block or
take a lock (paho issues #354, #346). SQLite runs on the outbox's thread.

Delivery: events are published in ``seq`` order; ``inflight`` PUBLISHes wait for their PUBACK
on the wire (paho's limit, lowered to the broker's MQTT 5 Receive Maximum) and up to
``window`` more are queued in paho, which sends each as a slot frees. An event is deleted from
the outbox only after its PUBACK. After a reconnect everything not yet acked is published again
from the oldest, with the same bytes, so a backend may see duplicates (identical ``id`` and
``seq``) but never a gap. A PUBACK with an error reason code (MQTT 5, e.g. not authorized)
keeps the event; it is retried after the next reconnect and counted in ``stats.rejected``.

>>> s = UplinkSettings(host="mqtt.example.com", port=8883, tls=True)
>>> s.protocol, s.inflight
('auto', 20)
>>> UplinkSettings(host="h", port=0)
Traceback (most recent call last):
...
linli.errors.ConfigError: uplink: upstream.port: must be a TCP port 1-65535, got 0
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import ssl
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

import paho.mqtt.client as mqtt

from linli.contract import rfc3339
from linli.errors import ConfigError
from linli.outbox import Outbox, Pending
from linli.uplink_conn import (
    Connection,
    UplinkAuthError,
    UplinkConnectError,
    UplinkError,
    UplinkProtocolError,
    UplinkTLSError,
)

__all__ = ["Uplink", "UplinkSettings", "UplinkStats", "UplinkError", "UplinkConnectError", "UplinkTLSError", "UplinkAuthError", "UplinkProtocolError"]

log = logging.getLogger("linli.uplink")

@dataclass(frozen=True)
class UplinkSettings:
    """Where and how to connect; validated at construction, errors name the config key.

    Build it from the gateway config with :meth:`from_config` (``[upstream]``).
    """

    host: str
    port: int = 8883
    username: Optional[str] = None
    password: Optional[str] = None
    client_id: Optional[str] = None
    keepalive: int = 30
    tls: bool = False
    ca_file: Optional[Path] = None
    cert_file: Optional[Path] = None
    key_file: Optional[Path] = None
    protocol: str = "auto"  # "auto" (5, then 3.1.1), "5" or "3.1.1"
    client: str = "native"  # "native" (linli.uplink_conn) or "paho" (paho-mqtt 2, linli.uplink_paho)
    inflight: int = 20  # QoS 1 PUBLISHes on the wire awaiting PUBACK (capped by the broker's Receive Maximum)
    window: int = 1000  # events handed to paho and not yet acked (paho sends them as PUBACKs free slots)
    batch: int = 1000  # events read from the outbox per query
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    key: str = "upstream"  # the config section, for error messages

    def __post_init__(self):
        def bad(name, msg):
            raise ConfigError("uplink", "%s.%s" % (self.key, name), msg)

        if not self.host:
            bad("host", "is required")
        if not (isinstance(self.port, int) and 0 < self.port < 65536):
            bad("port", "must be a TCP port 1-65535, got %r" % (self.port,))
        if self.client not in ("native", "paho"):
            bad("client", "must be 'native' or 'paho', got %r" % (self.client,))
        if self.protocol not in ("auto", "5", "3.1.1"):
            bad("protocol", "must be 'auto', '5' or '3.1.1', got %r" % (self.protocol,))
        if not 1 <= self.inflight <= 65535:
            bad("inflight", "must be 1..65535, got %r" % (self.inflight,))
        if not 1 <= self.window <= 60000:
            bad("window", "must be 1..60000, got %r" % (self.window,))
        if self.batch < 1:
            bad("batch", "must be >= 1")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            bad("reconnect_min_s", "must be > 0 and <= reconnect_max_s")
        if (self.cert_file is None) != (self.key_file is None):
            bad("cert_file" if self.cert_file is None else "key_file", "cert_file and key_file go together (client certificate)")
        if (self.ca_file or self.cert_file) and not self.tls:
            bad("tls", "must be true when ca_file or cert_file is set")
        if self.password is not None and self.username is None:
            bad("username", "is required when a password is set")

    @classmethod
    def from_config(cls, section, **overrides) -> "UplinkSettings":
        """From a :class:`linli.config.BrokerSection` (the ``[upstream]`` table)."""
        names = {f.name for f in fields(cls)}
        values = {k: getattr(section, k) for k in ("host", "port", "username", "password", "client_id", "keepalive", "tls", "ca_file", "cert_file", "key_file", "protocol", "client") if hasattr(section, k)}
        values.update({k: v for k, v in overrides.items() if k in names})
        return cls(**values)

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context (CA, client certificate); errors name the key of the bad file."""
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("uplink", "%s.ca_file" % self.key, "cannot load CA certificates from %s: %s" % (self.ca_file, exc)) from None
        if self.cert_file:
            try:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError("uplink", "%s.cert_file" % self.key, "cannot load the client certificate %s with key %s: %s" % (self.cert_file, self.key_file, exc)) from None
        return ctx


@dataclass
class UplinkStats:
    connected: bool = False
    protocol: Optional[str] = None
    connects: int = 0
    published: int = 0
    acked: int = 0
    rejected: int = 0
    window: int = 0
    last_error: Optional[str] = None
    rejected_reasons: dict = field(default_factory=dict)


class Uplink:
    """Publishes ``outbox`` upstream until :meth:`stop`.

    >>> # outbox = await Outbox.open(cfg.db_path, Contract(site, gw))
    >>> # uplink = Uplink(UplinkSettings.from_config(cfg.upstream), outbox)
    >>> # await uplink.start(); ...; await uplink.stop()
    """

    def __init__(self, settings: UplinkSettings, outbox: Outbox):
        self.settings = settings
        self.outbox = outbox
        self.contract = outbox.contract
        self._ssl = settings.ssl_context() if settings.tls else None
        self.stats = UplinkStats()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._task: Optional[asyncio.Task] = None
        self._conn: Optional[Connection] = None
        self._stopping = False
        self._connected = asyncio.Event()
        self._receive_max = 65535
        self._protocol = "5" if settings.protocol in ("auto", "5") else "3.1.1"
        if settings.client == "paho":
            from linli import uplink_paho as impl
        else:
            import linli.uplink_conn as impl
        self._impl = impl
        self._acks: list[int] = []
        self._acking: set[int] = set()
        self._ack_task: Optional[asyncio.Task] = None
        self._state_done: list[tuple[str, int]] = []
        self._subs: dict[str, tuple[int, Callable[[str, bytes], Any]]] = {}
        self._idle = asyncio.Event()
        self.last_exception: Optional[UplinkError] = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start connecting and publishing in the background (returns at once)."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="uplink")

    async def stop(self, timeout: float = 5.0) -> None:
        """Say ``offline`` (retained), wait briefly for its PUBACK, disconnect cleanly."""
        self._stopping = True
        conn = self._conn
        if conn is not None and self._connected.is_set() and not conn.closed.done():
            done = self._loop.create_future()
            what = ("status", done)
            if conn.publish(self.contract.status_topic, self.contract.status("offline", reason="shutdown"), retain=True, props=None, what=what):
                # asyncio.wait, not wait_for: on 3.11 wait_for can swallow a cancel and hang stop().
                await asyncio.wait([done, conn.closed], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done.done():
                    log.warning("no PUBACK for the offline status within %.1fs", timeout)
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._ack_task:
            await asyncio.wait([self._ack_task], timeout=timeout)
            self._ack_task.cancel()  # no-op when it finished
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        self.stats.connected = False

    async def wait_connected(self, timeout: Optional[float] = None) -> None:
        """Wait until a connection is up (raises asyncio.TimeoutError)."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def wait_idle(self, timeout: Optional[float] = None) -> None:
        """Wait until the outbox is empty and nothing is in flight (tests, clean shutdown)."""

        async def idle():
            while True:
                self._idle.clear()
                st = await self.outbox.stats()
                if st.pending == 0 and not self._acking and not self._acks and not (self._conn and self._conn.events_inflight):
                    return
                w = asyncio.ensure_future(self._idle.wait())
                try:
                    await asyncio.wait([w], timeout=0.2)
                finally:
                    w.cancel()

        await asyncio.wait_for(idle(), timeout)

    async def publish_blob(self, topic: str, payload: bytes, timeout: float = 30.0) -> bool:
        """Publish ``payload`` once, QoS 1, not retained, beside the event stream (a camera
        snapshot); True once the broker has acknowledged it (PUBACK), False when not connected,
        when the connection drops first, on a PUBACK error reason or after ``timeout``. The
        caller keeps the blob until True and tries again later.

        >>> # if await uplink.publish_blob(prefix + "/snapshots/" + ref["id"], jpeg): store.mark_sent(ref)
        """
        conn = self._conn
        if conn is None or not self._connected.is_set() or conn.closed.done():
            return False
        acked = self._loop.create_future()
        if not conn.publish(topic, payload, retain=False, props=None, what=("blob", acked)):
            return False
        await asyncio.wait([acked, conn.closed], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return acked.done() and acked.result()

    def subscribe(self, topic_filter: str, handler: Callable[[str, bytes], Any], qos: int = 1) -> None:
        """Receive backend messages (commands, the pet registry). ``handler(topic, payload)``
        runs on the event loop (it may be a coroutine function); re-subscribed on every connect."""
        self._subs[topic_filter] = (qos, handler)
        conn = self._conn
        if conn is not None and self._connected.is_set():
            conn.client.subscribe(topic_filter, qos)

    # -- the connection manager --------------------------------------------------------------
    async def _run(self) -> None:
        s = self.settings
        delay = s.reconnect_min_s
        tentative = False  # fell back to 3.1.1 without a clear "unsupported version"
        while not self._stopping:
            conn = self._impl.Connection(self, self._protocol)
            self._conn = conn
            try:
                await self._open(conn)
            except UplinkProtocolError as exc:
                await conn.close()
                if s.protocol == "auto" and self._protocol == "5":
                    log.info("%s; falling back to MQTT 3.1.1", exc)
                    self._protocol, tentative = "3.1.1", False
                    continue
                self._failed(exc)
            except UplinkConnectError as exc:
                await conn.close()
                if s.protocol == "auto" and self._protocol == "5" and getattr(exc, "before_connack", False):
                    # Some 3.1.1-only brokers just hang up on an MQTT 5 CONNECT: try 3.1.1 once.
                    log.info("%s; trying MQTT 3.1.1", exc)
                    self._protocol, tentative = "3.1.1", True
                    continue
                if tentative:
                    self._protocol, tentative = "5", False  # 3.1.1 did not help: it was not that
                self._failed(exc)
            except asyncio.CancelledError:
                await conn.close()
                raise
            else:
                tentative = False
                delay = s.reconnect_min_s
                failure = None
                try:
                    await self._session(conn)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the outbox failed (disk?): keep trying, say why
                    failure = exc
                    log.error("uplink session failed: %s", exc, exc_info=True)
                finally:
                    self._connected.clear()
                    self.stats.connected = False
                    if not self._stopping:
                        await conn.close()
                if self._stopping:
                    return
                if failure is None:
                    log.warning("upstream connection lost (%s); reconnecting", conn.closed.result() if conn.closed.done() else "?")
                    await asyncio.sleep(random.uniform(0, s.reconnect_min_s))
                    continue
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, s.reconnect_max_s)

    def _failed(self, exc: UplinkError) -> None:
        msg = str(exc)
        if msg != self.stats.last_error:
            log.warning("upstream: %s", msg)
        self.stats.last_error = msg
        self.last_exception = exc

    async def _open(self, conn: Connection) -> None:
        s = self.settings
        await conn.connect()
        try:
            reason, props = await asyncio.wait_for(asyncio.shield(conn.connack), s.connect_timeout_s)
        except asyncio.TimeoutError:
            raise UplinkConnectError("%s:%d sent no CONNACK within %.0fs" % (s.host, s.port, s.connect_timeout_s)) from None
        if reason.is_failure:
            code = reason.value
            if code in (0x84, 1):
                raise UplinkProtocolError("%s:%d refused MQTT %s (%s)" % (s.host, s.port, conn.protocol, reason))
            if code in (0x86, 0x87, 4, 5, 0x8C):
                raise UplinkAuthError("%s:%d refused the credentials: %s (check %s.username/password or the client certificate)" % (s.host, s.port, reason, s.key))
            raise UplinkConnectError("%s:%d refused the connection: %s" % (s.host, s.port, reason))
        if props is not None and hasattr(props, "ReceiveMaximum") and props.ReceiveMaximum < min(s.inflight, self._receive_max):
            # Paho cannot lower its in-flight limit on a live connection: use it from the next one.
            log.warning("broker's Receive Maximum is %d (< inflight %d); using it from the next connection", props.ReceiveMaximum, s.inflight)
            self._receive_max = props.ReceiveMaximum
        self.stats.connects += 1
        self.stats.protocol = conn.protocol
        self.stats.window = s.window
        self.stats.last_error = None
        log.info("connected to %s:%d (MQTT %s)", s.host, s.port, conn.protocol)

    async def _session(self, conn: Connection) -> None:
        ob = await self.outbox.stats()
        online = self.contract.status("online", since=rfc3339(time.time()), protocol=conn.protocol, chain=ob.chain, seq=ob.last_seq)
        conn.publish(self.contract.status_topic, online, retain=True, props=None, what=("status", None))
        for topic, (qos, _) in self._subs.items():
            conn.client.subscribe(topic, qos)
        self._connected.set()
        self.stats.connected = True
        # Anything acked but not yet deleted is still skipped; everything else goes again.
        tasks = [asyncio.create_task(self._drain_events(conn), name="uplink-events"), asyncio.create_task(self._drain_states(conn), name="uplink-states")]
        try:
            done, _ = await asyncio.wait([conn.closed, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                if t in done and t.exception() is not None:
                    raise t.exception()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _wait_any(self, conn: Connection, *aws) -> None:
        waiters = [asyncio.ensure_future(a) for a in aws]
        try:
            await asyncio.wait([conn.closed, *waiters], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _drain_events(self, conn: Connection) -> None:
        window = self.settings.window
        v5 = conn.protocol == "5"
        cursor = 0
        buf: collections.deque[Pending] = collections.deque()
        prefetch: Optional[asyncio.Future] = None
        changed = self.outbox.changed
        while not conn.closed.done():
            if not buf:
                if prefetch is None:
                    changed.clear()
                    prefetch = asyncio.ensure_future(self.outbox.read(after=cursor, limit=self.settings.batch))
                rows = await prefetch
                prefetch = None
                if not rows:
                    self._idle.set()
                    await self._wait_any(conn, changed.wait())
                    continue
                buf.extend(rows)
                cursor = rows[-1].seq
                # Read the next batch while this one is published.
                changed.clear()
                prefetch = asyncio.ensure_future(self.outbox.read(after=cursor, limit=self.settings.batch))
            while buf and conn.events_inflight < window and not conn.closed.done():
                row = buf.popleft()
                if row.seq in self._acking:
                    continue
                props = self._impl.event_properties(row) if v5 else None
                if not conn.publish(row.topic, row.payload, retain=False, props=props, what=("event", row.seq)):
                    await conn.closed
                    return
                conn.events_inflight += 1
                self.stats.published += 1
            if buf:
                conn.window_free.clear()
                await self._wait_any(conn, conn.window_free.wait())
        if prefetch is not None:
            prefetch.cancel()

    async def _drain_states(self, conn: Connection) -> None:
        sent: dict[str, int] = {}
        ev = self.outbox.states_changed
        while not conn.closed.done():
            ev.clear()
            for st in await self.outbox.node_states():
                if sent.get(st.node, 0) >= st.version:
                    continue
                if not conn.publish(st.topic, st.payload, retain=True, props=None, what=("state", st.node, st.version)):
                    return
                sent[st.node] = st.version
            await self._wait_any(conn, ev.wait())

    # -- acknowledgements (event loop) -------------------------------------------------------
    def _puback(self, conn: Connection, mid: int, reason) -> None:
        what = conn.inflight.pop(mid, None)
        if what is None:
            return
        failed = getattr(reason, "is_failure", False)
        kind = what[0]
        if kind == "event":
            conn.events_inflight -= 1
            conn.window_free.set()
            if failed:
                # Kept in the outbox: published again after the next reconnect.
                self.stats.rejected += 1
                key = str(reason)
                self.stats.rejected_reasons[key] = self.stats.rejected_reasons.get(key, 0) + 1
                if self.stats.rejected_reasons[key] in (1, 10, 100, 1000):
                    log.warning("broker rejected event seq %d: %s (kept; retried after reconnect)", what[1], reason)
                return
            self.stats.acked += 1
            self._acks.append(what[1])
            self._acking.add(what[1])
            if self._ack_task is None or self._ack_task.done():
                self._ack_task = asyncio.ensure_future(self._flush_acks())
        elif kind == "state":
            if not failed:
                self._state_done.append((what[1], what[2]))
                if self._ack_task is None or self._ack_task.done():
                    self._ack_task = asyncio.ensure_future(self._flush_acks())
        elif kind == "status" and what[1] is not None and not what[1].done():
            what[1].set_result(None)
        elif kind == "blob" and not what[1].done():
            what[1].set_result(not failed)

    async def _flush_acks(self) -> None:
        while self._acks or self._state_done:
            batch, self._acks = self._acks, []
            states, self._state_done = self._state_done, []
            try:
                if batch:
                    await self.outbox.ack(batch)
                for node, version in states:
                    await self.outbox.node_state_published(node, version)
            except Exception as exc:  # the outbox is closing or failing: republished later
                log.warning("could not delete acked events: %s", exc)
                self._acking.difference_update(batch)
                return
            self._acking.difference_update(batch)
        self._idle.set()

    def _message(self, topic: str, payload: bytes) -> None:
        for flt, (_, handler) in self._subs.items():
            if mqtt.topic_matches_sub(flt, topic):
                try:
                    r = handler(topic, payload)
                    if asyncio.iscoroutine(r):
                        asyncio.ensure_future(r)
                except Exception:
                    log.exception("handler for %s failed", flt)
