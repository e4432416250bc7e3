"""MQTT 3.1.1 over a good connection: packets in and out of one stream, nothing else.

This class does not know about Wi-Fi, reconnecting or backoff (that is
:mod:`node.mqttlink`); when the stream fails it raises ``OSError`` and is done. It works on any
pair of objects with ``await reader.readinto(buf)``, ``writer.write(buf)`` and
``await writer.drain()``: MicroPython's asyncio streams, or a fake over ``io.BytesIO`` in tests::

    m = MQTT(on_msg)                             # buffers allocated once, at boot
    r, w = await asyncio.open_connection(ip, 1883)
    m.attach(r, w)                               # per connection
    await m.connect(b"bin-01", b"bin-01", b"pw", will=(b"linli/node/bin-01/avail", b"offline"))
    await m.subscribe(b"linli/node/bin-01/down", 1)
    while True:
        t, pid, x = await m.read()               # PUBLISH goes to on_msg(topic, payload)

``on_msg(topic, payload)`` gets memoryviews into the receive buffer, valid only during the
call; it must not block. An incoming QoS 1 PUBLISH is acknowledged after ``on_msg`` returns.
Writes are serialised by a lock (each packet is one ``write`` + ``drain``), so a reader task, a
sender task and a keepalive task may share one connection. Only the packets a node needs:
CONNECT/CONNACK, PUBLISH QoS 0/1 with PUBACK, SUBSCRIBE/SUBACK, PINGREQ/PINGRESP, DISCONNECT.
"""

import time

from micropython import const

from node.flag import Flag, Mutex

CONNECT = const(0x10)
CONNACK = const(0x20)
PUBLISH = const(0x30)
PUBACK = const(0x40)
SUBSCRIBE = const(0x82)
SUBACK = const(0x90)
PINGREQ = const(0xC0)
PINGRESP = const(0xD0)
DISCONNECT = const(0xE0)

# A PUBLISH of a link frame (250) on a node's topic (at most 32) with its headers takes 289;
# CONNECT with a broker password up to ~220 bytes fits too. A bigger PUBLISH is sent in two
# writes, a bigger incoming packet skipped (read()).
_BUF = const(320)
_ECONNRESET = const(104)
_MAX_UNACKED = const(64)


class MQTTError(OSError):
    """The broker refused us (``args[0]`` is the CONNACK return code) or broke the protocol."""


def _refused(rc):
    if rc == 4:
        return "bad user name or password"
    if rc == 5:
        return "not authorised"
    if rc == 2:
        return "client id rejected"
    if rc == 3:
        return "server unavailable"
    return "refused"


def _put_len(buf, pos, n):
    """Write MQTT's variable-length 'remaining length' ``n`` at ``pos``; return the new pos."""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            buf[pos] = b | 0x80
            pos += 1
        else:
            buf[pos] = b
            return pos + 1


def _put_str(buf, pos, s):
    """Write a length-prefixed string (bytes) at ``pos``; return the new pos."""
    n = len(s)
    buf[pos] = n >> 8
    buf[pos + 1] = n & 0xFF
    buf[pos + 2 : pos + 2 + n] = s
    return pos + 2 + n


class MQTT:
    """One MQTT 3.1.1 client session over a stream; see the module docstring."""

    def __init__(self, on_msg=None, bufsize=_BUF):
        self.on_msg = on_msg
        self._in = bytearray(bufsize)
        self._inv = memoryview(self._in)
        self._out = bytearray(bufsize)
        self._outv = memoryview(self._out)
        self._lock = Mutex()
        self._acked = Flag()
        self.unacked = {}  # QoS 1 packet id -> ticks_ms sent, until its PUBACK
        self._r = None
        self._w = None
        self._pid = 0
        self.last_rx = 0
        self.last_tx = 0

    def attach(self, reader, writer):
        """Use a new connection; forget the packet ids of the old one (clean session)."""
        self._r = reader
        self._w = writer
        self.unacked = {}
        self.last_rx = self.last_tx = time.ticks_ms()

    def _next_pid(self):
        p = self._pid + 1
        if p > 0xFFFF:
            p = 1
        self._pid = p
        return p

    def _send(self, n, payload=None):
        """Write ``_out[0:n]`` (and ``payload``); return the writer's drain, to await (no
        coroutine of its own: a packet allocates little). The caller holds the lock."""
        w = self._w
        w.write(self._outv[0:n])
        if payload is not None and len(payload):
            w.write(payload)
        self.last_tx = time.ticks_ms()
        return w.drain()

    async def _simple(self, ptype, pid=None):
        if not self._lock.try_take():
            await self._lock.take()
        try:
            o = self._out
            o[0] = ptype
            if pid is None:
                o[1] = 0
                await self._send(2)
            else:
                o[1] = 2
                o[2] = pid >> 8
                o[3] = pid & 0xFF
                await self._send(4)
        finally:
            self._lock.give()

    async def connect(self, client_id, user=None, password=None, will=None, keepalive=60, clean=True):
        """Send CONNECT and wait for CONNACK; return the session-present flag.

        ``will`` is ``(topic, message)``, sent with QoS 1 and retained. Raises ``MQTTError``
        when the broker refuses (``args[0]`` = its return code) or answers anything else.
        """
        flags = 0x02 if clean else 0
        n = 10 + 2 + len(client_id)
        if will:
            flags |= 0x04 | 0x08 | 0x20  # will, will QoS 1, will retain
            n += 4 + len(will[0]) + len(will[1])
        if user:
            flags |= 0x80
            n += 2 + len(user)
            if password:
                flags |= 0x40
                n += 2 + len(password)
        if not self._lock.try_take():
            await self._lock.take()
        try:
            o = self._out
            o[0] = CONNECT
            p = _put_len(o, 1, n)
            p = _put_str(o, p, b"MQTT")
            o[p] = 4  # protocol level: 3.1.1
            o[p + 1] = flags
            o[p + 2] = keepalive >> 8
            o[p + 3] = keepalive & 0xFF
            p = _put_str(o, p + 4, client_id)
            if will:
                p = _put_str(o, p, will[0])
                p = _put_str(o, p, will[1])
            if user:
                p = _put_str(o, p, user)
                if password:
                    p = _put_str(o, p, password)
            await self._send(p)
        finally:
            self._lock.give()
        t, sp, rc = await self.read()
        if t != CONNACK:
            raise MQTTError("expected CONNACK, got packet type 0x%02x" % t)
        if rc:
            raise MQTTError(rc, _refused(rc))
        return sp

    async def publish(self, topic, msg, qos=0, retain=False, dup=False):
        """Send PUBLISH; return its packet id (0 for QoS 0). QoS 1 ids stay in ``unacked``
        until their PUBACK arrives (see :meth:`wait_puback`)."""
        n = 2 + len(topic) + len(msg)
        pid = 0
        if qos:
            n += 2
            pid = self._next_pid()
        if not self._lock.try_take():
            await self._lock.take()
        try:
            o = self._out
            o[0] = PUBLISH | (qos << 1) | (1 if retain else 0) | (8 if dup else 0)
            p = _put_len(o, 1, n)
            p = _put_str(o, p, topic)
            if qos:
                o[p] = pid >> 8
                o[p + 1] = pid & 0xFF
                p += 2
                if len(self.unacked) >= _MAX_UNACKED:
                    self.unacked.clear()  # a broker that never acks: stop tracking, keep going
                self.unacked[pid] = time.ticks_ms()
            m = len(msg)
            if p + m <= len(o):
                o[p : p + m] = msg
                await self._send(p + m)
            else:
                await self._send(p, msg)
        finally:
            self._lock.give()
        return pid

    async def wait_puback(self, pid, timeout_ms):
        """Wait until the PUBACK of ``pid`` arrived (True) or ``timeout_ms`` passed (False).

        Someone else must be calling :meth:`read` meanwhile (the reader task).
        """
        end = time.ticks_add(time.ticks_ms(), timeout_ms)
        while pid in self.unacked:
            left = time.ticks_diff(end, time.ticks_ms())
            if left <= 0:
                return False
            self._acked.clear()
            await self._acked.wait(left)
        return True

    async def subscribe(self, topic, qos=1):
        """Send SUBSCRIBE for one topic; return the packet id (its SUBACK comes to read())."""
        pid = self._next_pid()
        if not self._lock.try_take():
            await self._lock.take()
        try:
            o = self._out
            o[0] = SUBSCRIBE
            p = _put_len(o, 1, 2 + 2 + len(topic) + 1)
            o[p] = pid >> 8
            o[p + 1] = pid & 0xFF
            p = _put_str(o, p + 2, topic)
            o[p] = qos
            await self._send(p + 1)
        finally:
            self._lock.give()
        return pid

    async def ping(self):
        """Send PINGREQ (its PINGRESP comes to read())."""
        await self._simple(PINGREQ)

    async def disconnect(self):
        """Send DISCONNECT: the broker then drops the connection without sending the will."""
        await self._simple(DISCONNECT)

    async def _fill(self, mv):
        """Read exactly len(mv) bytes into ``mv``."""
        r = self._r
        pos = 0
        n = len(mv)
        while pos < n:
            k = await r.readinto(mv[pos:])
            if k is None:
                continue  # MicroPython: a non-blocking read found nothing after all
            if k == 0:
                raise OSError(_ECONNRESET)
            pos += k

    async def read(self):
        """Read one packet; return ``(type, a, b)``.

        PUBLISH: ``(PUBLISH, pid, None)``, after ``on_msg(topic, payload)`` and the PUBACK;
        PUBACK: ``(PUBACK, pid, None)``; SUBACK: ``(SUBACK, pid, granted QoS or 0x80)``;
        CONNACK: ``(CONNACK, session present, return code)``; PINGRESP: ``(PINGRESP, None,
        None)``. A packet larger than the buffer is skipped: ``(type, None, None)``. Raises
        ``OSError`` when the stream ends.
        """
        await self._fill(self._inv[0:1])  # an idle link waits here: in a small frame
        return await self._packet(self._in[0])

    async def _packet(self, b0):
        """The rest of a packet whose first byte was ``b0``; see :meth:`read`."""
        one = self._inv[0:1]
        n = 0
        shift = 0
        while True:
            await self._fill(one)
            b = self._in[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError("bad remaining length")
        self.last_rx = time.ticks_ms()
        t = b0 & 0xF0
        buf = self._in
        mv = self._inv
        if n > len(buf):
            while n:  # skip it, a buffer at a time
                k = n if n < len(buf) else len(buf)
                await self._fill(mv[0:k])
                n -= k
            return t, None, None
        await self._fill(mv[0:n])
        self.last_rx = time.ticks_ms()
        if t == PUBLISH:
            qos = (b0 >> 1) & 3
            tl = (buf[0] << 8) | buf[1]
            p = 2 + tl
            pid = 0
            if qos:
                pid = (buf[p] << 8) | buf[p + 1]
                p += 2
            if self.on_msg is not None:
                self.on_msg(mv[2 : 2 + tl], mv[p:n])
            if qos == 1:
                await self._simple(PUBACK, pid)
            return t, pid, None
        if t == PUBACK or t == SUBACK:
            pid = (buf[0] << 8) | buf[1]
            if t == PUBACK:
                if self.unacked.pop(pid, None) is not None:
                    self._acked.set()
                return t, pid, None
            return t, pid, buf[2] if n > 2 else 0x80
        if t == CONNACK:
            return t, buf[0] & 1, buf[1]
        return t, None, None
