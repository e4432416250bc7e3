"""Privacy redaction of camera frames before any image is encoded, stored or sent (PIPL art. 26).

:class:`PrivacyFilter` does three things to a frame, in this order:

1. blacks out the camera's **privacy masks** (polygons: windows, doorways, a neighbour's yard);
   these are the guaranteed tool, everything below is best effort;
2. finds **faces** with OpenCV's Haar cascades (frontal, and profile in both directions), tuned
   for recall rather than precision, and destroys them (downscaled to a few pixels, then blurred:
   no detail survives to be recovered);
3. finds **people** with OpenCV's HOG people detector and destroys their (dilated) boxes the same
   way.

What is and is not caught is documented in docs/privacy.md. The cascade files ship with
``opencv-python-headless`` 4.x (``cv2.data.haarcascades``; OpenCV 5 dropped them): if they cannot
be loaded, :class:`PrivacyFilter` raises :class:`PrivacyError` when it is created, so a gateway
never starts sending unredacted images.

>>> import numpy as np
>>> pf = PrivacyFilter()
>>> frame = np.full((120, 160, 3), 200, np.uint8)
>>> out, found = pf.redact(frame, masks=[[[0, 0], [40, 0], [40, 40], [0, 40]]])
>>> int(out[:40, :40].max()), int(frame[:40, :40].min()), found.as_dict()
(0, 200, {'faces': 0, 'people': 0, 'masks': 1})
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from linli.errors import LinliError

Box = tuple[int, int, int, int]

FRONTAL = "haarcascade_frontalface_default.xml"
PROFILE = "haarcascade_profileface.xml"


class PrivacyError(LinliError):
    """The privacy filter cannot work (cascade files missing, OpenCV without the detectors) or
    failed on a frame; no image may leave the gateway unredacted, so nothing is sent."""


@dataclass
class Redaction:
    """What one :meth:`PrivacyFilter.redact` call found and destroyed (boxes in frame pixels)."""

    faces: list = field(default_factory=list)
    people: list = field(default_factory=list)
    masks: int = 0

    def as_dict(self) -> dict:
        """The counts that events and metrics carry: ``{"faces": n, "people": m, "masks": k}``."""
        return {"faces": len(self.faces), "people": len(self.people), "masks": self.masks}


def fill_masks(frame: np.ndarray, masks: Sequence) -> int:
    """Fill every mask polygon of ``frame`` black, in place; returns how many were applied."""
    if not masks:
        return 0
    import cv2

    cv2.fillPoly(frame, [np.asarray(p, np.int32).reshape(-1, 2) for p in masks], (0, 0, 0))
    return len(masks)


def destroy(frame: np.ndarray, box: Box, method: str = "blur") -> None:
    """Make the region ``box`` of ``frame`` unrecognisable, in place.

    ``blur``: the region is shrunk to at most 3 x 3 pixels (the detail is gone, not hidden),
    enlarged again and Gaussian-blurred so no block edges remain. ``pixelate``: shrunk to at most
    6 x 6 and enlarged as blocks. ``fill``: solid black.
    """
    import cv2

    x1, y1, x2, y2 = box
    roi = frame[y1:y2, x1:x2]
    h, w = roi.shape[:2]
    if h < 1 or w < 1:
        return
    if method == "fill":
        roi[:] = 0
        return
    n = 3 if method == "blur" else 6
    small = cv2.resize(roi, (max(1, min(n, w)), max(1, min(n, h))), interpolation=cv2.INTER_AREA)
    if method == "pixelate":
        roi[:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        return
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    k = max(3, min(w, h) | 1)
    roi[:] = cv2.GaussianBlur(big, (k, k), 0)


def _grow(box, frac: float, w: int, h: int) -> Box:
    x, y, bw, bh = (float(v) for v in box)
    dx, dy = bw * frac, bh * frac
    return (max(0, int(x - dx)), max(0, int(y - dy)), min(w, int(round(x + bw + dx))), min(h, int(round(y + bh + dy))))


class PrivacyFilter:
    """Masks, faces and people out of a frame; see the module doc.

    ``method``: ``"blur"`` (default), ``"pixelate"`` or ``"fill"``. ``faces`` / ``people`` turn
    the detectors on or off (masks always apply). ``min_face_px`` is the smallest face looked for
    in the frame's pixels; ``max_side`` the longest side the detectors work on (larger frames are
    scanned on a reduced copy: Haar and HOG cost grows with the pixel count); ``face_margin`` and
    ``person_margin`` grow the found boxes (a share of their size on every side) so hair, ears and
    the edges of a body go too. ``cascade_dir`` overrides ``cv2.data.haarcascades``.

    Thread-safe for one caller at a time per instance (OpenCV's classifiers keep state);
    the vision pipeline runs it on its inference pool.

    Example::

        pf = PrivacyFilter()
        safe, found = pf.redact(frame, masks=spec.masks)
        found.as_dict()        # {"faces": 1, "people": 0, "masks": 2}
    """

    METHODS = ("blur", "pixelate", "fill")

    def __init__(self, *, method: str = "blur", faces: bool = True, people: bool = True,
                 min_face_px: int = 16, max_side: int = 960, face_margin: float = 0.25,
                 person_margin: float = 0.15, cascade_dir: Optional[str] = None):
        if method not in self.METHODS:
            raise ValueError("privacy method must be one of %s, got %r" % (", ".join(self.METHODS), method))
        try:
            import cv2
        except ImportError as exc:  # pragma: no cover - cv2 is a hard dependency
            raise PrivacyError("OpenCV is not installed: %s" % exc) from None
        self.method = method
        self.min_face_px = int(min_face_px)
        self.max_side = int(max_side)
        self.face_margin = float(face_margin)
        self.person_margin = float(person_margin)
        self._frontal = self._profile = self._hog = None
        if faces:
            if cascade_dir is None:
                data = getattr(cv2, "data", None)
                cascade_dir = getattr(data, "haarcascades", None)
            if not cascade_dir or not hasattr(cv2, "CascadeClassifier"):
                raise PrivacyError("this OpenCV (%s) has no Haar cascades (OpenCV 5 dropped them): "
                                   "install opencv-python-headless>=4.8,<5" % cv2.__version__)
            self._frontal = self._cascade(cv2, cascade_dir, FRONTAL)
            self._profile = self._cascade(cv2, cascade_dir, PROFILE)
        if people:
            if not hasattr(cv2, "HOGDescriptor"):
                raise PrivacyError("this OpenCV (%s) has no HOG people detector: "
                                   "install opencv-python-headless>=4.8,<5" % cv2.__version__)
            self._hog = cv2.HOGDescriptor()
            self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    @staticmethod
    def _cascade(cv2, folder: str, name: str):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise PrivacyError("face cascade %s is missing; without it faces would go out unblurred" % path)
        try:
            c = cv2.CascadeClassifier(path)
        except Exception:  # a corrupt XML file: cv2.error or SystemError, depending on the build
            c = None
        if c is None or c.empty():
            raise PrivacyError("face cascade %s cannot be loaded (corrupt file?)" % path)
        return c

    # -- detection ---------------------------------------------------------------------------------
    def _reduced(self, frame: np.ndarray):
        import cv2

        h, w = frame.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        small = frame if s >= 1.0 else cv2.resize(frame, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
        return small, s

    def find_faces(self, frame: np.ndarray) -> list[Box]:
        """Face boxes (x1, y1, x2, y2) in ``frame``'s pixels, margins included."""
        if self._frontal is None:
            return []
        import cv2

        small, s = self._reduced(frame)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        gw = gray.shape[1]
        m = max(8, int(self.min_face_px * s))
        # Recall over precision: a fine scale step, few neighbours; a false hit only blurs a patch.
        kw = dict(scaleFactor=1.1, minNeighbors=3, minSize=(m, m))
        found = [tuple(b) for b in self._frontal.detectMultiScale(gray, **kw)]
        found += [tuple(b) for b in self._profile.detectMultiScale(gray, **kw)]
        # The profile cascade knows one side only: the mirrored image finds the other.
        for x, y, bw, bh in self._profile.detectMultiScale(cv2.flip(gray, 1), **kw):
            found.append((gw - x - bw, y, bw, bh))
        return self._to_frame(found, s, self.face_margin, frame)

    def find_people(self, frame: np.ndarray) -> list[Box]:
        """Person boxes (x1, y1, x2, y2) in ``frame``'s pixels, margins included."""
        if self._hog is None:
            return []
        small, s = self._reduced(frame)
        if small.shape[0] < 128 or small.shape[1] < 64:
            return []  # smaller than the HOG window: nobody can be found
        boxes, _ = self._hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.05)
        return self._to_frame([tuple(b) for b in boxes], s, self.person_margin, frame)

    @staticmethod
    def _to_frame(boxes, s: float, margin: float, frame: np.ndarray) -> list[Box]:
        h, w = frame.shape[:2]
        return [_grow((x / s, y / s, bw / s, bh / s), margin, w, h) for x, y, bw, bh in boxes]

    # -- the one entry point ---------------------------------------------------------------------
    def redact(self, frame: np.ndarray, masks: Sequence = ()) -> tuple[np.ndarray, Redaction]:
        """A redacted copy of ``frame`` (BGR uint8) and what was found. Masks are filled black
        first, so nothing behind them is even looked at; faces and people are searched on the
        masked frame and destroyed. The input frame is never modified.

        Raises :class:`PrivacyError` if the detectors fail: the caller must then send nothing.
        """
        if frame is None or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise PrivacyError("frame must be an H x W x 3 uint8 BGR image")
        out = frame.copy()
        found = Redaction(masks=fill_masks(out, masks))
        try:
            found.faces = self.find_faces(out)
            found.people = self.find_people(out)
        except Exception as exc:  # cv2.error and friends: refuse rather than leak
            raise PrivacyError("face/person detection failed: %s" % exc) from exc
        for box in found.people + found.faces:
            destroy(out, box, self.method)
        fill_masks(out, masks)  # a blur that reached into a mask must not bring pixels back
        return out, found
