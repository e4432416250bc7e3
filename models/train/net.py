"""The garbage detector network: a small YOLO-style anchor-free detector for a Pi CPU.

Backbone of plain 3x3 convolutions with CSP blocks (plain convs run faster than depthwise ones
on ARM and x86 CPUs at this size, and quantize cleanly to int8 with ReLU), a PAN neck and
decoupled heads on strides 8, 16 and 32. The exported graph decodes its own boxes and writes the
Ultralytics layout ``[1, 4 + nc, N]`` (cx, cy, w, h in input pixels, then class scores), so the
gateway decodes our model and operators' YOLOv8/YOLO11 models with the same code.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

STRIDES = (8, 16, 32)


class ConvBN(nn.Module):
    """Conv + BatchNorm + ReLU (ReLU: fused by onnxruntime, fp32 and int8)."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True):
        super().__init__()
        self.cv1 = ConvBN(c, c, 3)
        self.cv2 = ConvBN(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block with n bottlenecks on half the channels (as in YOLOv8)."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        self.c = c_out // 2
        self.cv1 = ConvBN(c_in, 2 * self.c, 1)
        self.cv2 = ConvBN((2 + n) * self.c, c_out, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int = 5):
        super().__init__()
        c_ = c_in // 2
        self.cv1 = ConvBN(c_in, c_, 1)
        self.cv2 = ConvBN(c_ * 4, c_out, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Head(nn.Module):
    """Decoupled head for one stride: box distances (l, t, r, b) and class logits."""

    def __init__(self, c_in: int, nc: int, c_box: int, c_cls: int):
        super().__init__()
        self.box = nn.Sequential(ConvBN(c_in, c_box, 3), nn.Conv2d(c_box, 4, 1))
        self.cls = nn.Sequential(ConvBN(c_in, c_cls, 3), nn.Conv2d(c_cls, nc, 1))

    def forward(self, x):
        return self.box(x), self.cls(x)


class Detector(nn.Module):
    """Backbone + PAN neck + heads. ``forward`` returns raw per-anchor outputs for the loss:
    ``ltrb`` (B, N, 4) distances in input pixels and ``logits`` (B, N, nc)."""

    def __init__(self, nc: int = 3, width: tuple[int, ...] = (16, 32, 64, 128, 256),
                 depth: tuple[int, ...] = (1, 2, 2, 1), head_ch: int = 64):
        super().__init__()
        w0, w1, w2, w3, w4 = width
        d1, d2, d3, d4 = depth
        self.nc = nc
        self.stem = ConvBN(3, w0, 3, 2)
        self.s1 = nn.Sequential(ConvBN(w0, w1, 3, 2), C2f(w1, w1, d1))
        self.s2 = nn.Sequential(ConvBN(w1, w2, 3, 2), C2f(w2, w2, d2))            # P3, /8
        self.s3 = nn.Sequential(ConvBN(w2, w3, 3, 2), C2f(w3, w3, d3))            # P4, /16
        self.s4 = nn.Sequential(ConvBN(w3, w4, 3, 2), C2f(w4, w4, d4), SPPF(w4, w4))  # P5, /32
        self.up_p4 = C2f(w4 + w3, w3, 1, shortcut=False)
        self.up_p3 = C2f(w3 + w2, w2, 1, shortcut=False)
        self.down3 = ConvBN(w2, w2, 3, 2)
        self.pan_p4 = C2f(w2 + w3, w3, 1, shortcut=False)
        self.down4 = ConvBN(w3, w3, 3, 2)
        self.pan_p5 = C2f(w3 + w4, w4, 1, shortcut=False)
        self.heads = nn.ModuleList(Head(c, nc, head_ch, head_ch) for c in (w2, w3, w4))
        self._init_biases()

    def _init_biases(self):
        for h in self.heads:
            nn.init.constant_(h.cls[-1].bias, -math.log((1 - 0.01) / 0.01))
            nn.init.constant_(h.box[-1].bias, 1.0)  # softplus(1) ~ 1.3 strides each side

    def features(self, x):
        x = self.s1(self.stem(x))
        p3 = self.s2(x)
        p4 = self.s3(p3)
        p5 = self.s4(p4)
        u4 = self.up_p4(torch.cat((F.interpolate(p5, scale_factor=2.0, mode="nearest"), p4), 1))
        n3 = self.up_p3(torch.cat((F.interpolate(u4, scale_factor=2.0, mode="nearest"), p3), 1))
        n4 = self.pan_p4(torch.cat((self.down3(n3), u4), 1))
        n5 = self.pan_p5(torch.cat((self.down4(n4), p5), 1))
        return n3, n4, n5

    def forward(self, x):
        boxes, logits = [], []
        for feat, head, s in zip(self.features(x), self.heads, STRIDES):
            b, c = head(feat)
            boxes.append((F.softplus(b) * s).flatten(2))
            logits.append(c.flatten(2))
        return torch.cat(boxes, 2).transpose(1, 2), torch.cat(logits, 2).transpose(1, 2)


def anchor_points(h: int, w: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres (N, 2) in input pixels and their strides (N, 1), in head order."""
    pts, strides = [], []
    for s in STRIDES:
        ys, xs = torch.meshgrid(torch.arange(h // s, device=device), torch.arange(w // s, device=device),
                                indexing="ij")
        p = torch.stack((xs, ys), -1).reshape(-1, 2).float().add(0.5).mul(s)
        pts.append(p)
        strides.append(torch.full((p.shape[0], 1), float(s), device=device))
    return torch.cat(pts), torch.cat(strides)


class Exportable(nn.Module):
    """Wraps a Detector for inference: outputs ``[1, 4 + nc, N]`` (cx, cy, w, h, scores...)."""

    def __init__(self, net: Detector, size: int):
        super().__init__()
        self.net = net
        pts, _ = anchor_points(size, size)
        self.register_buffer("pts", pts, persistent=False)

    def forward(self, x):
        ltrb, logits = self.net(x)
        lt, rb = ltrb[..., :2], ltrb[..., 2:]
        c = self.pts + (rb - lt) / 2
        wh = lt + rb
        return torch.cat((c, wh, logits.sigmoid()), 2).transpose(1, 2)
