"""Pile lifecycle tracker: detections of sampled frames in, lifecycle events out (issue 6, item 3).

Pure logic (no camera, no model, no I/O). One :class:`CameraTracker` per camera takes each sampled
frame's detections (already filtered by zones and thresholds upstream) and follows every object
from its first sighting until it is gone:

* detections of the same object are associated across samples by IoU, with a fallback on the
  centre distance relative to the box size (a moving camera's jitter), per label;
* a track is confirmed once seen in ``confirm_hits`` of its last ``confirm_window`` samples and at
  least ``confirm_min_s`` after its first sighting, so a person walking by with a bag (one or two
  samples) never produces an event;
* a confirmed ``garbage`` track emits ``garbage.pile.detected`` once, ``garbage.pile.updated``
  when its box area grows or shrinks markedly, and ``garbage.pile.cleared`` when it has been
  missing for ``clear_misses`` consecutive samples *and* ``clear_min_s`` seconds (a few detector
  misses never close it). ``overflow`` tracks do the same as ``bin.overflow.detected/cleared``,
  with ``bin`` = the node id whose configured region holds the box.

``dwell_s`` is always counted from the track's **first sighting** (the first sample it was
seen in, before confirmation). On ``detected`` and ``updated`` it runs to the sample's time; on
``cleared`` it runs to the **last sample the object was seen in**, not to the clear decision
(which comes ``clear_min_s`` later): the pile was removed between that sample and the next, so
"cleared in 15 minutes" is first sighting -> last sighting, at most one sample interval short.
Events also carry ``first_seen`` (and ``last_seen`` on ``cleared``), epoch seconds.

Every sample counts, including frames with no detection: call :meth:`CameraTracker.update` with
an empty list then. A camera that delivers no frames never clears anything (absence is only
ever *seen*). :meth:`~CameraTracker.to_state` / :meth:`~CameraTracker.from_state` carry the
tracks and the id counter across a gateway restart, so no second ``detected`` follows a reboot
and track ids are never reused.

>>> trk = CameraTracker("gate-north")
>>> pile = {"label": "garbage", "score": 0.8, "box": (400, 300, 560, 440)}
>>> [e.type for t in range(0, 30, 5) for e in trk.update(t, [pile])]
['garbage.pile.detected']
>>> trk.update(30, [])        # a detector miss is not a clearance
[]
>>> state = trk.to_state()    # JSON-able; save it, restart, and go on from it
>>> trk = CameraTracker.from_state(state)
>>> evs = [e for t in range(35, 200, 5) for e in trk.update(t, [])]
>>> [(e.type, e.data["track_id"], e.data["dwell_s"]) for e in evs]
[('garbage.pile.cleared', 1, 25.0)]
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping, Optional

from linli.errors import ConfigError, LinliError
from linli.events import Event, new_event

PILE = "pile"
OVERFLOW = "overflow"
# lifecycle -> (detected, updated, cleared) event types; the catalog has no bin.overflow.updated.
EVENT_TYPES = {
    PILE: ("garbage.pile.detected", "garbage.pile.updated", "garbage.pile.cleared"),
    OVERFLOW: ("bin.overflow.detected", None, "bin.overflow.cleared"),
}
STATE_VERSION = 1
_CAMERA = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_NODE = re.compile(r"^[A-Za-z0-9._-]{1,16}$")  # as linli.config checks node ids
# The centre-distance fallback only pairs boxes of comparable size: a bag beside a large pile
# must not take over the pile's track (and its box).
_FALLBACK_AREA_RATIO = 4.0
# A box lying mostly (this share of its area) inside another is the same object: a pile that grew
# a lot between two samples, or a detector's second, partial box of one large pile.
_CONTAINED = 0.7

Box = tuple[float, float, float, float]


class TrackerStateError(LinliError, ValueError):
    """A saved tracker state cannot be restored (other version or camera, malformed). Start a
    fresh tracker (``first_id`` above the last published track id) if the state is lost."""


def _default_labels() -> dict[str, str]:
    return {"garbage": PILE, "overflow": OVERFLOW}


@dataclass(frozen=True)
class TrackerConfig:
    """Tracking settings of one camera; checked at creation, errors name the key.

    ``labels`` maps a detector label to its lifecycle (``"pile"`` or ``"overflow"``); other labels
    (``garbage_bin`` by default) are ignored. ``bins`` maps a bin's node id to its region in the
    camera's frame: a rect ``[x1, y1, x2, y2]`` or a polygon ``[[x, y], ...]``. An overflow box
    goes to the region holding its centre (the nearest centroid if several do), else to the
    nearest region its box overlaps, else to no bin (``bin: null``).

    >>> TrackerConfig(confirm_hits=3, confirm_window=5).confirm_min_s
    20.0
    >>> TrackerConfig.from_dict({"confirm_hits": 6}, key="cameras.gate-north.tracker")
    Traceback (most recent call last):
    ...
    linli.errors.ConfigError: camera: cameras.gate-north.tracker.confirm_window: must be >= confirm_hits (6), got 5
    """

    confirm_hits: int = 3  # K: seen in K ...
    confirm_window: int = 5  # M: ... of the last M samples ...
    confirm_min_s: float = 20.0  # T: ... and at least T seconds after the first sighting
    clear_misses: int = 5  # N consecutive samples without it ...
    clear_min_s: float = 60.0  # ... and at least C seconds since it was last seen
    iou_min: float = 0.3
    centre_tol: float = 0.5  # centre distance / box size; 0 turns the fallback off
    update_ratio: float = 0.5  # area vs the last reported: >= 1 + r or <= 1 - r
    update_hits: int = 2  # consecutive sightings the change must hold
    update_min_s: float = 60.0  # between two reports (detected/updated) of a track
    max_tracks: int = 64  # per camera; new detections beyond it are ignored
    labels: Mapping[str, str] = field(default_factory=_default_labels)
    bins: Mapping[str, Any] = field(default_factory=dict)
    key: str = "tracker"  # the config section, for error messages

    def __post_init__(self):
        def bad(name, msg):
            raise ConfigError("camera", "%s.%s" % (self.key, name), msg)

        def integer(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                bad(name, "must be an integer >= %d, got %r" % (lo, v))

        def number(name, lo, hi=math.inf, lo_open=False, hi_open=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
                span = "%s%g..%s%s" % ("(" if lo_open else "", lo, "" if hi == math.inf else "%g" % hi, ")" if hi_open else "")
                bad(name, "must be a number in %s, got %r" % (span, v))
            object.__setattr__(self, name, float(v))

        for name in ("confirm_hits", "confirm_window", "clear_misses", "update_hits", "max_tracks"):
            integer(name, 1)
        if self.confirm_window < self.confirm_hits:
            bad("confirm_window", "must be >= confirm_hits (%d), got %d" % (self.confirm_hits, self.confirm_window))
        for name in ("confirm_min_s", "clear_min_s", "update_min_s", "centre_tol"):
            number(name, 0)
        number("iou_min", 0, 1, lo_open=True)
        number("update_ratio", 0, 1, lo_open=True, hi_open=True)
        if not isinstance(self.labels, Mapping):
            bad("labels", "must be a table of detector label -> 'pile' or 'overflow'")
        for label, kind in self.labels.items():
            if not isinstance(label, str) or not label:
                bad("labels", "labels must be non-empty strings, got %r" % (label,))
            if kind not in EVENT_TYPES:
                bad("labels.%s" % label, "must be 'pile' or 'overflow', got %r" % (kind,))
        if not isinstance(self.bins, Mapping):
            bad("bins", "must be a table of bin node id -> [x1, y1, x2, y2] or [[x, y], ...]")
        regions = {}
        for node, region in self.bins.items():
            if not isinstance(node, str) or not _NODE.match(node):
                bad("bins", "%r is not a valid node id (1-16 chars of A-Z a-z 0-9 . _ -)" % (node,))
            poly = _region(region)
            if poly is None:
                bad("bins.%s" % node, "must be a rect [x1, y1, x2, y2] (x2 > x1, y2 > y1) or a polygon of >= 3 [x, y] points, got %r" % (region,))
            regions[node] = poly
        object.__setattr__(self, "labels", dict(self.labels))
        object.__setattr__(self, "bins", regions)

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], key: str = "tracker") -> "TrackerConfig":
        """From a config table (e.g. ``[cameras.NAME.tracker]``); unknown keys are errors."""
        if not isinstance(table, Mapping):
            raise ConfigError("camera", key, "must be a table")
        known = {f.name for f in fields(cls)} - {"key"}
        for name in sorted(table):
            if name not in known:
                raise ConfigError("camera", "%s.%s" % (key, name), "unknown key (known: %s)" % ", ".join(sorted(known)))
        return cls(**dict(table), key=key)


def _num(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _region(region) -> Optional[tuple[tuple[float, float], ...]]:
    """A rect or polygon as a tuple of (x, y) vertices, or None if it is neither."""
    if not isinstance(region, (list, tuple)):
        return None
    if len(region) == 4 and all(_num(v) for v in region):
        x1, y1, x2, y2 = (float(v) for v in region)
        return ((x1, y1), (x2, y1), (x2, y2), (x1, y2)) if x2 > x1 and y2 > y1 else None
    if len(region) >= 3 and all(isinstance(p, (list, tuple)) and len(p) == 2 and all(_num(v) for v in p) for p in region):
        return tuple((float(x), float(y)) for x, y in region)
    return None


def _area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _centre(b: Box) -> tuple[float, float]:
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes.

    >>> iou((0, 0, 10, 10), (5, 0, 15, 10))
    0.3333333333333333
    """
    inter = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _covered(a: Box, b: Box) -> float:
    """Share of the smaller box's area that lies inside the other box."""
    inter = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    return inter / min(_area(a), _area(b))


def _inside(p: tuple[float, float], poly) -> bool:
    """Point in polygon (even-odd rule)."""
    x, y = p
    hit = False
    for (x1, y1), (x2, y2) in zip(poly, poly[1:] + poly[:1]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            hit = not hit
    return hit


def _box_ok(box) -> bool:
    return isinstance(box, (list, tuple)) and len(box) == 4 and all(_num(v) for v in box) \
        and box[2] > box[0] and box[3] > box[1]


def _detection(d) -> tuple[str, float, Box]:
    """(label, score, box) of a :class:`linli.detector.Detection` or a dict with those keys."""
    if isinstance(d, Mapping):
        label, score, box = d.get("label"), d.get("score"), d.get("box")
    else:
        label, score, box = getattr(d, "label", None), getattr(d, "score", None), getattr(d, "box", None)
    if not isinstance(label, str) or not _num(score):
        raise ValueError("detection needs a string label and a numeric score, got %r" % (d,))
    if not _box_ok(box):
        raise ValueError("detection box must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1, got %r" % (box,))
    return label, min(1.0, max(0.0, float(score))), tuple(float(v) for v in box)


@dataclass
class _Track:
    id: int
    label: str
    kind: str
    box: Box  # as last seen
    score: float
    first_seen: float
    last_seen: float
    hits: deque  # seen (True) or not in each of its last confirm_window samples
    misses: int = 0  # consecutive samples without it
    confirmed: bool = False
    reported_box: Optional[Box] = None  # box of the last detected/updated event
    reported_t: Optional[float] = None
    pending: int = 0  # consecutive sightings whose area differs markedly from reported_box
    bin: Optional[str] = None

    def state(self) -> dict:
        return {
            "id": self.id, "label": self.label, "kind": self.kind, "box": list(self.box), "score": self.score,
            "first_seen": self.first_seen, "last_seen": self.last_seen, "hits": [int(h) for h in self.hits],
            "misses": self.misses, "confirmed": self.confirmed,
            "reported_box": list(self.reported_box) if self.reported_box else None, "reported_t": self.reported_t,
            "pending": self.pending, "bin": self.bin,
        }


class CameraTracker:
    """Follows the piles and overflowing bins of one camera; see the module's docstring.

    ``first_id`` is the first track id of a fresh tracker (restored ones continue their counter).

    >>> trk = CameraTracker("yard-2", TrackerConfig(bins={"bin-0007": [100, 80, 300, 320]}))
    >>> over = {"label": "overflow", "score": 0.77, "box": (120, 80, 260, 300)}
    >>> [(e.type, e.data["bin"]) for t in range(0, 30, 5) for e in trk.update(t, [over])]
    [('bin.overflow.detected', 'bin-0007')]
    """

    def __init__(self, camera: str, config: Optional[TrackerConfig] = None, *, first_id: int = 1):
        if not isinstance(camera, str) or not _CAMERA.match(camera):
            raise ValueError("camera name %r must be 1-64 chars of A-Z a-z 0-9 . _ -" % (camera,))
        if isinstance(first_id, bool) or not isinstance(first_id, int) or first_id < 0:
            raise ValueError("first_id must be an integer >= 0, got %r" % (first_id,))
        self.camera = camera
        self.config = config if config is not None else TrackerConfig()
        self._source = "camera/%s" % camera
        self._next_id = first_id
        self._last_t: Optional[float] = None
        self._tracks: list[_Track] = []

    # -- the one entry point ---------------------------------------------------------------------
    def update(self, t: float, detections: Iterable = ()) -> list[Event]:
        """Take one sampled frame: its time ``t`` (epoch seconds) and its detections (objects
        with ``label``, ``score``, ``box`` such as :class:`linli.detector.Detection`, or dicts).
        Returns the lifecycle events this sample caused (usually none), in track id order.

        A ``t`` earlier than the previous sample's (a clock stepped back) counts as that time.
        """
        if not _num(t):
            raise ValueError("sample time must be a finite number, got %r" % (t,))
        t = float(t)
        if self._last_t is not None and t < self._last_t:
            t = self._last_t
        self._last_t = t
        cfg = self.config
        by_label: dict[str, list] = {}
        for d in detections:
            label, score, box = _detection(d)
            if label in cfg.labels:
                by_label.setdefault(label, []).append((label, score, box))
        seen: dict[int, tuple] = {}
        for label in sorted(by_label):
            dets = by_label[label]
            tracks = [tr for tr in self._tracks if tr.label == label]
            taken = set()
            for tid, j in self._associate(tracks, dets):
                seen[tid] = dets[j]
                taken.add(j)
            # New tracks, largest box first: a box mostly inside a followed one is part of it.
            for j in sorted(set(range(len(dets))) - taken, key=lambda j: (-_area(dets[j][2]), j)):
                det = dets[j]
                if len(self._tracks) >= cfg.max_tracks or any(_covered(tr.box, det[2]) >= _CONTAINED for tr in tracks):
                    continue
                tr = _Track(self._next_id, label, cfg.labels[label], det[2], det[1], t, t, deque(maxlen=cfg.confirm_window))
                self._next_id += 1
                self._tracks.append(tr)
                tracks.append(tr)
                seen[tr.id] = det
        events: list[Event] = []
        keep = []
        for tr in self._tracks:
            alive = self._seen(tr, seen[tr.id], t, events) if tr.id in seen else self._missed(tr, t, events)
            if alive:
                keep.append(tr)
        self._tracks = keep
        return events

    # -- association -------------------------------------------------------------------------------
    def _associate(self, tracks: list[_Track], dets: list[tuple]) -> list[tuple[int, int]]:
        """Greedy one-to-one pairs (track id, detection index): IoU matches first, best first,
        then centre-distance matches, nearest first, then one box mostly inside the other."""
        cfg = self.config
        cands = []
        for tr in tracks:
            for j, (_, _, box) in enumerate(dets):
                o = iou(tr.box, box)
                if o >= cfg.iou_min:
                    cands.append((0, -o, tr.id, j))
                    continue
                a1, a2 = _area(tr.box), _area(box)
                if cfg.centre_tol > 0 and max(a1, a2) <= _FALLBACK_AREA_RATIO * min(a1, a2):
                    (x1, y1), (x2, y2) = _centre(tr.box), _centre(box)
                    rel = math.hypot(x2 - x1, y2 - y1) / (a1 * a2) ** 0.25  # size: geometric mean of sqrt(area)
                    if rel <= cfg.centre_tol:
                        cands.append((1, rel, tr.id, j))
                        continue
                c = _covered(tr.box, box)
                if c >= _CONTAINED:
                    cands.append((2, -c, tr.id, j))
        pairs, used_t, used_d = [], set(), set()
        for _, _, tid, j in sorted(cands):
            if tid not in used_t and j not in used_d:
                used_t.add(tid)
                used_d.add(j)
                pairs.append((tid, j))
        return pairs

    # -- lifecycle ---------------------------------------------------------------------------------
    def _seen(self, tr: _Track, det: tuple, t: float, events: list) -> bool:
        cfg = self.config
        tr.hits.append(True)
        tr.misses = 0
        tr.score, tr.box, tr.last_seen = det[1], det[2], t
        detected, updated, _ = EVENT_TYPES[tr.kind]
        if not tr.confirmed:
            if sum(tr.hits) >= cfg.confirm_hits and t - tr.first_seen >= cfg.confirm_min_s:
                tr.confirmed = True
                tr.reported_box, tr.reported_t = tr.box, t
                if tr.kind == OVERFLOW:
                    tr.bin = self.bin_for(tr.box)
                events.append(self._event(detected, tr, t, t))
            return True
        if updated is None:
            return True
        ratio = _area(tr.box) / _area(tr.reported_box)
        tr.pending = tr.pending + 1 if (ratio >= 1 + cfg.update_ratio or ratio <= 1 - cfg.update_ratio) else 0
        if tr.pending >= cfg.update_hits and t - tr.reported_t >= cfg.update_min_s:
            tr.reported_box, tr.reported_t, tr.pending = tr.box, t, 0
            events.append(self._event(updated, tr, t, t))
        return True

    def _missed(self, tr: _Track, t: float, events: list) -> bool:
        cfg = self.config
        tr.hits.append(False)
        tr.misses += 1
        tr.pending = 0
        if not tr.confirmed:
            return any(tr.hits)  # a tentative track lives while seen in its window
        if tr.misses >= cfg.clear_misses and t - tr.last_seen >= cfg.clear_min_s:
            ev = self._event(EVENT_TYPES[tr.kind][2], tr, t, tr.last_seen)
            ev.data["last_seen"] = tr.last_seen
            events.append(ev)
            return False
        return True

    def _event(self, type_: str, tr: _Track, t: float, until: float) -> Event:
        data = {
            "camera": self.camera, "track_id": tr.id, "box": [round(v, 1) for v in tr.box],
            "score": round(tr.score, 4), "dwell_s": round(max(0.0, until - tr.first_seen), 3),
            "first_seen": tr.first_seen,
        }
        if tr.kind == OVERFLOW:
            data["bin"] = tr.bin
        return new_event(type_, source=self._source, data=data, at=t)

    def bin_for(self, box: Box) -> Optional[str]:
        """The node id of the bin region this box belongs to, or None (see :class:`TrackerConfig`)."""
        c = _centre(box)

        def dist(poly):
            cx = sum(p[0] for p in poly) / len(poly)
            cy = sum(p[1] for p in poly) / len(poly)
            return math.hypot(cx - c[0], cy - c[1])

        regions = self.config.bins
        inside = sorted((dist(poly), node) for node, poly in regions.items() if _inside(c, poly))
        if inside:
            return inside[0][1]
        near = sorted(
            (dist(poly), node) for node, poly in regions.items()
            if box[0] < max(p[0] for p in poly) and box[2] > min(p[0] for p in poly)
            and box[1] < max(p[1] for p in poly) and box[3] > min(p[1] for p in poly)
        )
        return near[0][1] if near else None

    # -- introspection and restarts ----------------------------------------------------------------
    @property
    def confirmed(self) -> int:
        """How many confirmed objects this camera currently follows (for health and metrics)."""
        return sum(tr.confirmed for tr in self._tracks)

    def to_state(self) -> dict:
        """Everything needed to go on after a restart, as plain JSON (no config: pass it again)."""
        return {
            "version": STATE_VERSION, "camera": self.camera, "next_id": self._next_id, "last_t": self._last_t,
            "tracks": [tr.state() for tr in self._tracks],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], config: Optional[TrackerConfig] = None, *, camera: Optional[str] = None) -> "CameraTracker":
        """A tracker that goes on from :meth:`to_state`'s output; ``camera``, when given, must
        match the state's. Raises :class:`TrackerStateError` if the state cannot be used."""
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise TrackerStateError("tracker state: version must be %d, got %r" % (STATE_VERSION, state.get("version") if isinstance(state, Mapping) else state))
        if camera is not None and state.get("camera") != camera:
            raise TrackerStateError("tracker state is for camera %r, not %r" % (state.get("camera"), camera))
        try:
            trk = cls(state["camera"], config, first_id=int(state["next_id"]))
            last_t = state.get("last_t")
            trk._last_t = None if last_t is None else float(last_t)
            window = trk.config.confirm_window
            for s in state["tracks"]:
                rb = s.get("reported_box")
                box = tuple(float(v) for v in s["box"])
                if not (_box_ok(box) and (rb is None or _box_ok(rb))) or s["kind"] not in EVENT_TYPES \
                        or not (s.get("bin") is None or isinstance(s["bin"], str)):
                    raise ValueError("track %r: bad box, kind or bin" % (s.get("id"),))
                tr = _Track(
                    int(s["id"]), str(s["label"]), s["kind"], box, float(s["score"]),
                    float(s["first_seen"]), float(s["last_seen"]),
                    deque((bool(h) for h in s["hits"]), maxlen=window), int(s["misses"]), bool(s["confirmed"]),
                    tuple(float(v) for v in rb) if rb else None,
                    None if s.get("reported_t") is None else float(s["reported_t"]),
                    int(s.get("pending", 0)), s.get("bin"),
                )
                if tr.confirmed and (tr.reported_box is None or tr.reported_t is None):
                    raise ValueError("track %d: confirmed without a reported box" % tr.id)
                trk._tracks.append(tr)
                trk._next_id = max(trk._next_id, tr.id + 1)
        except TrackerStateError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise TrackerStateError("tracker state: malformed: %s" % (exc,)) from None
        return trk
