"""Object detection on camera frames with an ONNX model (garbage piles, bins, overflow).

Loads our own garbage detector (``models/garbage-det-320.int8.onnx``) or a model an operator
exported from Ultralytics YOLOv8 / YOLO11: both write ``[1, 4 + nc, N]`` (cx, cy, w, h in input
pixels, then one score per class) and keep their class names in the ONNX metadata ``names``.
Frames are letterboxed (centred, grey 114 borders, RGB, 0..1), as both were trained.

Example::

    import cv2
    from linli.detector import Detector

    det = Detector.default()            # the shipped model, checked against models/manifest.json
    for d in det.detect(cv2.imread("street.jpg")):
        print(d.label, round(d.score, 2), d.box)   # box in the frame's own pixels
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from linli.errors import LinliError

# Where a source checkout keeps the shipped model (gateway/ and models/ are siblings).
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS_DIR / "garbage-det-320.int8.onnx"
DEFAULT_MANIFEST = MODELS_DIR / "manifest.json"
PAD = 114


class DetectorError(LinliError):
    """Base of the detector's errors."""


class ModelFileError(DetectorError):
    """The model file is missing, unreadable or not a valid ONNX model."""


class ChecksumMismatch(ModelFileError):
    """The model file's SHA-256 differs from the manifest's: the file is corrupt or not the one
    the manifest describes. Re-copy the model, or pass the manifest that belongs to it."""


class ModelFormatError(DetectorError):
    """The model loads but does not look like a detector this gateway can decode (input must be
    ``[1, 3, H, W]``, output ``[1, 4 + nc, N]`` with ``nc`` class names)."""


@dataclass(frozen=True)
class Detection:
    """One detected object; ``box`` is (x1, y1, x2, y2) in the pixels of the frame given."""

    label: str
    score: float
    box: tuple[float, float, float, float]
    class_id: int

    def as_dict(self) -> dict:
        return {"label": self.label, "score": round(self.score, 5),
                "box": [round(v, 1) for v in self.box]}


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_entry(manifest: str | os.PathLike, model: str | os.PathLike) -> dict:
    """The manifest's entry for ``model`` (matched by file name)."""
    try:
        data = json.loads(Path(manifest).read_text())
        entries = data["models"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"cannot read manifest {manifest}: {exc}") from exc
    name = Path(model).name
    for e in entries:
        if e.get("file") == name:
            return e
    raise ChecksumMismatch(f"{name} is not listed in manifest {manifest}; "
                           "pass the manifest that ships with this model")


def verify_sha256(model: str | os.PathLike, expected: str) -> None:
    """Raise :class:`ChecksumMismatch` unless the file's SHA-256 is ``expected``."""
    got = sha256_of(model)
    if got != expected.lower():
        raise ChecksumMismatch(f"{model}: SHA-256 {got} does not match the manifest's {expected}; "
                               "the file is corrupt or is another model")


def parse_names(raw: str | None) -> list[str] | None:
    """Class names from ONNX metadata: Ultralytics writes ``"{0: 'person', 1: 'car'}"``; a JSON
    list or dict is accepted too.

    >>> parse_names("{0: 'person', 1: 'car'}")
    ['person', 'car']
    """
    if not raw:
        return None
    try:
        v = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        try:
            v = json.loads(raw)
        except ValueError:
            return None
    if isinstance(v, dict):
        try:
            return [str(v[k]) for k in sorted(v, key=int)]
        except (ValueError, TypeError):
            return None
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    return None


def letterbox_into(frame: np.ndarray, canvas: np.ndarray, fill: bool = True) -> tuple[float, int, int]:
    """Resize ``frame`` into the middle of ``canvas`` (H, W, 3), grey around it (set
    ``fill=False`` when the canvas already holds the borders of a frame of the same size);
    returns (scale, left, top) to map boxes back."""
    h, w = frame.shape[:2]
    H, W = canvas.shape[:2]
    r = min(H / h, W / w)
    nh, nw = int(round(h * r)), int(round(w * r))
    top, left = (H - nh) // 2, (W - nw) // 2
    if fill:
        canvas[:] = PAD
    cv2.resize(frame, (nw, nh), dst=canvas[top:top + nh, left:left + nw], interpolation=cv2.INTER_LINEAR)
    return r, left, top


def decode(out: np.ndarray, conf: float, iou: float, max_det: int, pre_nms: int = 1000):
    """Boxes of one ``[4 + nc, N]`` output: returns xyxy (k, 4) in input pixels, scores (k,)
    and class ids (k,), after per-class NMS. An anchor may yield one box per class above
    ``conf`` (as Ultralytics validates)."""
    scores = out[4:]
    cls, idx = np.nonzero(scores > conf)
    if idx.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    sc = scores[cls, idx]
    if sc.size > pre_nms:
        top = np.argpartition(-sc, pre_nms)[:pre_nms]
        cls, idx, sc = cls[top], idx[top], sc[top]
    cx, cy, w, h = out[0, idx], out[1, idx], out[2, idx], out[3, idx]
    xywh = np.stack((cx - w / 2, cy - h / 2, w, h), 1)
    keep = cv2.dnn.NMSBoxesBatched(xywh.tolist(), sc.tolist(), cls.tolist(), conf, iou, top_k=max_det)
    keep = np.asarray(keep, np.int64).reshape(-1)[:max_det]
    b = xywh[keep]
    xyxy = np.concatenate((b[:, :2], b[:, :2] + b[:, 2:]), 1)
    return xyxy.astype(np.float32), sc[keep].astype(np.float32), cls[keep].astype(np.int64)


class Detector:
    """An ONNX detector with its pre- and post-processing.

    ``manifest`` (a ``manifest.json`` listing ``file`` and ``sha256``) or ``sha256`` make the
    file be checked before it is loaded. ``conf`` is the lowest score reported, ``iou`` the
    NMS overlap, ``threads`` the CPU threads onnxruntime may use.

    >>> det = Detector(DEFAULT_MODEL, manifest=DEFAULT_MANIFEST, conf=0.3)
    >>> det.names, (det.height, det.width)
    (['garbage', 'garbage_bin', 'overflow'], (320, 320))
    >>> frame = cv2.imread(str(MODELS_DIR.parent / "tests/data/detector/images/003353.jpg"))
    >>> [d.label for d in det.detect(frame)]
    ['garbage']
    """

    def __init__(self, model: str | os.PathLike, *, manifest: str | os.PathLike | None = None,
                 sha256: str | None = None, conf: float = 0.25, iou: float = 0.5,
                 max_det: int = 100, threads: int = 2):
        import onnxruntime as ort

        self.path = Path(model)
        if not self.path.is_file():
            raise ModelFileError(f"model file not found: {self.path}")
        if manifest is not None:
            entry = manifest_entry(manifest, self.path)
            sha256 = entry.get("sha256")
            if not sha256:
                raise ModelFileError(f"manifest {manifest} has no sha256 for {self.path.name}")
        if sha256 is not None:
            verify_sha256(self.path, sha256)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
            raise ModelFileError(f"{self.path} is not a loadable ONNX model: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = dict(meta)
        self._setup_io(meta)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        # Buffers reused frame after frame: a camera's frames all have one size, so the grey
        # borders are drawn once and only the picture is resized in; the input tensor is filled
        # in place (cv2.dnn.blobFromImage allocates and costs 2-3 times as much).
        self._canvas = np.full((self.height, self.width, 3), PAD, np.uint8)
        self._canvas_for: tuple | None = None
        self._input = np.empty((1, 3, self.height, self.width), np.float32)

    def _setup_io(self, meta: dict) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ModelFormatError(f"{self.path}: expected one input, found {len(inputs)}")
        shape = inputs[0].shape
        if len(shape) != 4 or shape[1] != 3:
            raise ModelFormatError(f"{self.path}: input shape {shape} is not [1, 3, H, W]")
        size = None
        if "imgsz" in meta:  # Ultralytics: "[640, 640]"
            try:
                size = [int(v) for v in ast.literal_eval(meta["imgsz"])]
            except (ValueError, SyntaxError, TypeError):
                size = None
        h, w = shape[2], shape[3]
        if isinstance(h, int) and isinstance(w, int):
            size = [h, w]
        if not size or len(size) != 2:
            raise ModelFormatError(f"{self.path}: input size unknown (dynamic shape and no imgsz metadata)")
        self.height, self.width = size
        self.input_name = inputs[0].name
        self.names = parse_names(meta.get("names"))
        out = outputs[0].shape
        if len(out) != 3:
            raise ModelFormatError(f"{self.path}: output shape {out} is not [1, 4 + nc, N]")
        if self.names is None:
            if isinstance(out[1], int) and out[1] > 4:
                self.names = [f"class{i}" for i in range(out[1] - 4)]
            else:
                raise ModelFormatError(f"{self.path}: no class names in metadata and output {out}")
        if isinstance(out[1], int) and out[1] != 4 + len(self.names):
            raise ModelFormatError(
                f"{self.path}: output {out} does not hold 4 + {len(self.names)} rows for the "
                f"{len(self.names)} class names (end-to-end/NMS exports such as [1, 300, 6] are "
                "not supported: export with nms=False)")

    @classmethod
    def default(cls, **kwargs) -> "Detector":
        """The shipped garbage model, verified against the shipped manifest."""
        return cls(DEFAULT_MODEL, manifest=DEFAULT_MANIFEST, **kwargs)

    def preprocess(self, frame: np.ndarray) -> tuple[np.ndarray, float, int, int]:
        """BGR frame -> (input tensor [1, 3, H, W] float32 RGB 0..1, scale, left, top). The
        tensor is a buffer reused by the next call."""
        if frame is None or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError("frame must be an H x W x 3 uint8 BGR image")
        fill = self._canvas_for != frame.shape
        r, left, top = letterbox_into(frame, self._canvas, fill=fill)
        self._canvas_for = frame.shape
        scale = np.float32(1 / 255)
        for c in range(3):  # BGR -> RGB planes, 0..1
            np.multiply(self._canvas[:, :, 2 - c], scale, out=self._input[0, c], casting="unsafe")
        return self._input, r, left, top

    def run(self, x: np.ndarray) -> np.ndarray:
        """The bare model: input tensor -> output ``[4 + nc, N]``."""
        return self.session.run(None, {self.input_name: x})[0][0]

    def detect(self, frame: np.ndarray, conf: float | None = None) -> list[Detection]:
        """Objects in a BGR frame, best first, boxes in the frame's pixels."""
        h, w = frame.shape[:2] if frame is not None and frame.ndim == 3 else (0, 0)
        x, r, left, top = self.preprocess(frame)
        out = self.run(x)
        xyxy, sc, cls = decode(out, self.conf if conf is None else conf, self.iou, self.max_det)
        xyxy -= np.array([left, top, left, top], np.float32)
        xyxy /= r
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
        order = np.argsort(-sc)
        return [Detection(self.names[c] if c < len(self.names) else str(c), float(s),
                          tuple(float(v) for v in b), int(c))
                for b, s, c in zip(xyxy[order], sc[order], cls[order])]


def draw(frame: np.ndarray, detections: list[Detection]) -> np.ndarray:
    """A copy of ``frame`` with the detections drawn on it, for a person to check."""
    out = frame.copy()
    colours = [(0, 0, 255), (0, 200, 0), (255, 128, 0), (0, 200, 255), (255, 0, 255)]
    for d in detections:
        c = colours[d.class_id % len(colours)]
        x1, y1, x2, y2 = (int(round(v)) for v in d.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), c, 2)
        text = f"{d.label} {d.score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = max(y1, th + 4)
        cv2.rectangle(out, (x1, ty - th - 4), (x1 + tw + 2, ty), c, -1)
        cv2.putText(out, text, (x1 + 1, ty - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out
