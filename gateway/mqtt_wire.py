"""MQTT packets as bytes, for the gateway's own asyncio clients (local broker, uplink).

Built for throughput: :func:`split` cuts every complete packet out of what one socket read
returned in one pass (a burst of node frames is parsed without a callback per message, with a
partial packet carried over to the next read), and the packets we send are plain ``bytes`` that
the caller joins and writes once. Only what a subscriber that also publishes QoS 1 needs:
CONNECT/CONNACK, PUBLISH QoS 0/1 and PUBACK, SUBSCRIBE/SUBACK, PINGREQ/PINGRESP, DISCONNECT
(OASIS MQTT 3.1.1, section 3). The nodes' MicroPython side is ``firmware/lib/node/mqtt.py``.

>>> pkt = publish(b"linli/node/bin-1/down", b"\\x01\\x04", 7)
>>> packets, rest = split(pkt + pkt[:3])
>>> [(hex(b0), parse_publish(b0, body)) for b0, body in packets], rest
([('0x32', (b'linli/node/bin-1/down', 7, b'\\x01\\x04'))], b'2\\x1b\\x00')
"""

from __future__ import annotations

import struct

from linli.errors import LinliError

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
PINGREQ = b"\xc0\x00"
PINGRESP = 0xD0
DISCONNECT = b"\xe0\x00"

MAX_PACKET = 1 << 20  # a link frame is at most 250 bytes: anything near this is not a node
_PID = struct.Struct(">BBH")  # PUBACK: type, remaining length 2, packet id

CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class MQTTProtocolError(LinliError):
    """The broker sent something that is not MQTT 3.1.1 (or more than :data:`MAX_PACKET`)."""


def varint(n: int) -> bytes:
    """MQTT's 'remaining length': 7 bits a byte, least significant first.

    >>> varint(127), varint(128), varint(16384)
    (b'\\x7f', b'\\x80\\x01', b'\\x80\\x80\\x01')
    """
    out = bytearray()
    while True:
        n, b = n >> 7, n & 0x7F
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(b: bytes) -> bytes:
    """A length-prefixed string or binary field."""
    return len(b).to_bytes(2, "big") + b


def connect(client_id: str, *, keepalive: int, clean: bool = True, username: str | None = None, password: str | None = None, will: tuple | None = None, v5: bool = False) -> bytes:
    """CONNECT, protocol level 4 (3.1.1) or 5 (no properties). ``will`` is ``(topic, payload,
    qos, retain)``."""
    props = b"\x00" if v5 else b""
    flags = 0x02 if clean else 0
    tail = props + field(client_id.encode())
    if will:
        topic, payload, qos, retain = will
        flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
        tail += props + field(topic.encode()) + field(payload)
    if username is not None:
        flags |= 0x80
        tail += field(username.encode())
        if password is not None:
            flags |= 0x40
            tail += field(password.encode())
    body = field(b"MQTT") + bytes((5 if v5 else 4, flags)) + keepalive.to_bytes(2, "big") + tail
    return bytes((CONNECT,)) + varint(len(body)) + body


def publish(topic: bytes, payload: bytes, pid: int, *, qos: int = 1, retain: bool = False, props: bytes | None = None) -> bytes:
    """PUBLISH; ``pid`` is ignored for QoS 0. ``props``: the packed MQTT 5 property list
    (with its length; ``b"\\x00"`` for none), ``None`` for 3.1.1."""
    # One %-format per packet (the gateway sends one per ack and one per event upstream).
    n = 2 + len(topic) + (2 if qos else 0) + (len(props) if props is not None else 0) + len(payload)
    return b"%c%s%s%s%s%s%s" % (
        PUBLISH | qos << 1 | retain,
        bytes((n,)) if n < 128 else bytes((n & 0x7F | 0x80, n >> 7)) if n < 16384 else varint(n),
        len(topic).to_bytes(2, "big"),
        topic,
        pid.to_bytes(2, "big") if qos else b"",
        props if props is not None else b"",
        payload,
    )


def puback(pid: int) -> bytes:
    """PUBACK (success: the same 4 bytes in 3.1.1 and 5)."""
    return _PID.pack(PUBACK, 2, pid)


def subscribe(pid: int, topic_filter: str, qos: int = 1, *, v5: bool = False) -> bytes:
    body = pid.to_bytes(2, "big") + (b"\x00" if v5 else b"") + field(topic_filter.encode()) + bytes((qos,))
    return bytes((SUBSCRIBE,)) + varint(len(body)) + body


def split(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Every complete packet in ``data`` as ``(first byte, body)``, and the incomplete rest
    (prepend it to the next read). Raises :class:`MQTTProtocolError` on a malformed length."""
    out = []
    i, n = 0, len(data)
    while n - i >= 2:
        length = data[i + 1]
        j = i + 2
        if length & 0x80:  # a multi-byte length (rare: node frames are small)
            r = _varint_at(data, i + 1)
            if r is None:
                break
            length, j = r
            if length > MAX_PACKET:
                raise MQTTProtocolError("a %d-byte packet (limit %d)" % (length, MAX_PACKET))
        end = j + length
        if end > n:
            break
        out.append((data[i], data[j:end]))
        i = end
    return out, data[i:]


def parse_publish(b0: int, body: bytes, v5: bool = False) -> tuple[bytes, int, bytes]:
    """``(topic, packet id or 0, payload)`` of a PUBLISH body (MQTT 5: properties skipped)."""
    tl = body[0] << 8 | body[1]
    p = 2 + tl
    pid = 0
    if b0 & 0x06:
        pid = body[p] << 8 | body[p + 1]
        p += 2
    if v5:
        n, p = read_varint(body, p)
        p += n
    return body[2 : 2 + tl], pid, body[p:]


def _varint_at(data: bytes, p: int) -> tuple[int, int] | None:
    """A variable byte integer at ``p``: ``(value, position after it)``, or None when ``data``
    ends inside it."""
    value = shift = 0
    for i in range(p, min(p + 4, len(data))):
        value |= (data[i] & 0x7F) << shift
        if not data[i] & 0x80:
            return value, i + 1
        shift += 7
    if len(data) - p >= 4:
        raise MQTTProtocolError("variable byte integer longer than 4 bytes")
    return None


def read_varint(data: bytes, p: int) -> tuple[int, int]:
    """A variable byte integer at ``p`` of a whole packet: ``(value, position after it)``."""
    r = _varint_at(data, p)
    if r is None:
        raise MQTTProtocolError("truncated variable byte integer")
    return r


# MQTT 5 property identifiers by value type (MQTT 5.0 section 2.2.2.2).
_BYTE = frozenset((0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A))
_TWO = frozenset((0x13, 0x21, 0x22, 0x23))
_FOUR = frozenset((0x02, 0x11, 0x18, 0x27))
_DATA = frozenset((0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F))
PROPERTY_NAMES = {0x13: "ServerKeepAlive", 0x21: "ReceiveMaximum", 0x22: "TopicAliasMaximum", 0x24: "MaximumQoS", 0x25: "RetainAvailable", 0x27: "MaximumPacketSize", 0x12: "AssignedClientIdentifier", 0x1F: "ReasonString"}


def parse_properties(data: bytes, p: int) -> tuple[dict, int]:
    """An MQTT 5 property list at ``p``: ``({identifier: value}, position after it)``; user
    properties are collected as a list of ``(name, value)`` under 0x26.

    >>> parse_properties(b"\\x05\\x21\\x00\\x14\\x25\\x01", 0)
    ({33: 20, 37: 1}, 6)
    """
    n, p = read_varint(data, p)
    end = p + n
    out: dict = {}
    try:
        while p < end:
            ident = data[p]
            p += 1
            if ident in _BYTE:
                out[ident] = data[p]
                p += 1
            elif ident in _TWO:
                out[ident] = data[p] << 8 | data[p + 1]
                p += 2
            elif ident in _FOUR:
                out[ident] = int.from_bytes(data[p : p + 4], "big")
                p += 4
            elif ident == 0x0B:
                out[ident], p = read_varint(data, p)
            elif ident in _DATA:
                k = data[p] << 8 | data[p + 1]
                out[ident] = data[p + 2 : p + 2 + k]
                p += 2 + k
            elif ident == 0x26:
                k = data[p] << 8 | data[p + 1]
                name = data[p + 2 : p + 2 + k]
                p += 2 + k
                k = data[p] << 8 | data[p + 1]
                out.setdefault(ident, []).append((name.decode(), data[p + 2 : p + 2 + k].decode()))
                p += 2 + k
            else:
                raise MQTTProtocolError("unknown MQTT 5 property 0x%02x" % ident)
    except IndexError:
        raise MQTTProtocolError("truncated property list") from None
    if p != end:
        raise MQTTProtocolError("property list overruns its length")
    return out, end


# Reason codes (MQTT 5.0 section 2.4) with the names paho-mqtt uses, so messages read the same.
REASONS = {
    0x00: "Success", 0x10: "No matching subscribers", 0x80: "Unspecified error", 0x81: "Malformed packet",
    0x82: "Protocol error", 0x83: "Implementation specific error", 0x84: "Unsupported protocol version",
    0x85: "Client identifier not valid", 0x86: "Bad user name or password", 0x87: "Not authorized",
    0x88: "Server unavailable", 0x89: "Server busy", 0x8A: "Banned", 0x8B: "Server shutting down",
    0x8C: "Bad authentication method", 0x8D: "Keep alive timeout", 0x8E: "Session taken over",
    0x90: "Topic Name invalid", 0x91: "Packet identifier in use", 0x93: "Receive maximum exceeded",
    0x94: "Topic alias invalid", 0x95: "Packet too large", 0x96: "Message rate too high", 0x97: "Quota exceeded",
    0x98: "Administrative action", 0x99: "Payload format invalid", 0x9A: "Retain not supported",
    0x9B: "QoS not supported", 0x9C: "Use another server", 0x9D: "Server moved",
    0x9F: "Connection rate exceeded",
}
# A 3.1.1 CONNACK return code as the MQTT 5 reason code that means the same (as paho maps it).
V311_CONNACK = {1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}


class Reason:
    """A reason code: ``value``, ``is_failure`` and its name as ``str()`` (paho's interface).

    >>> r = Reason(0x87); (r.value, r.is_failure, str(r))
    (135, True, 'Not authorized')
    """

    __slots__ = ("value", "connack")

    def __init__(self, value: int, connack: bool = False):
        self.value = value
        self.connack = connack

    @property
    def is_failure(self) -> bool:
        return self.value >= 0x80 or (self.connack and self.value != 0)

    def __str__(self) -> str:
        return REASONS.get(self.value, "reason code 0x%02x" % self.value)

    __repr__ = __str__


SUCCESS = Reason(0)


