"""Seal and open link frames (docs/protocol.md, sections 1, 2 and 5).

::

    offset  size  field
    0       1     version 0x01
    1       1     kind
    2       1     flags      bit 0 DOWN, bit 1 ALARM
    3       1     role
    4       1     id_len     1..16
    5       n     node id    ASCII [A-Za-z0-9._-]
    5+n     4     counter
    9+n     4     timestamp
    13+n    m     payload    AES-128-CTR ciphertext of a JSON object
    13+n+m  8     tag        HMAC-SHA256(mac_key, bytes 0 .. 13+n+m-1)[0:8]

Sealing writes into a buffer you own and returns the length, nothing else is allocated but the
two SHA-256 states and digests of the tag::

    from link import frame
    from link.crypto import LinkKeys
    keys = LinkKeys(key32)                      # at boot
    buf = bytearray(frame.MAX_FRAME)            # at boot, reused for every frame
    n = frame.seal(buf, keys, frame.TELEMETRY, 0, frame.BIN, b"bin-01", counter, ts,
                   b'{"fill":62}')
    mqtt.publish(topic, memoryview(buf)[0:n])

Opening returns a reason code (0 = ok, else one of the codes below) and a :class:`Frame` or
None; it never raises for a bad frame::

    def lookup(node_id):          # -> (LinkKeys, role, replay.Window or None) or None
        return mine if node_id == my_id else None

    rc, f = frame.open(data, lookup)              # a node accepts downlink frames only
    if rc == frame.UNKNOWN_NODE:
        pass                      # on a shared bus: another node's frame, ignore it silently
    elif rc == 0:
        if f.verdict == replay.NEW:
            handle(f.kind, f.payload)             # payload: the decoded JSON object (a dict)
        window.update(f.counter)                  # only once it is handled; then ack it

Checks run in the order of section 5: too_large, bad_length (empty), bad_version, bad_length,
malformed (header: kind, role, reserved flag bits, id characters; then the MQTT topic's node
id), unknown_node, bad_tag, replayed (counter 0, direction, window), malformed (payload: a UTF-8
JSON object; an empty payload reads as ``{}``).
``open`` only *checks* the replay window; the caller updates it after handling the frame.
"""

import json
import struct

from micropython import const

_VERSION = const(1)

# kinds
HELLO = const(1)
TELEMETRY = const(2)
EVENT = const(3)
ACK = const(4)
COMMAND = const(5)
COMMAND_RESULT = const(6)
TIME_SYNC = const(7)
STATUS = const(8)

# flags
DOWN = const(1)
ALARM = const(2)

# roles
GATEWAY = const(0)
BIN = const(1)
STREETLIGHT = const(2)
PETSCAN = const(3)

# reason codes (0 = ok)
BAD_VERSION = const(1)
BAD_LENGTH = const(2)
BAD_CRC = const(3)
BAD_TAG = const(4)
UNKNOWN_NODE = const(5)
REPLAYED = const(6)
TOO_LARGE = const(7)
MALFORMED = const(8)

MAX_FRAME = const(250)
_MIN_FRAME = const(22)
_TAG_LEN = const(8)
_MAX_ID = const(16)
_OVERHEAD = const(21)  # frame length = 21 + id length + payload length

_FLAGS_KNOWN = const(3)
_KIND_MAX = const(8)
_ROLE_MAX = const(3)
_COUNTER_MAX = const(0xFFFFFFFF)
_DUPLICATE = const(1)  # replay.DUPLICATE
_NEW = const(0)  # replay.NEW

# Allowed directions per kind, indexed by kind: bit 0 uplink, bit 1 downlink.
_DIRS = b"\x00\x01\x01\x01\x02\x02\x01\x03\x01"


class Frame:
    """An opened frame: ``kind``, ``flags``, ``role``, ``node`` (bytes), ``counter``, ``ts``,
    ``payload`` (the decoded JSON object) and ``verdict`` (``replay.NEW`` or
    ``replay.DUPLICATE``; NEW when no window was given)."""

    def __init__(self, kind, flags, role, node, counter, ts, payload, verdict):
        self.kind = kind
        self.flags = flags
        self.role = role
        self.node = node
        self.counter = counter
        self.ts = ts
        self.payload = payload
        self.verdict = verdict


def _id_ok(data, start, end):
    """True if ``data[start:end]`` is all [A-Za-z0-9._-]."""
    while start < end:
        c = data[start]
        start += 1
        if 0x61 <= c <= 0x7A or 0x41 <= c <= 0x5A or 0x30 <= c <= 0x39:
            continue
        if c == 0x2E or c == 0x5F or c == 0x2D:
            continue
        return False
    return True


def seal(buf, keys, kind, flags, role, node_id, counter, ts, payload):
    """Build a frame in ``buf`` (bytearray or memoryview, at least ``21 + len(node_id) +
    len(payload)`` bytes) and return its length.

    ``keys`` is the node's :class:`link.crypto.LinkKeys`, ``node_id`` bytes, ``payload`` the
    UTF-8 JSON bytes (encrypted here; the caller's object is not changed). Raises
    ``ValueError`` for arguments no receiver would accept (frame over 250 bytes, bad id,
    counter outside 1..2**32-1, unknown kind/role/flag bits, kind against its direction).
    """
    n = len(node_id)
    m = len(payload)
    if n < 1 or n > _MAX_ID or not _id_ok(node_id, 0, n):
        raise ValueError("bad node id %r" % (node_id,))
    total = _OVERHEAD + n + m
    if total > MAX_FRAME:
        raise ValueError("frame of %d bytes over %d" % (total, MAX_FRAME))
    if counter < 1 or counter > _COUNTER_MAX or ts < 0 or ts > _COUNTER_MAX:
        raise ValueError("counter %d or timestamp %d out of range" % (counter, ts))
    if kind < 1 or kind > _KIND_MAX or role < 0 or role > _ROLE_MAX or flags & ~_FLAGS_KNOWN:
        raise ValueError("bad kind %d, role %d or flags 0x%02x" % (kind, role, flags))
    down = flags & DOWN
    if not _DIRS[kind] & (2 if down else 1):
        raise ValueError("kind %d cannot be sent %s" % (kind, "down" if down else "up"))
    mv = memoryview(buf)
    mv[0] = _VERSION
    mv[1] = kind
    mv[2] = flags
    mv[3] = role
    mv[4] = n
    mv[5 : 5 + n] = node_id
    struct.pack_into(">II", mv, 5 + n, counter, ts)
    p = 13 + n
    e = p + m
    mv[p:e] = payload
    keys.ctr(node_id, down, counter, mv[p:e])
    mv[e : e + _TAG_LEN] = memoryview(keys.mac.digest(mv[0:e]))[0:_TAG_LEN]
    return total


def open(data, lookup, down=1, topic=None, scratch=None):
    """Check and decode the frame ``data``; return ``(reason, Frame or None)``.

    ``lookup(node_id_bytes)`` returns ``(keys, role, window)`` for a known node (``window`` a
    :class:`link.replay.Window`, or None to skip the replay check) or None. ``down`` is the
    direction the receiver accepts: 1 (a node: downlink frames only, the default), 0 (the
    gateway) or None (either; tests). A frame in the other direction is ``replayed``: it is
    a reflected frame, whose tag is valid because both directions share the node's key.
    ``topic`` (bytes) is the node id of the MQTT topic the frame came on; a frame naming
    another node is ``malformed`` (None: not checked, e.g. on a serial line).
    ``scratch`` (a bytearray of ``MAX_FRAME`` bytes) receives the plaintext; without it one
    is allocated for the payload.
    """
    n = len(data)
    if n > MAX_FRAME:
        return TOO_LARGE, None
    if n == 0:
        return BAD_LENGTH, None
    if data[0] != _VERSION:
        return BAD_VERSION, None
    if n < _MIN_FRAME:
        return BAD_LENGTH, None
    idl = data[4]
    if idl < 1 or idl > _MAX_ID or n < _OVERHEAD + idl:
        return BAD_LENGTH, None
    kind = data[1]
    flags = data[2]
    role = data[3]
    if kind < 1 or kind > _KIND_MAX or role > _ROLE_MAX or flags & ~_FLAGS_KNOWN:
        return MALFORMED, None
    if not _id_ok(data, 5, 5 + idl):
        return MALFORMED, None
    mv = memoryview(data)
    node = bytes(mv[5 : 5 + idl])
    if topic is not None and topic != node:
        return MALFORMED, None
    entry = lookup(node)
    if entry is None or entry[1] != role:
        return UNKNOWN_NODE, None
    keys = entry[0]
    window = entry[2]
    e = n - _TAG_LEN
    d = keys.mac.digest(mv[0:e])
    diff = 0
    for i in range(_TAG_LEN):
        diff |= d[i] ^ data[e + i]
    if diff:
        return BAD_TAG, None
    counter, ts = struct.unpack_from(">II", data, 5 + idl)
    if counter == 0:
        return REPLAYED, None
    d = flags & DOWN
    if not _DIRS[kind] & (2 if d else 1) or (down is not None and d != down):
        return REPLAYED, None
    verdict = _NEW
    if window is not None:
        verdict = window.check(counter)
        if verdict != _NEW and verdict != _DUPLICATE:
            return REPLAYED, None
    p = 13 + idl
    m = e - p
    if m == 0:
        obj = {}  # an empty payload is allowed (section 2) and means no fields
    else:
        if scratch is None:
            plain = bytearray(mv[p:e])
        else:
            plain = memoryview(scratch)[0:m]
            plain[0:m] = mv[p:e]
        keys.ctr(node, d, counter, plain)
        try:
            obj = json.loads(plain)
        except ValueError:  # UnicodeError is a ValueError on MicroPython
            return MALFORMED, None
        if not isinstance(obj, dict):
            return MALFORMED, None
    return 0, Frame(kind, flags, role, node, counter, ts, obj, verdict)
