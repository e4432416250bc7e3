"""Sealing and opening link frames (docs/protocol.md sections 1, 2 and 5).

>>> from linli.link import LinkKeys, Kind, Role, seal, open_frame
>>> k = LinkKeys(bytes(range(32)))
>>> raw = seal(k, Kind.EVENT, Role.BIN, "bin-7", counter=9, ts=1795880000, payload=b'{"ev":"full"}')
>>> f = open_frame(raw, lambda node_id: (k, Role.BIN))
>>> (f.node_id, f.kind.name, f.body)
('bin-7', 'EVENT', {'ev': 'full'})
"""

from __future__ import annotations

import enum
import hmac
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Callable, Optional

from linli.link.crypto import DOWN, TAG_SIZE, UP, LinkKeys
from linli.link.errors import LinkError, Reason
from linli.link.replay import Verdict, Window

VERSION = 1
MAX_FRAME = 250
MIN_FRAME = 22
MAX_ID = 16
_ID_RE = re.compile(rb"\A[A-Za-z0-9._-]{1,16}\Z")
_COUNTER_TS = struct.Struct(">II")


class Kind(enum.IntEnum):
    HELLO = 1
    TELEMETRY = 2
    EVENT = 3
    ACK = 4
    COMMAND = 5
    COMMAND_RESULT = 6
    TIME_SYNC = 7
    STATUS = 8

    @property
    def label(self) -> str:
        return self.name.lower()


class Role(enum.IntEnum):
    GATEWAY = 0
    BIN = 1
    STREETLIGHT = 2
    PETSCAN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, name: str) -> "Role":
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError("unknown role %r (allowed: bin, streetlight, petscan)" % name) from None


class Flag(enum.IntFlag):
    NONE = 0
    DOWN = 1
    ALARM = 2


_KNOWN_FLAGS = Flag.DOWN | Flag.ALARM
_KNOWN_FLAG_BITS = int(_KNOWN_FLAGS)
# Header bytes -> enum members by dict lookup (calling an enum class is ~1 us a time).
_KINDS = {int(k): k for k in Kind}
_ROLES = {int(r): r for r in Role}
_FLAGS = {i: Flag(i) for i in range(_KNOWN_FLAG_BITS + 1)}
# Which way each kind may travel: UP, DOWN, or both (None).
_DIRECTION = {
    Kind.HELLO: UP,
    Kind.TELEMETRY: UP,
    Kind.EVENT: UP,
    Kind.ACK: DOWN,
    Kind.COMMAND: DOWN,
    Kind.COMMAND_RESULT: UP,
    Kind.TIME_SYNC: None,
    Kind.STATUS: UP,
}

# lookup(node_id) -> (keys, registered role) or None when the node is unknown.
KeyLookup = Callable[[str], Optional[tuple[LinkKeys, Role]]]


@dataclass(frozen=True)
class Header:
    version: int
    kind: Kind
    flags: Flag
    role: Role
    node_id: str
    counter: int
    ts: int
    payload_start: int

    @property
    def direction(self) -> int:
        return DOWN if self.flags & Flag.DOWN else UP


@dataclass(frozen=True)
class Frame:
    """An opened (verified and decrypted) frame."""

    kind: Kind
    flags: Flag
    role: Role
    node_id: str
    counter: int
    ts: int
    payload: bytes
    body: dict = field(compare=False)
    verdict: Optional[Verdict] = None

    @property
    def alarm(self) -> bool:
        return bool(self.flags & Flag.ALARM)

    @property
    def direction(self) -> int:
        return DOWN if self.flags & Flag.DOWN else UP


def seal(
    keys: LinkKeys,
    kind: Kind,
    role: Role,
    node_id: str,
    *,
    counter: int,
    ts: int,
    payload: bytes = b"",
    flags: Flag = Flag.NONE,
) -> bytes:
    """Build, encrypt and tag one frame. Raises ValueError for arguments no receiver would accept."""
    nid = _sealed_ids.get(node_id)
    if nid is None:
        nid = node_id.encode("ascii")
        if not _ID_RE.match(nid):
            raise ValueError("node id must be 1..16 chars of [A-Za-z0-9._-], got %r" % node_id)
        if len(_sealed_ids) > 4096:
            _sealed_ids.clear()
        _sealed_ids[node_id] = nid  # checked once per node: the gateway seals an ack per frame
    if not 0 < counter < 2**32:
        raise ValueError("counter must be 1..2^32-1, got %d" % counter)
    if not 0 <= ts < 2**32:
        raise ValueError("timestamp out of range: %d" % ts)
    fl = int(flags)  # plain ints from here: enum operators cost more than the AES (acks are hot)
    if fl & ~_KNOWN_FLAG_BITS:
        raise ValueError("unknown flag bits: %#x" % fl)
    size = 13 + len(nid) + len(payload) + TAG_SIZE
    if size > MAX_FRAME:
        raise ValueError("frame would be %d bytes; the limit is %d" % (size, MAX_FRAME))
    header = bytes((VERSION, int(kind), fl, int(role), len(nid))) + nid + _COUNTER_TS.pack(counter, ts)
    body = header + keys.crypt(nid, DOWN if fl & 1 else UP, counter, payload)
    return body + keys.tag(body)


_sealed_ids: dict = {}  # node id -> its ASCII bytes, once checked against _ID_RE


def parse_header(raw: bytes) -> Header:
    """Check everything that needs no key (sizes, version, enums, id). Raises LinkError."""
    return Header(VERSION, *_parse(raw))


def _parse(raw: bytes) -> tuple:
    """:func:`parse_header` as a tuple (kind, flags, role, node id, counter, ts, payload start):
    open_frame() runs once per frame and a frozen dataclass costs a microsecond to build."""
    n = len(raw)
    if n > MAX_FRAME:
        raise LinkError(Reason.TOO_LARGE, "frame is %d bytes, limit %d" % (n, MAX_FRAME))
    if n == 0:
        raise LinkError(Reason.BAD_LENGTH, "empty frame")
    if raw[0] != VERSION:
        raise LinkError(Reason.BAD_VERSION, "version %d, expected %d" % (raw[0], VERSION))
    if n < MIN_FRAME:
        raise LinkError(Reason.BAD_LENGTH, "frame is %d bytes, minimum %d" % (n, MIN_FRAME))
    id_len = raw[4]
    if not 1 <= id_len <= MAX_ID:
        raise LinkError(Reason.BAD_LENGTH, "id length %d not in 1..%d" % (id_len, MAX_ID))
    if 13 + id_len + TAG_SIZE > n:
        raise LinkError(Reason.BAD_LENGTH, "header and tag overrun a %d-byte frame" % n)
    nid = bytes(raw[5 : 5 + id_len])
    kind = _KINDS.get(raw[1])
    if kind is None:
        raise LinkError(Reason.MALFORMED, "unknown kind %d" % raw[1])
    role = _ROLES.get(raw[3])
    if role is None:
        raise LinkError(Reason.MALFORMED, "unknown role %d" % raw[3])
    flags = _FLAGS.get(raw[2])
    if flags is None:
        raise LinkError(Reason.MALFORMED, "unknown flag bits %#x" % raw[2])
    if not _ID_RE.match(nid):
        raise LinkError(Reason.MALFORMED, "node id %r has characters outside [A-Za-z0-9._-]" % nid)
    counter, ts = _COUNTER_TS.unpack_from(raw, 5 + id_len)
    return kind, flags, role, nid.decode("ascii"), counter, ts, 13 + id_len


def open_frame(
    raw: bytes,
    lookup: KeyLookup,
    window: Optional[Window] = None,
    *,
    direction: int = UP,
    topic_id: Optional[str] = None,
) -> Frame:
    """Verify, replay-check (when ``window`` is given, without updating it) and decrypt a frame.

    ``direction`` is the direction the receiver expects (the gateway receives UP). Call
    ``window.accept(frame.counter)`` once the frame is durably handled.
    Raises :class:`LinkError` with the first failing check's reason.
    """
    raw = bytes(raw)
    kind, flags, role_h, node_id, counter, ts, payload_start = _parse(raw)
    if topic_id is not None and topic_id != node_id:
        raise LinkError(Reason.MALFORMED, "topic names node %r, frame %r" % (topic_id, node_id), node_id=topic_id)
    entry = lookup(node_id)
    if entry is None:
        raise LinkError(Reason.UNKNOWN_NODE, "no key for node %r" % node_id, node_id=node_id, counter=counter)
    keys, role = entry
    if role != role_h:
        raise LinkError(
            Reason.UNKNOWN_NODE,
            "node %r is registered as %s, frame says %s" % (node_id, Role(role).label, role_h.label),
            node_id=node_id,
            counter=counter,
        )
    body, tag = raw[:-TAG_SIZE], raw[-TAG_SIZE:]
    if not hmac.compare_digest(keys.tag(body), tag):
        raise LinkError(Reason.BAD_TAG, "tag does not verify", node_id=node_id, counter=counter)
    allowed = _DIRECTION[kind]
    h_dir = DOWN if raw[2] & 1 else UP  # int ops: the IntFlag operators are slow
    if h_dir != direction or (allowed is not None and allowed != direction):
        raise LinkError(
            Reason.REPLAYED,
            "%s frame in the wrong direction (reflected?)" % kind.label,
            node_id=node_id,
            counter=counter,
        )
    verdict = None
    if window is not None:
        verdict = window.check(counter)
        if verdict is Verdict.REPLAYED:
            raise LinkError(
                Reason.REPLAYED,
                "counter %d is outside the window (last %d)" % (counter, window.last),
                node_id=node_id,
                counter=counter,
            )
    payload = keys.crypt(raw[5 : payload_start - 8], h_dir, counter, body[payload_start:])
    # Built without the frozen dataclass's __init__ (one object.__setattr__ per field):
    # the same object, at half the cost, once per frame received.
    f = _new_frame(Frame)
    f.__dict__.update(kind=kind, flags=flags, role=role_h, node_id=node_id, counter=counter, ts=ts, payload=payload, body=_decode(payload, node_id, counter), verdict=verdict)
    return f


_new_frame = object.__new__
_scan = json.JSONDecoder().scan_once


def _decode(payload: bytes, node_id: str, counter: int) -> dict:
    """decode_body() without a Header; a compact object (what nodes send) is scanned directly,
    anything else (whitespace, errors) goes through json.loads for its exact result or error."""
    if payload[:1] == b"{" and payload[-1:] == b"}":
        try:
            s = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LinkError(Reason.MALFORMED, "payload is not UTF-8 JSON: %s" % exc, node_id=node_id, counter=counter) from None
        try:
            body, end = _scan(s, 0)
        except (StopIteration, ValueError):
            pass
        else:
            if end == len(s):
                return body
    try:
        body = json.loads(payload.decode("utf-8")) if payload else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise LinkError(Reason.MALFORMED, "payload is not UTF-8 JSON: %s" % exc, node_id=node_id, counter=counter) from None
    if not isinstance(body, dict):
        raise LinkError(Reason.MALFORMED, "payload is JSON %s, not an object" % type(body).__name__, node_id=node_id, counter=counter)
    return body


def decode_body(payload: bytes, h: Header) -> dict:
    """The payload as a JSON object; anything else is ``malformed``."""
    return _decode(payload, h.node_id, h.counter)


def encode_body(body: dict) -> bytes:
    """Compact JSON, as the node writes it."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
