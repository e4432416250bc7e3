"""Keeps the MQTT connection to the gateway's broker alive (docs/protocol.md, section 4.1).

:class:`node.mqtt.MQTT` speaks the protocol over a good connection; this class owns everything
that makes a connection good: Wi-Fi up, the broker's address (resolved once, at the first
connection, then kept), connecting with jittered exponential backoff, the session (client id
and user = node id, clean session, last will ``offline`` retained on ``avail``), subscribing to
``down``, publishing ``online`` retained, keepalive pings, and noticing a dead link (Wi-Fi
lost, broker gone, no PINGRESP). After ``wifi_reset_n`` failed Wi-Fi attempts in a row the
Wi-Fi stack is restarted (``active(False)``, ``active(True)``): an ESP32's driver can get stuck
in a state where it never associates again until then::

    link = MQTTLink(hal, cfg, on_frame, on_state)
    asyncio.create_task(link.run())        # forever; never raises
    await link.send(frame_mv)              # OSError when down: the frame stays queued
    await link.asleep(until)               # 'asleep T' retained, DISCONNECT (no will)

``on_frame(data, topic_id)`` gets each frame from ``down`` (a memoryview valid during the
call); ``on_state(up)`` is called on every change. Neither may block.
"""

import asyncio
import random
import socket
import time
from asyncio.core import _io_queue
from errno import EINPROGRESS

from micropython import const

from node import log
from node.flag import Flag, within
from node.mqtt import MQTT, SUBACK

_CONNECT_MS = const(10000)  # TCP connect + CONNACK + SUBACK


class _Conn:
    """A TCP connection as the stream :class:`node.mqtt.MQTT` wants (``readinto``, ``write``,
    ``drain``), on asyncio's I/O queue as ``asyncio.open_connection``'s streams are, without
    their module: a non-blocking socket, and what ``write`` could not send at once is sent by
    ``drain``, which the MQTT client awaits right after (holding its lock, so the buffers stay
    as they are)."""

    def __init__(self, ai):
        self.s = s = socket.socket(ai[0], ai[1], ai[2])
        s.setblocking(False)
        self._rest = None  # what write() left for drain(): a memoryview
        try:
            s.connect(ai[-1])
        except OSError as e:
            if e.errno != EINPROGRESS:
                raise

    async def connected(self):
        yield _io_queue.queue_write(self.s)

    async def readinto(self, buf):
        yield _io_queue.queue_read(self.s)
        return self.s.readinto(buf)

    def write(self, buf):
        if self._rest is None:
            n = self.s.write(buf) or 0
            if n == len(buf):
                return
            self._rest = memoryview(buf)[n:]
        else:  # a second write before drain(): rare (a PUBLISH over the buffer's size)
            self._rest = memoryview(bytes(self._rest) + bytes(buf))

    def drain(self):
        # Nothing left over (the usual case): asyncio's sleep_ms(0), which allocates nothing.
        return asyncio.sleep_ms(0) if self._rest is None else self._drain()

    async def _drain(self):
        mv = self._rest
        while mv is not None:
            yield _io_queue.queue_write(self.s)
            n = self.s.write(mv) or 0
            mv = self._rest = mv[n:] if n < len(mv) else None


class MQTTLink:
    """The node's link over Wi-Fi and MQTT; see the module docstring."""

    def __init__(self, hal, cfg, on_frame, on_state=None):
        self._hal = hal
        self._cfg = cfg
        self._on_frame = on_frame
        self._on_state = on_state
        nid = cfg["node_id"].encode()
        self.node_id = nid
        base = b"linli/node/" + nid
        self.t_up = base + b"/up"
        self.t_down = base + b"/down"
        self.t_avail = base + b"/avail"
        self.mqtt = MQTT(self._msg)
        self.up = False
        self.connects = 0  # sessions established since boot
        self._addr = None  # broker IP, resolved once
        self._w = None
        self._dead = Flag()
        self._stop = False
        self._min = cfg["backoff_min_ms"]
        self._max = cfg["backoff_max_s"] * 1000
        self._ka = cfg["keepalive_s"]
        self.wifi_fails = 0  # failed Wi-Fi attempts in a row
        self.assoc = False  # True: the association was started already (the node, at boot)
        self.beat = time.ticks_ms()  # last sign of life of run(), for the watchdog

    def _msg(self, topic, payload):
        if topic == self.t_down:
            self._on_frame(payload, self.node_id)

    def _set(self, up):
        if up != self.up:
            self.up = up
            if self._on_state:
                self._on_state(up)

    def rssi(self):
        return self._hal.rssi()

    async def run(self):
        """Connect, serve, reconnect with backoff; returns only after :meth:`asleep`."""
        delay = self._min
        while not self._stop:
            t0 = self.beat = time.ticks_ms()
            try:
                await self._wifi()
                if self._addr is None:
                    self._addr = self._resolve()
                await self._session()
            except Exception as e:  # OSError, MQTTError, TimeoutError: all mean "try again"
                if not self._stop:
                    log("mqtt", "link down: %s %s", type(e).__name__, e)
            self._close()
            if self._stop:
                break
            if time.ticks_diff(time.ticks_ms(), t0) > self._ka * 1000:
                delay = self._min  # that session was good: start the backoff over
            wait = delay // 2 + random.getrandbits(16) % (delay // 2 + 1)
            log("mqtt", "reconnect in %d ms", wait)
            end = time.ticks_add(time.ticks_ms(), wait)
            while time.ticks_diff(end, time.ticks_ms()) > 0 and not self._stop:
                self.beat = time.ticks_ms()
                await asyncio.sleep_ms(min(500, max(1, time.ticks_diff(end, time.ticks_ms()))))
            delay = min(delay * 2, self._max)

    async def _wifi(self):
        w = self._hal.wlan()
        if w.isconnected():
            self.wifi_fails = 0
            return
        cfg = self._cfg
        if self.assoc:  # under way since boot: a second connect() would start it over
            self.assoc = False
        else:
            w.active(True)
            w.connect(cfg["wifi_ssid"], cfg["wifi_password"])
        end = time.ticks_add(time.ticks_ms(), cfg["wifi_timeout_s"] * 1000)
        while not w.isconnected():
            if time.ticks_diff(end, time.ticks_ms()) <= 0:
                st = w.status()
                w.disconnect()
                self.wifi_fails += 1
                if self.wifi_fails >= cfg["wifi_reset_n"]:
                    log("wifi", "%d failed attempts: restarting the Wi-Fi stack", self.wifi_fails)
                    self.wifi_fails = 0
                    w.active(False)
                    w.active(True)
                raise OSError("wifi: no connection to %s (status %s)" % (cfg["wifi_ssid"], st))
            self.beat = time.ticks_ms()
            await asyncio.sleep_ms(100)
        self.wifi_fails = 0
        log("wifi", "connected to %s, rssi %s", cfg["wifi_ssid"], self._hal.rssi())

    def _resolve(self):
        # Blocking, but once per boot (a name; an IP address is parsed, not looked up).
        host = self._cfg["broker_host"]
        a = socket.getaddrinfo(host, self._cfg["broker_port"], 0, socket.SOCK_STREAM)[0][-1]
        if isinstance(a, tuple):  # ESP32: ('1.2.3.4', port)
            ip = a[0]
        else:  # the unix port: a raw sockaddr
            a = socket.sockaddr(a)
            ip = socket.inet_ntop(a[0], a[1])
        log("mqtt", "broker %s is %s", host, ip)
        return ip

    async def _session(self):
        await self._connect()  # its (large) frame is gone before the session's long wait
        self.connects += 1
        log("mqtt", "connected to %s:%d", self._addr, self._cfg["broker_port"])
        self._dead.clear()
        reader = asyncio.create_task(self._reader())
        self._set(True)
        try:
            await self._keepalive()
        finally:
            reader.cancel()

    async def _connect(self):
        """TCP, CONNECT (will: ``offline``), SUBSCRIBE ``down``, ``online``; OSError if any
        step takes over _CONNECT_MS."""
        cfg = self._cfg
        m = self.mqtt
        ai = socket.getaddrinfo(self._addr, cfg["broker_port"], 0, socket.SOCK_STREAM)[0]  # an IP: no lookup
        self._w = w = _Conn(ai)
        await within(w.connected(), _CONNECT_MS)
        self.beat = time.ticks_ms()  # each step below may take up to _CONNECT_MS
        m.attach(w, w)
        pw = cfg["broker_password"]
        await within(
            m.connect(
                self.node_id,
                cfg["broker_user"].encode(),
                pw.encode() if pw else None,
                (self.t_avail, b"offline"),
                self._ka,
            ),
            _CONNECT_MS,
        )
        self.beat = time.ticks_ms()
        pid = await m.subscribe(self.t_down, 1)
        while True:
            t, p, granted = await within(m.read(), _CONNECT_MS)
            if t == SUBACK and p == pid:
                if granted == 0x80:
                    raise OSError("broker refused the subscription to %s" % self.t_down)
                break
        await m.publish(self.t_avail, b"online", 1, True)

    async def _reader(self):
        try:
            while True:
                await self.mqtt.read()
        except Exception as e:
            if not self._stop:
                log("mqtt", "read: %s %s", type(e).__name__, e)
        self._dead.set()

    async def _keepalive(self):
        """Ping when idle, watch Wi-Fi and the broker; return (raise) when the link is dead."""
        m = self.mqtt
        ka = self._ka * 1000
        tick = min(1000, ka // 4)
        wlan = self._hal.wlan()
        while True:
            if await self._dead.wait(tick):
                raise OSError("connection lost")
            now = time.ticks_ms()
            self.beat = now
            if not wlan.isconnected():
                raise OSError("wifi lost")
            if time.ticks_diff(now, m.last_rx) > ka + ka // 2:
                raise OSError("no answer from the broker for %d s" % (ka * 3 // 2000))
            if time.ticks_diff(now, m.last_tx) >= ka // 2:
                await m.ping()

    def _close(self):
        self._set(False)
        w = self._w
        self._w = None
        if w is not None:
            try:
                w.s.close()
            except Exception:
                pass

    def send(self, frame):
        """Publish one frame on ``up`` (QoS 1): returns the coroutine to await (no coroutine
        of its own per frame); raises OSError when the link is down."""
        if not self.up:
            raise OSError("link down")
        return self.mqtt.publish(self.t_up, frame, 1)

    async def asleep(self, until, timeout_ms=3000):
        """Say 'asleep UNTIL' on ``avail`` (retained), wait for its PUBACK, disconnect cleanly
        so the broker drops the will, and stop reconnecting. Best effort: a link that is down
        says nothing (the gateway then sees the will, or nothing, and the status frame)."""
        self._stop = True
        if self.up:
            m = self.mqtt
            try:
                pid = await m.publish(self.t_avail, b"asleep %d" % until, 1, True)
                await m.wait_puback(pid, timeout_ms)
                await m.disconnect()
            except Exception as e:
                log("mqtt", "asleep: %s", e)
        self._dead.set()
        self._close()
