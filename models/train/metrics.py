"""Detection metrics, computed as ``shared/tools/eval_detector.py`` does: AP50 per class
(greedy matching by score at IoU >= 0.5, 101-point interpolation integrated with the trapezoid
rule) and image-level "has a pile" recall at precision >= 0.9."""

from __future__ import annotations

import numpy as np


def _iou_one_many(b: np.ndarray, g: np.ndarray) -> np.ndarray:
    lt = np.maximum(b[:2], g[:, :2])
    rb = np.minimum(b[2:], g[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    ua = (b[2] - b[0]) * (b[3] - b[1]) + (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) - inter
    return np.where(ua > 0, inter / np.where(ua > 0, ua, 1), 0.0)


def ap50(gts: list[tuple[np.ndarray, np.ndarray]], preds: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
         cls: int) -> float:
    """AP50 of class ``cls``. ``gts[i]`` = (boxes (n, 4), classes (n,)); ``preds[i]`` =
    (boxes (k, 4), scores (k,), classes (k,)); all boxes xyxy in the same pixels."""
    npos = sum(int((c == cls).sum()) for _, c in gts)
    dets = []
    for i, (b, s, c) in enumerate(preds):
        for j in np.nonzero(c == cls)[0]:
            dets.append((float(s[j]), i, b[j]))
    dets.sort(key=lambda d: -d[0])  # stable: ties keep image order, as the reference's sort nearly does
    gt_c = [g[0][g[1] == cls] for g in gts]
    used = [np.zeros(len(g), bool) for g in gt_c]
    tp = np.zeros(len(dets))
    for k, (_, i, box) in enumerate(dets):
        g = gt_c[i]
        if len(g) == 0:
            continue
        ious = _iou_one_many(np.asarray(box, np.float64), g.astype(np.float64))
        ious[used[i]] = -1
        # the reference keeps the last box with the highest IoU >= 0.5
        best = np.nonzero(ious >= max(0.5, ious.max()))[0]
        if best.size:
            used[i][best[-1]] = True
            tp[k] = 1
    if npos == 0 or len(tp) == 0:
        return 0.0
    ctp = np.cumsum(tp)
    rec = ctp / npos
    prec = ctp / np.arange(1, len(tp) + 1)
    mrec = np.concatenate([[0], rec, [1]])
    mpre = np.concatenate([[1], prec, [0]])
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    xs = np.linspace(0, 1, 101)
    return float(np.trapezoid(np.interp(xs, mrec, mpre), xs))


def image_recall(gts, preds, cls: int = 0, precision_target: float = 0.9) -> float:
    """Best recall of "this image holds class ``cls``" (image score = its best box of that
    class) over thresholds whose precision is at least ``precision_target``."""
    pos = np.array([bool((c == cls).any()) for _, c in gts])
    score = np.array([float(s[c == cls].max()) if (c == cls).any() else 0.0 for _, s, c in preds])
    if pos.sum() == 0:
        return 0.0
    best = 0.0
    for t in np.unique(score):
        if t <= 0:
            continue
        hit = score >= t
        tp = (hit & pos).sum()
        if tp / hit.sum() >= precision_target:
            best = max(best, tp / pos.sum())
    return float(best)


def summary(gts, preds, names) -> dict:
    aps = {n: ap50(gts, preds, i) for i, n in enumerate(names)}
    return {"ap50": aps, "map50": float(np.mean(list(aps.values()))),
            "pile_recall_p90": image_recall(gts, preds, 0)}
