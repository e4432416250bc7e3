"""Data for the garbage detector: the fixed train/validation split, an in-RAM image cache and
the augmentations a street camera needs.

Labels are YOLO text files (``class cx cy w h``, normalised). Inside this module boxes are
``float32 (n, 4)`` x1, y1, x2, y2 in pixels and classes ``int64 (n,)``.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

NAMES = ("garbage", "garbage_bin", "overflow")
PAD = 114  # letterbox grey, as Ultralytics pads


def is_val(stem: str, val_percent: int = 12) -> bool:
    """The fixed split rule: an image is in validation when the first 8 hex digits of the
    SHA-1 of its file stem, mod 100, are below ``val_percent``."""
    return int(hashlib.sha1(stem.encode()).hexdigest()[:8], 16) % 100 < val_percent


def read_labels(path: str, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    boxes, cls = [], []
    if os.path.exists(path):
        for line in open(path).read().split("\n"):
            if line.strip():
                c, cx, cy, bw, bh = line.split()[:5]
                cx, cy, bw, bh = float(cx) * w, float(cy) * h, float(bw) * w, float(bh) * h
                boxes.append((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
                cls.append(int(c))
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(cls, np.int64)


@dataclass
class Sample:
    path: str
    image: np.ndarray  # BGR uint8
    boxes: np.ndarray
    cls: np.ndarray


def list_split(root: str, split: str, val_percent: int = 12) -> list[str]:
    """Image paths of ``split`` ("train", "val" or "all") under ``root/images``, sorted."""
    names = sorted(f for f in os.listdir(os.path.join(root, "images"))
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))
    out = []
    for f in names:
        v = is_val(os.path.splitext(f)[0], val_percent)
        if split == "all" or (split == "val") == v:
            out.append(os.path.join(root, "images", f))
    return out


def load_samples(paths: list[str], max_side: int = 512) -> list[Sample]:
    """Decode every image once (kept as uint8 BGR in RAM) with its labels."""
    out = []
    for p in paths:
        img = cv2.imread(p)
        if img is None:
            raise ValueError(f"cannot read image {p}")
        h, w = img.shape[:2]
        stem = os.path.splitext(os.path.basename(p))[0]
        lab = os.path.join(os.path.dirname(os.path.dirname(p)), "labels", stem + ".txt")
        boxes, cls = read_labels(lab, w, h)
        r = max_side / max(h, w)
        if r < 1:
            img = cv2.resize(img, (round(w * r), round(h * r)), interpolation=cv2.INTER_AREA)
            boxes = boxes * np.array([img.shape[1] / w, img.shape[0] / h] * 2, np.float32)
        out.append(Sample(p, img, boxes, cls))
    return out


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, float, int, int]:
    """Centred letterbox as at inference; returns (canvas, scale, left, top)."""
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    nh, nw = int(round(h * r)), int(round(w * r))
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas = np.full((size, size, 3), PAD, np.uint8)
    canvas[top:top + nh, left:left + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, r, left, top


# --- augmentation -------------------------------------------------------------------------------

# Camera frame shapes (width / height) a square, stretched export image is un-stretched to.
_ASPECTS = (16 / 9, 16 / 9, 4 / 3, 1.0, 3 / 4)


def _warp(img, boxes, cls, out_w, out_h, sx, sy, tx, ty, min_visible=0.35):
    m = np.array([[sx, 0, tx], [0, sy, ty]], np.float32)
    interp = cv2.INTER_AREA if max(sx, sy) < 0.7 else cv2.INTER_LINEAR
    out = cv2.warpAffine(img, m, (out_w, out_h), flags=interp, borderValue=(PAD, PAD, PAD))
    if len(boxes):
        b = boxes * np.array([sx, sy, sx, sy], np.float32) + np.array([tx, ty, tx, ty], np.float32)
        area0 = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, out_w)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, out_h)
        bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        keep = (bw > 2) & (bh > 2) & (bw * bh >= min_visible * np.maximum(area0, 1e-6))
        boxes, cls = b[keep], cls[keep]
    return out, boxes, cls


def frame_like(s: Sample, size: int, rng: np.random.Generator, zoom=(0.55, 1.45)):
    """Un-stretch to a camera aspect, then letterbox at a random zoom and position: zoom < 1
    leaves grey borders (far camera), zoom > 1 crops (near camera, partial objects)."""
    h, w = s.image.shape[:2]
    a = _ASPECTS[rng.integers(len(_ASPECTS))] * math.exp(rng.uniform(-0.1, 0.1))
    fw, fh = w * math.sqrt(a), h / math.sqrt(a)  # frame size after un-stretching
    fit = min(size / fw, size / fh) * rng.uniform(*zoom)
    sx, sy = fit * fw / w, fit * fh / h
    ow, oh = w * sx, h * sy
    tx = (size - ow) / 2 + rng.uniform(-1, 1) * abs(size - ow) / 2
    ty = (size - oh) / 2 + rng.uniform(-1, 1) * abs(size - oh) / 2
    return _warp(s.image, s.boxes, s.cls, size, size, sx, sy, tx, ty)


def mosaic(samples: list[Sample], size: int, rng: np.random.Generator):
    """Four frame-like tiles around a random centre, cut to ``size`` (more objects per batch,
    and smaller ones)."""
    big = 2 * size
    canvas = np.full((big, big, 3), PAD, np.uint8)
    xc, yc = (int(rng.uniform(0.5 * size, 1.5 * size)) for _ in range(2))
    all_b, all_c = [], []
    for i, s in enumerate(samples):
        tile, b, c = frame_like(s, size, rng, zoom=(0.6, 1.1))
        if i == 0:
            x0, y0 = xc - size, yc - size
        elif i == 1:
            x0, y0 = xc, yc - size
        elif i == 2:
            x0, y0 = xc - size, yc
        else:
            x0, y0 = xc, yc
        # paste the part of the tile that falls on the canvas
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + size, big), min(y0 + size, big)
        canvas[cy0:cy1, cx0:cx1] = tile[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        all_b.append(b + np.array([x0, y0, x0, y0], np.float32))
        all_c.append(c)
    off = size // 2
    return _warp(canvas, np.concatenate(all_b), np.concatenate(all_c), size, size, 1.0, 1.0, -off, -off)


def photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour, exposure, blur and JPEG artefacts, as cheap cameras and their encoders give."""
    # hue / saturation / value jitter through lookup tables
    rh, rs, rv = rng.uniform(-1, 1, 3) * (0.015, 0.6, 0.35) + 1
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * rh) % 180).astype(np.uint8)
    lut_s = np.clip(x * rs, 0, 255).astype(np.uint8)
    gamma = math.exp(rng.uniform(-0.35, 0.35))  # exposure curve
    lut_v = np.clip(255 * (x / 255) ** gamma * rv, 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hsv[..., 0], lut_h), cv2.LUT(hsv[..., 1], lut_s), cv2.LUT(hsv[..., 2], lut_v)))
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    u = rng.random()
    if u < 0.1:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.6, 1.6))
    elif u < 0.15:  # motion blur, horizontal-ish
        k = int(rng.integers(3, 8))
        kern = np.zeros((k, k), np.float32)
        kern[k // 2] = 1.0 / k
        img = cv2.filter2D(img, -1, kern)
    if rng.random() < 0.05:
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)  # IR/night mode
    if rng.random() < 0.3:
        ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 85))])
        img = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    if rng.random() < 0.15:
        noise = rng.normal(0, rng.uniform(2, 8), img.shape).astype(np.float32)
        img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img


def augment(samples: list[Sample], idx: int, size: int, rng: np.random.Generator, p_mosaic: float):
    if p_mosaic > 0 and rng.random() < p_mosaic:
        pick = [idx] + list(rng.integers(0, len(samples), 3))
        img, boxes, cls = mosaic([samples[i] for i in pick], size, rng)
    else:
        img, boxes, cls = frame_like(samples[idx], size, rng)
    if rng.random() < 0.5:
        img = img[:, ::-1]
        if len(boxes):
            boxes = np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], 1)
    img = photometric(np.ascontiguousarray(img), rng)
    return img, boxes.astype(np.float32), cls


def to_chw_rgb(imgs: list[np.ndarray]) -> np.ndarray:
    """BGR HWC uint8 images -> RGB NCHW uint8 batch."""
    return np.ascontiguousarray(np.stack(imgs)[..., ::-1].transpose(0, 3, 1, 2))


def pad_targets(boxes: list[np.ndarray], cls: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pad per-image targets to (B, G, 4) boxes and (B, G) classes (-1 = padding)."""
    g = max(1, max(len(c) for c in cls))
    b = np.zeros((len(cls), g, 4), np.float32)
    c = np.full((len(cls), g), -1, np.int64)
    for i, (bb, cc) in enumerate(zip(boxes, cls)):
        b[i, :len(cc)] = bb
        c[i, :len(cc)] = cc
    return b, c
