"""The one event contract: every source (nodes, cameras, the gateway itself) emits these.

An :class:`Event` is created once, gets its unique ``id`` at creation and keeps it through the
outbox, retries and restarts, so a backend can deduplicate on (``source``, ``id``). The outbox
adds the per-gateway sequence number and the hash chain when it stores the event, and the
uplink publishes it as a CloudEvent (``linli.contract``, docs/events.md).

Each type in :data:`EVENT_TYPES` carries its priority (what the outbox may drop when full), a
JSON Schema for its ``data`` (published as docs/schemas/TYPE.json and in docs/asyncapi.yaml) and
an example that the tests validate and publish.

>>> e = new_event("bin.full", node="bin-0001", data={"fill_pct": 91, "threshold_pct": 85})
>>> e.priority.name, e.type, e.subject, e.source
('ALARM', 'bin.full', 'bin-0001', 'node/bin-0001')
>>> new_event("bin.fulll")
Traceback (most recent call last):
...
linli.events.UnknownEventType: event type 'bin.fulll' is not in the contract (linli.events.EVENT_TYPES)
"""

from __future__ import annotations

import enum
import itertools
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from linli.errors import LinliError


class Priority(enum.IntEnum):
    """What the outbox may drop when full: TELEMETRY first, then NORMAL; ALARM never."""

    TELEMETRY = 0
    NORMAL = 1
    ALARM = 2


@dataclass(frozen=True)
class EventType:
    """One entry of the catalog: ``data`` is the JSON Schema of the event's ``data`` member."""

    name: str
    priority: Priority
    summary: str
    data: dict = field(default_factory=lambda: {"type": "object"}, compare=False, repr=False)
    example: dict = field(default_factory=dict, compare=False, repr=False)


# -- tiny helpers to write the data schemas ----------------------------------------------------
def _num(desc: str, null: bool = False, **kw) -> dict:
    return {"type": ["number", "null"] if null else "number", "description": desc, **kw}


def _int(desc: str, null: bool = False, **kw) -> dict:
    return {"type": ["integer", "null"] if null else "integer", "description": desc, **kw}


def _str(desc: str, null: bool = False, **kw) -> dict:
    return {"type": ["string", "null"] if null else "string", "description": desc, **kw}


def _enum(desc: str, values, null: bool = False) -> dict:
    return {"enum": list(values) + ([None] if null else []), "description": desc}


def _bool(desc: str) -> dict:
    return {"type": "boolean", "description": desc}


def _obj(required, props: dict, extra: bool = True, **kw) -> dict:
    return {"type": "object", "required": list(required), "properties": props, "additionalProperties": extra, **kw}


_EPOCH = "seconds since 1970-01-01 UTC (the gateway's clock)"
_PSEUDONYM = _str("the resident's pseudonym: a keyed hash of the card UID, stable per site (PIPL: the UID never leaves the gateway)", pattern="^[0-9a-f]{16,64}$")
_BOX = {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4, "description": "bounding box [x1, y1, x2, y2] in pixels of the camera frame"}
_CAMERA = _str("camera name from the gateway config")
_TRACK = _int("tracker id of this object on this camera (never reused while the tracker state is kept)")
_SNAPSHOTS = {
    "type": "array",
    "description": "references to JPEG snapshots kept at the gateway, rendered after privacy redaction; each is published once on linli/v1/{site}/{gateway}/snapshots/{id} (images never travel in events)",
    "items": _obj(
        ["id", "kind", "sha256", "bytes"],
        {
            "id": _str("snapshot id: '{event id}-{kind}', the last topic level", pattern="^[A-Za-z0-9._-]{1,96}$"),
            "kind": _enum("'crop': the object's box with a margin; 'frame': the whole frame scaled down with the box drawn", ("crop", "frame")),
            "sha256": _str("SHA-256 of the JPEG bytes (hex)", pattern="^[0-9a-f]{64}$"),
            "bytes": _int("size of the JPEG", minimum=1),
            "width": _int("JPEG width, px", minimum=1),
            "height": _int("JPEG height, px", minimum=1),
        },
    ),
}
_REDACTED = _obj(
    ["faces", "people", "masks"],
    {"faces": _int("faces found and blurred in the snapshot frame", minimum=0), "people": _int("people found and blurred", minimum=0), "masks": _int("privacy masks blacked out", minimum=0)},
    description="what privacy redaction removed from the snapshots' frame (PIPL: no face or person leaves the gateway recognisable)",
)
_FW = _str("firmware version string")
_BAT_V = _num("battery voltage, V")


def _camera(required, **extra) -> dict:
    props = {"camera": _CAMERA, "track_id": _TRACK, "box": _BOX, "score": _num("detector confidence 0..1", minimum=0, maximum=1), "dwell_s": _num("seconds since the object was first seen (to its last sighting on cleared events)", minimum=0), "snapshots": _SNAPSHOTS, "redacted": _REDACTED}
    props.update(extra)
    return _obj(["camera", "track_id"] + list(required), props)


_T, _N, _A = Priority.TELEMETRY, Priority.NORMAL, Priority.ALARM

# The catalog. Keep sorted by area. Each data schema requires what a backend relies on and
# allows more (additionalProperties), so adding a field is never a breaking change.
EVENT_TYPES: dict[str, EventType] = {
    t.name: t
    for t in [
        EventType(
            "bin.full", _A, "A bin's fill level crossed the full threshold (with hysteresis).",
            _obj(["fill_pct", "threshold_pct"], {"fill_pct": _num("fill level, % of the bin's depth"), "threshold_pct": _num("the configured full threshold, %"), "depth_cm": _num("the bin's usable depth, cm", True)}),
            {"fill_pct": 91, "threshold_pct": 85.0, "depth_cm": 110},
        ),
        EventType(
            "bin.emptied", _N, "A full bin dropped below the empty threshold: it was emptied.",
            _obj(["fill_pct"], {"fill_pct": _num("fill level after emptying, %"), "threshold_pct": _num("the configured empty threshold, %")}),
            {"fill_pct": 6, "threshold_pct": 40.0},
        ),
        EventType(
            "bin.overflow", _A, "A bin node reports refuse above the rim (range sensor).",
            _obj(["fill_pct"], {"fill_pct": _num("fill level, % (>= the overflow threshold)"), "source": _str("what saw it: 'sensor'")}),
            {"fill_pct": 104, "source": "sensor"},
        ),
        EventType(
            "bin.fire_risk", _A, "A bin's temperature is over the limit or rising too fast.",
            _obj(["temp_c"], {"temp_c": _num("temperature inside the bin, degC"), "rise_c_per_min": _num("rate of rise, degC per minute", True), "threshold_c": _num("the configured limit, degC")}),
            {"temp_c": 63.5, "rise_c_per_min": 4.2, "threshold_c": 60.0},
        ),
        EventType(
            "bin.tipped", _A, "A bin's tilt says it has been knocked over.",
            _obj(["tilt_deg"], {"tilt_deg": _num("tilt from upright, degrees")}),
            {"tilt_deg": 78},
        ),
        EventType(
            "bin.deposit", _N, "A resident deposited sorted waste: pseudonymous resident, weight, points.",
            _obj(["resident", "weight_g", "category", "points"], {"resident": _PSEUDONYM, "weight_g": _num("net weight, g"), "category": _enum("waste category", ("kitchen", "recyclable", "hazardous", "other")), "points": _num("points credited (0 for 'other')", minimum=0)}),
            {"resident": "3f9a0c4e5b6d7a81", "weight_g": 1250, "category": "recyclable", "points": 12.5},
        ),
        EventType(
            "bin.battery_low", _N, "A bin node's battery is low.",
            _obj(["bat_v"], {"bat_v": _BAT_V, "threshold_v": _num("the configured low threshold, V")}),
            {"bat_v": 3.38, "threshold_v": 3.45},
        ),
        EventType(
            "streetlight.lamp_fault", _A, "A lamp is commanded on but its current is too low or too high.",
            _obj(["fault"], {"fault": _enum("open circuit, short circuit, current too low or too high", ("open", "short", "low", "high")), "current_ma": _num("measured lamp current, mA", True), "level_pct": _num("commanded lamp level, %", True)}),
            {"fault": "open", "current_ma": 3, "level_pct": 80},
        ),
        EventType(
            "streetlight.battery_low", _N, "A streetlight's battery protection dimmed or switched off the lamp.",
            _obj(["bat_v", "action"], {"bat_v": _BAT_V, "action": _str("what the node did: 'dim' or 'off'"), "threshold_v": _num("the configured low threshold, V")}),
            {"bat_v": 11.4, "action": "dim"},
        ),
        EventType(
            "streetlight.energy_daily", _T, "A streetlight's daily energy: harvested, used, hours lit.",
            _obj(["day"], {"day": _str("local date YYYY-MM-DD", pattern="^[0-9]{4}-[0-9]{2}-[0-9]{2}$"), "wh_pv": _num("energy harvested by the panel, Wh", True), "wh_lamp": _num("energy used by the lamp, Wh", True), "hours_lit": _num("hours the lamp was on", True)}),
            {"day": "2025-11-27", "wh_pv": 212.5, "wh_lamp": 148.0, "hours_lit": 11.2},
        ),
        EventType(
            "petscan.scan", _N, "A pet tag was scanned; the answer shown (green/yellow/red).",
            _obj(["tag", "status"], {"tag": _str("the pet's registry id (null when the tag did not verify)", True), "status": _enum("the answer shown at the scanner", ("green", "yellow", "red", "unknown")), "reason": _str("why this answer (e.g. 'registered', 'no registry')", True), "offline": _bool("answered from the gateway's cached registry while the backend was unreachable")}),
            {"tag": "7Q2M9XKD", "status": "green", "reason": "registered"},
        ),
        EventType(
            "petscan.fouling", _N, "A resident reported dog fouling at a scanner.",
            _obj([], {"location": _str("where: the scanner's node id"), "tag_reported": _bool("a tag was scanned with the report")}),
            {"location": "pet-0003", "tag_reported": False},
        ),
        EventType(
            "node.telemetry", _T, "A node's latest readings (changed values only).",
            _obj(["readings"], {"role": _str("the node's role: bin, streetlight, petscan"), "readings": {"type": "object", "description": "reading name -> value (number or string), as the node sent it", "additionalProperties": {"type": ["number", "string", "null"]}}}),
            {"role": "bin", "readings": {"fill": 42, "temp": 21.5, "depth": 110}},
        ),
        EventType(
            "node.online", _N, "A node came (back) online.",
            _obj([], {"last_seen": _num("when the node was last heard, " + _EPOCH, True)}),
            {"last_seen": 1764300000.0},
        ),
        EventType(
            "node.offline", _A, "A node is silent past its expected report (sleep-aware).",
            _obj(["last_seen", "reason"], {"last_seen": _num("when the node was last heard, " + _EPOCH, True), "expected_by": _num("when it should have reported at the latest, " + _EPOCH, True), "reason": _str("why it is considered offline, e.g. 'missed heartbeats'")}),
            {"last_seen": 1764300000.0, "expected_by": 1764300400.0, "reason": "asleep past its wake time"},
        ),
        EventType(
            "node.rebooted", _N, "A node booted: firmware version and reset cause.",
            _obj(["fw"], {"fw": _FW, "reset_cause": _str("reset cause as the node reports it", True), "boot_count": _int("boots since the counter was last cleared"), "safe_mode": _bool("the node booted into safe mode")}),
            {"fw": "1.2.0", "reset_cause": "wdt", "boot_count": 17, "safe_mode": False},
        ),
        EventType(
            "node.safe_mode", _A, "A node entered safe mode after repeated crash-boots.",
            _obj(["fw"], {"fw": _FW, "reset_cause": _str("last reset cause", True), "boot_count": _int("boots since the counter was last cleared")}),
            {"fw": "1.2.0", "reset_cause": "panic", "boot_count": 5},
        ),
        EventType(
            "node.health", _T, "A node's periodic health report (heap, uptime, queue, RSSI, battery).",
            _obj([], {"heap": _num("free heap, bytes"), "up": _num("uptime, s"), "q": _num("frames waiting in the node's flash queue"), "drop": _num("frames the node dropped from its queue"), "rssi": _num("Wi-Fi or radio RSSI, dBm")}),
            {"heap": 81234, "up": 86400, "q": 0, "rssi": -67},
        ),
        EventType(
            "node.rejected", _N, "Frames from a node were rejected (reason counts).",
            _obj(["counts"], {"counts": {"type": "object", "description": "reason label (bad_tag, replayed, ...) -> frames rejected since the last report", "additionalProperties": {"type": "integer"}}}),
            {"counts": {"bad_tag": 3, "replayed": 1}},
        ),
        EventType(
            "command.result", _N, "A node executed (or refused) a backend command.",
            _obj(["command_id", "ok"], {"command_id": _str("the backend's command id (null if the gateway no longer knows it)", True), "op": _str("the command's operation", True), "ok": _bool("the node executed it"), "result": {"description": "what the node answered (op-specific)"}, "error": _str("why it failed, when ok is false", True)}),
            {"command_id": "c-20251128-0042", "op": "lamp.set", "ok": True, "result": {"level": 60}},
        ),
        EventType(
            "command.timeout", _N, "A command was not executed before its deadline.",
            _obj(["command_id"], {"command_id": _str("the backend's command id"), "op": _str("the command's operation", True), "deadline": _num("its deadline, " + _EPOCH, True)}),
            {"command_id": "c-20251128-0043", "op": "lamp.set", "deadline": 1764386400.0},
        ),
        EventType(
            "garbage.pile.detected", _A, "A garbage pile was confirmed on a camera.",
            _camera(["box", "score"]),
            {"camera": "gate-north", "track_id": 12, "box": [412, 310, 590, 455], "score": 0.83, "dwell_s": 30.0, "snapshots": [{"id": "9f1b6c2e0d7a4b3c8e5f1a2b3c4d5e6f-crop", "kind": "crop", "sha256": "5e" * 32, "bytes": 18342, "width": 268, "height": 218}, {"id": "9f1b6c2e0d7a4b3c8e5f1a2b3c4d5e6f-frame", "kind": "frame", "sha256": "a7" * 32, "bytes": 61210, "width": 640, "height": 360}], "redacted": {"faces": 1, "people": 0, "masks": 2}},
        ),
        EventType(
            "garbage.pile.updated", _N, "A confirmed pile grew or shrank markedly.",
            _camera(["box"]),
            {"camera": "gate-north", "track_id": 12, "box": [400, 300, 640, 470], "score": 0.88, "dwell_s": 600.0},
        ),
        EventType(
            "garbage.pile.cleared", _N, "A pile is gone; carries its dwell time.",
            _camera(["dwell_s"]),
            {"camera": "gate-north", "track_id": 12, "dwell_s": 5400.0},
        ),
        EventType(
            "bin.overflow.detected", _A, "A camera confirmed an overflowing bin.",
            _camera(["box", "score"], bin=_str("the bin's node id when the camera view maps to one", True)),
            {"camera": "yard-2", "track_id": 3, "box": [120, 80, 260, 300], "score": 0.77, "dwell_s": 20.0, "bin": "bin-0007"},
        ),
        EventType(
            "bin.overflow.cleared", _N, "A camera sees the overflowing bin cleared; carries its dwell time.",
            _camera(["dwell_s"], bin=_str("the bin's node id when known", True)),
            {"camera": "yard-2", "track_id": 3, "dwell_s": 3600.0},
        ),
        EventType(
            "camera.degraded", _A, "A camera gives no frames (unreachable, watchdog timeout); the gateway keeps reconnecting.",
            _obj(["camera", "reason", "since"], {"camera": _CAMERA, "reason": _str("the last error, e.g. 'snapshot http://...: connection refused'"), "since": _num("when it was first seen degraded, " + _EPOCH)}),
            {"camera": "gate-north", "reason": "no frame within 30 s", "since": 1764300000.0},
        ),
        EventType(
            "camera.recovered", _N, "A degraded camera gives frames again.",
            _obj(["camera", "down_s"], {"camera": _CAMERA, "down_s": _num("seconds it was degraded", minimum=0)}),
            {"camera": "gate-north", "down_s": 184.5},
        ),
        EventType(
            "vision.model_failed", _A, "The detection model could not be loaded; cameras run without detection.",
            _obj(["model", "error"], {"model": _str("path of the model file on the gateway"), "error": _str("why it failed (missing, checksum mismatch, not a loadable ONNX model, ...)")}),
            {"model": "/opt/linli/models/garbage-det-320.int8.onnx", "error": "not a loadable ONNX model: INVALID_PROTOBUF"},
        ),
        EventType(
            "gateway.outbox.dropped", _A, "The outbox was full and dropped events (counts by type).",
            _obj(
                ["count", "by_type", "ranges"],
                {
                    "count": _int("events dropped since the previous report", minimum=1),
                    "by_type": {"type": "object", "description": "event type -> events of that type dropped", "additionalProperties": {"type": "integer"}},
                    "ranges": {
                        "type": "array",
                        "description": "the dropped sequence numbers as runs, with the chain hashes at their edges so a verifier can bridge the gap",
                        "items": _obj(["first", "last", "prevhash", "hash"], {"first": _int("first dropped seq of the run"), "last": _int("last dropped seq of the run"), "prevhash": _str("prevhash of the event at `first`"), "hash": _str("hash of the event at `last`")}, False),
                    },
                    "max_events": _int("the configured bound (events)"),
                    "max_bytes": _int("the configured bound (bytes of payload)"),
                },
            ),
            {"count": 2, "by_type": {"node.telemetry": 2}, "ranges": [{"first": 40, "last": 41, "prevhash": "ab" * 32, "hash": "cd" * 32}], "max_events": 200000, "max_bytes": 268435456},
        ),
        EventType(
            "gateway.started", _N, "The gateway started (version, config digest).",
            _obj(["version"], {"version": _str("linli version"), "config_digest": _str("sha256 of the effective config (secrets excluded)", True)}),
            {"version": "0.1.0", "config_digest": "9b1c" * 16},
        ),
    ]
}


class UnknownEventType(LinliError, ValueError):
    """An event type that is not in EVENT_TYPES (every type must be in the contract)."""


class InvalidEventData(LinliError, ValueError):
    """An event's ``data`` cannot travel as JSON (NaN, a non-string key, an object)."""


@dataclass
class Event:
    """One event before the outbox numbers and chains it."""

    type: str
    source: str
    subject: Optional[str]
    data: dict[str, Any]
    id: str = field(default_factory=lambda: next_id())
    time: float = field(default_factory=time.time)

    @property
    def priority(self) -> Priority:
        return EVENT_TYPES[self.type].priority


_ID_PREFIX = uuid.uuid4().hex[:20]
_ID_COUNTER = itertools.count(int(time.time() * 1000) & 0xFFFFFFFFFFF)


def next_id() -> str:
    """A unique event id: 80 random bits per process + a 48-bit counter (32 hex chars, like a
    UUID's hex). Cheaper than uuid4(), whose os.urandom() call dominated ingest profiles."""
    return "%s%012x" % (_ID_PREFIX, next(_ID_COUNTER) & 0xFFFFFFFFFFFF)


_SOURCE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def new_event(type: str, *, node: Optional[str] = None, data: Optional[dict] = None, source: Optional[str] = None, at: Optional[float] = None) -> Event:
    """Create an event of a known type. ``source`` defaults to ``node/ID`` (or ``gateway``).

    ``data`` must be JSON (finite numbers, string keys); a camera passes e.g.
    ``source="camera/gate-north"``. The CloudEvents ``source`` becomes
    ``/linli/{site}/{gateway}/{source}``.

    >>> new_event("garbage.pile.cleared", source="camera/gate-north", data={"camera": "gate-north", "track_id": 1, "dwell_s": 60}).source
    'camera/gate-north'
    >>> new_event("node.health", node="b1", data={"heap": float("nan")})
    Traceback (most recent call last):
    ...
    linli.events.InvalidEventData: node.health: data.heap: NaN and infinities are not JSON
    """
    if type not in EVENT_TYPES:
        raise UnknownEventType("event type %r is not in the contract (linli.events.EVENT_TYPES)" % type)
    src = source or ("node/%s" % node if node else "gateway")
    if src not in _good_sources:  # a node's source is checked once, not once per event
        if not _SOURCE.match(src):
            raise InvalidEventData("%s: source %r must be path segments of A-Z a-z 0-9 . _ - joined by '/'" % (type, src))
        if len(_good_sources) > 10000:
            _good_sources.clear()
        _good_sources.add(src)
    d = dict(data or {})
    if not _plain_json(d):  # the careful check names the bad member (or finds it fine after all)
        check_json(d, "data", type)
    return Event(type, src, node, d, next_id(), time.time() if at is None else at)


_good_sources: set = set()
_isfinite = math.isfinite


def _plain_json(value: Any) -> bool:
    """True for JSON made of exact dict/list/str/int/bool/None/finite float (no path strings
    built on the way, as check_json() must for its messages); False means: ask check_json()."""
    t = value.__class__
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return _isfinite(value)
    if t is dict:
        for k, v in value.items():
            if k.__class__ is not str or not _plain_json(v):
                return False
        return True
    if t is list:
        for v in value:
            if not _plain_json(v):
                return False
        return True
    return False


def check_json(value: Any, path: str = "data", what: str = "event") -> None:
    """Raise :class:`InvalidEventData` naming the path if ``value`` is not plain JSON."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEventData("%s: %s: NaN and infinities are not JSON" % (what, path))
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidEventData("%s: %s: key %r is not a string" % (what, path, k))
            check_json(v, "%s.%s" % (path, k), what)
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_json(v, "%s[%d]" % (path, i), what)
        return
    raise InvalidEventData("%s: %s: %s is not JSON" % (what, path, value.__class__.__name__))
