"""Loss for the detector: task-aligned assignment (as in TOOD / YOLOv8) with an IoU-aware
BCE class loss and a CIoU box loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def box_iou_pairs(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """IoU of boxes broadcast against each other (..., 4) xyxy."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter + eps)


def ciou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of matched boxes (n, 4) xyxy."""
    iou = box_iou_pairs(a, b, eps)
    cw = torch.maximum(a[:, 2], b[:, 2]) - torch.minimum(a[:, 0], b[:, 0])
    ch = torch.maximum(a[:, 3], b[:, 3]) - torch.minimum(a[:, 1], b[:, 1])
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = ((a[:, 0] + a[:, 2] - b[:, 0] - b[:, 2]) ** 2 + (a[:, 1] + a[:, 3] - b[:, 1] - b[:, 3]) ** 2) / 4
    wa, ha = a[:, 2] - a[:, 0], (a[:, 3] - a[:, 1]).clamp(min=eps)
    wb, hb = b[:, 2] - b[:, 0], (b[:, 3] - b[:, 1]).clamp(min=eps)
    v = (4 / math.pi ** 2) * (torch.atan(wb / hb) - torch.atan(wa / ha)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


@torch.no_grad()
def assign(scores, boxes, points, gt_boxes, gt_cls, topk: int = 10, alpha: float = 1.0, beta: float = 6.0):
    """Task-aligned assignment.

    scores (B, A, C) sigmoid, boxes (B, A, 4) xyxy, points (A, 2), gt_boxes (B, G, 4),
    gt_cls (B, G) with -1 for padding. Returns target boxes (B, A, 4), target scores (B, A, C)
    and the foreground mask (B, A).
    """
    b, a, c = scores.shape
    g = gt_boxes.shape[1]
    valid = gt_cls >= 0  # (B, G)
    px, py = points[:, 0], points[:, 1]
    inside = ((px[None, None] > gt_boxes[..., 0:1]) & (px[None, None] < gt_boxes[..., 2:3]) &
              (py[None, None] > gt_boxes[..., 1:2]) & (py[None, None] < gt_boxes[..., 3:4]))
    inside &= valid[..., None]  # (B, G, A)
    overlaps = box_iou_pairs(gt_boxes[:, :, None], boxes[:, None]).clamp(min=0) * inside
    cls_idx = gt_cls.clamp(min=0)
    cls_scores = scores.gather(2, cls_idx[:, None, :].expand(b, a, g)).transpose(1, 2)  # (B, G, A)
    align = cls_scores.pow(alpha) * overlaps.pow(beta) * inside
    k = min(topk, a)
    top = align.topk(k, dim=-1).indices
    mask = torch.zeros_like(inside).scatter_(-1, top, True) & inside
    # an anchor claimed by several boxes goes to the one it overlaps most
    multi = mask.sum(1, keepdim=True) > 1
    if multi.any():
        best = overlaps.argmax(1, keepdim=True)
        one = torch.zeros_like(mask).scatter_(1, best, True)
        mask = torch.where(multi, one & mask.any(1, keepdim=True), mask)
    fg = mask.any(1)  # (B, A)
    gt_idx = mask.float().argmax(1)  # (B, A)
    t_boxes = gt_boxes.gather(1, gt_idx[..., None].expand(b, a, 4))
    t_cls = cls_idx.gather(1, gt_idx)
    align = align * mask
    norm = (align * (overlaps * mask).amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + 1e-9)).amax(1)
    t_scores = F.one_hot(t_cls, c).float() * (norm * fg)[..., None]
    return t_boxes, t_scores, fg


def detection_loss(ltrb, logits, points, gt_boxes, gt_cls, box_gain: float = 7.5, cls_gain: float = 0.5):
    """Loss of raw outputs ``ltrb`` (B, A, 4) pixels and ``logits`` (B, A, C); returns
    (total, parts dict)."""
    ltrb, logits = ltrb.float(), logits.float()
    boxes = torch.cat((points - ltrb[..., :2], points + ltrb[..., 2:]), -1)
    t_boxes, t_scores, fg = assign(logits.detach().sigmoid(), boxes.detach(), points, gt_boxes, gt_cls)
    norm = t_scores.sum().clamp(min=1)
    l_cls = F.binary_cross_entropy_with_logits(logits, t_scores, reduction="sum") / norm
    if fg.any():
        w = t_scores.sum(-1)[fg]
        l_box = ((1 - ciou(boxes[fg], t_boxes[fg])) * w).sum() / norm
    else:
        l_box = boxes.sum() * 0
    total = box_gain * l_box + cls_gain * l_cls
    return total, {"box": float(l_box.detach()), "cls": float(l_cls.detach())}
