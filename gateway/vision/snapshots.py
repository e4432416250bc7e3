"""Snapshots of camera lifecycle events: rendered from the *redacted* frame, kept at the edge.

For every ``garbage.pile.*`` / ``bin.overflow.*`` event the pipeline renders two JPEGs from the
frame :class:`linli.vision.privacy.PrivacyFilter` has already redacted (masks black, faces and
people destroyed), so nothing identifiable is ever encoded:

* ``crop``: the object's box with a margin around it (:func:`render_crop`);
* ``frame``: the whole frame scaled to at most 640 px on its longest side, with the box drawn
  and labelled (:func:`render_frame`).

A ``cleared`` event renders the *current* frame at the track's last box: it shows the cleaned spot.

:class:`SnapshotStore` keeps them as ``<root>/<event_id>-<kind>.jpg`` with a small JSON sidecar
(the reference and whether it was sent), written atomically, bounded by age and by bytes. The
event carries only the references (``data["snapshots"]``); the uplink publishes the pending images
on their own topic (``linli/v1/{site}/{gateway}/snapshots/{id}``) and marks them sent.

>>> import tempfile, numpy as np
>>> store = SnapshotStore(tempfile.mkdtemp())
>>> jpeg, w, h = render_crop(np.zeros((240, 320, 3), np.uint8), (100, 80, 180, 160))
>>> ref = store.put("0f3c9a", "crop", jpeg)
>>> ref["id"], ref["kind"], (ref["width"], ref["height"]) == (w, h)
('0f3c9a-crop', 'crop', True)
>>> [r["id"] for r in store.pending()]
['0f3c9a-crop']
>>> store.mark_sent(ref); store.pending()
[]
>>> store.get(ref) == jpeg
True
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from linli.errors import LinliError

KINDS = ("crop", "frame")
_ID = re.compile(r"^[A-Za-z0-9._-]{1,96}$")
_COLOURS = {"garbage": (0, 0, 255), "overflow": (0, 140, 255)}
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class SnapshotError(LinliError):
    """A snapshot could not be rendered, stored or read (bad id or kind, not a JPEG, pruned,
    altered on disk); the message says which."""


# -- rendering -----------------------------------------------------------------------------------
def _encode(img: np.ndarray, quality: int) -> tuple[bytes, int, int]:
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise SnapshotError("JPEG encoding failed for a %dx%d image" % (img.shape[1], img.shape[0]))
    return buf.tobytes(), img.shape[1], img.shape[0]


def _clip_box(box, w: int, h: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = sorted((min(max(x1, 0), w), min(max(x2, 0), w)))
    y1, y2 = sorted((min(max(y1, 0), h), min(max(y2, 0), h)))
    return int(x1), int(y1), int(round(x2)), int(round(y2))


def render_crop(frame: np.ndarray, box, *, margin: float = 0.25, min_px: int = 64, quality: int = 85) -> tuple[bytes, int, int]:
    """JPEG of ``box`` (x1, y1, x2, y2) and ``margin`` of its size on every side (at least
    ``min_px`` wide and high where the frame allows); returns (jpeg, width, height).

    >>> import numpy as np
    >>> render_crop(np.zeros((100, 100, 3), np.uint8), (40, 40, 60, 60), min_px=10)[1:]
    (30, 30)
    """
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    mx = max((x2 - x1) * margin, (min_px - (x2 - x1)) / 2)
    my = max((y2 - y1) * margin, (min_px - (y2 - y1)) / 2)
    cx1, cy1, cx2, cy2 = _clip_box((x1 - mx, y1 - my, x2 + mx, y2 + my), w, h)
    if cx2 - cx1 < 1 or cy2 - cy1 < 1:
        raise SnapshotError("box %r lies outside the %dx%d frame" % (tuple(box), w, h))
    return _encode(np.ascontiguousarray(frame[cy1:cy2, cx1:cx2]), quality)


def render_frame(frame: np.ndarray, box, label: str = "", *, max_side: int = 640, quality: int = 80) -> tuple[bytes, int, int]:
    """JPEG of the whole frame scaled down to ``max_side`` (never up) with ``box`` drawn and
    ``label`` written above it; returns (jpeg, width, height)."""
    import cv2

    h, w = frame.shape[:2]
    s = min(1.0, max_side / max(h, w))
    img = cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else frame.copy()
    x1, y1, x2, y2 = _clip_box([v * s for v in box], img.shape[1], img.shape[0])
    colour = _COLOURS.get(label.split(" ")[0], (0, 0, 255))
    cv2.rectangle(img, (x1, y1), (x2, y2), colour, 2)
    if label:
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = max(y1, th + 4)
        cv2.rectangle(img, (x1, ty - th - 4), (x1 + tw + 2, ty), colour, -1)
        cv2.putText(img, label, (x1 + 1, ty - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return _encode(img, quality)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header; :class:`SnapshotError` if it is not a JPEG.

    >>> import cv2, numpy as np
    >>> jpeg_size(cv2.imencode(".jpg", np.zeros((30, 50, 3), np.uint8))[1].tobytes())
    (50, 30)
    """
    if not isinstance(data, (bytes, bytearray)) or data[:2] != b"\xff\xd8":
        raise SnapshotError("not a JPEG (no SOI marker)")
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise SnapshotError("not a JPEG (bad marker at byte %d)" % i)
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (seg,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _JPEG_SOF and i + 9 <= n:
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + seg
    raise SnapshotError("not a JPEG (no frame header)")


# -- the store ---------------------------------------------------------------------------------------
Ref = dict


class SnapshotStore:
    """Snapshots on local disk, bounded by age (``retention_s``) and size (``max_bytes``).

    ``put`` writes ``<root>/<id>.jpg`` and ``<root>/<id>.json`` (the reference plus ``sent`` and
    ``created``), each to a temporary file first and then renamed, so a power cut leaves either
    the old state or the new one. ``pending()`` survives restarts (it reads the sidecars). A JPEG
    whose sidecar was lost in a crash gets a new sidecar when ``pending()`` next runs.

    ``pruned`` counts what :meth:`prune` deleted, by reason (``age``, ``size``).

    Example::

        store = SnapshotStore("/var/lib/linli/snapshots", retention_s=7 * 86400)
        ref = store.put(event.id, "crop", jpeg)       # -> into event.data["snapshots"]
        for ref in store.pending():                   # the uplink's side
            publish("linli/v1/%s/%s/snapshots/%s" % (site, gw, ref["id"]), store.get(ref))
            store.mark_sent(ref)
        store.prune()                                 # now and then
    """

    def __init__(self, root: Union[str, os.PathLike], *, retention_s: float = 7 * 86400,
                 max_bytes: int = 200 * 2**20, clock=time.time):
        if not (isinstance(retention_s, (int, float)) and retention_s > 0):
            raise ValueError("snapshots.retention_s must be a number > 0, got %r" % (retention_s,))
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError("snapshots.max_bytes must be an integer > 0, got %r" % (max_bytes,))
        self.root = Path(root)
        self.retention_s = float(retention_s)
        self.max_bytes = max_bytes
        self.clock = clock
        self.pruned = {"age": 0, "size": 0}
        self.root.mkdir(parents=True, exist_ok=True)
        for tmp in self.root.glob("*.tmp"):  # a write cut short by a crash
            tmp.unlink(missing_ok=True)

    # -- paths -------------------------------------------------------------------------------------
    @staticmethod
    def _id(ref: Union[Ref, str]) -> str:
        sid = ref.get("id") if isinstance(ref, dict) else ref
        if not isinstance(sid, str) or not _ID.match(sid):
            raise SnapshotError("snapshot id %r must be 1-96 chars of A-Z a-z 0-9 . _ -" % (sid,))
        return sid

    def _jpg(self, sid: str) -> Path:
        return self.root / (sid + ".jpg")

    def _meta(self, sid: str) -> Path:
        return self.root / (sid + ".json")

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    # -- API -----------------------------------------------------------------------------------------
    def put(self, event_id: str, kind: str, jpeg: bytes) -> Ref:
        """Store ``jpeg`` as the ``kind`` (``"crop"`` or ``"frame"``) snapshot of an event; returns
        the reference for ``event.data["snapshots"]``:
        ``{"id", "kind", "sha256", "bytes", "width", "height"}``."""
        if kind not in KINDS:
            raise SnapshotError("snapshot kind must be one of %s, got %r" % (", ".join(KINDS), kind))
        sid = self._id("%s-%s" % (event_id, kind))
        w, h = jpeg_size(jpeg)
        ref = {"id": sid, "kind": kind, "sha256": hashlib.sha256(jpeg).hexdigest(), "bytes": len(jpeg), "width": w, "height": h}
        self._write(self._jpg(sid), bytes(jpeg))
        self._write(self._meta(sid), json.dumps(dict(ref, sent=False, created=self.clock())).encode())
        return ref

    def get(self, ref: Union[Ref, str]) -> bytes:
        """The JPEG bytes of a reference (or id). When the reference carries a ``sha256``, the
        file must match it (:class:`SnapshotError` otherwise, as when it was pruned)."""
        sid = self._id(ref)
        try:
            data = self._jpg(sid).read_bytes()
        except FileNotFoundError:
            raise SnapshotError("snapshot %s is not stored (pruned or never written)" % sid) from None
        if isinstance(ref, dict) and ref.get("sha256") and hashlib.sha256(data).hexdigest() != ref["sha256"]:
            raise SnapshotError("snapshot %s on disk does not match its sha256 (altered or corrupt)" % sid)
        return data

    def _read_meta(self, sid: str) -> Optional[dict]:
        try:
            meta = json.loads(self._meta(sid).read_text())
            return meta if isinstance(meta, dict) and meta.get("id") == sid else None
        except (OSError, ValueError):
            return None

    def _rebuild(self, sid: str) -> Optional[dict]:
        """A sidecar for a JPEG whose own was lost (crash between the two renames)."""
        kind = sid.rsplit("-", 1)[-1]
        try:
            data = self._jpg(sid).read_bytes()
            w, h = jpeg_size(data)
            created = self._jpg(sid).stat().st_mtime
        except (OSError, SnapshotError):
            return None
        if kind not in KINDS:
            return None
        meta = {"id": sid, "kind": kind, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "width": w, "height": h, "sent": False, "created": created}
        self._write(self._meta(sid), json.dumps(meta).encode())
        return meta

    def _all(self) -> list[dict]:
        out = []
        for p in self.root.glob("*.jpg"):
            sid = p.stem
            meta = self._read_meta(sid) or self._rebuild(sid)
            if meta is not None:
                out.append(meta)
        out.sort(key=lambda m: (m.get("created", 0), m["id"]))
        return out

    @staticmethod
    def _ref(meta: dict) -> Ref:
        return {k: meta[k] for k in ("id", "kind", "sha256", "bytes", "width", "height")}

    def pending(self) -> list[Ref]:
        """References not yet marked sent, oldest first (as stored: a restart keeps them)."""
        return [self._ref(m) for m in self._all() if not m.get("sent")]

    def mark_sent(self, ref: Union[Ref, str]) -> None:
        """Record that the snapshot reached the backend (it stays until pruned)."""
        sid = self._id(ref)
        meta = self._read_meta(sid)
        if meta is None:
            raise SnapshotError("snapshot %s is not stored (pruned or never written)" % sid)
        meta["sent"] = True
        self._write(self._meta(sid), json.dumps(meta).encode())

    def _delete(self, sid: str) -> int:
        size = 0
        for p in (self._jpg(sid), self._meta(sid)):
            try:
                size += p.stat().st_size if p.suffix == ".jpg" else 0
                p.unlink()
            except FileNotFoundError:
                pass
        return size

    def usage(self) -> int:
        """Bytes of JPEG stored now."""
        return sum(p.stat().st_size for p in self.root.glob("*.jpg"))

    def prune(self, now: Optional[float] = None) -> int:
        """Delete snapshots older than ``retention_s``, then the oldest beyond ``max_bytes``
        (those already sent go first); returns how many were deleted (also counted in
        :attr:`pruned`). Unsent ones age out too: retention is a promise to residents."""
        now = self.clock() if now is None else now
        deleted = 0
        keep = []
        for m in self._all():
            if now - float(m.get("created", 0)) > self.retention_s:
                self._delete(m["id"])
                self.pruned["age"] += 1
                deleted += 1
            else:
                keep.append(m)
        total = sum(int(m.get("bytes", 0)) for m in keep)
        if total > self.max_bytes:
            for m in sorted(keep, key=lambda m: (not m.get("sent"), m.get("created", 0))):
                if total <= self.max_bytes:
                    break
                total -= int(m.get("bytes", 0))
                self._delete(m["id"])
                self.pruned["size"] += 1
                deleted += 1
        return deleted


def attach(data: dict, refs: Sequence[Ref], redacted: dict) -> None:
    """Put snapshot references and redaction counts into an event's ``data`` (in place)."""
    data["snapshots"] = list(refs)
    data["redacted"] = dict(redacted)
