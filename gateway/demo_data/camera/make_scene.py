"""Rebuilds the demo camera's two frames from the garbage-cn dataset (see ATTRIBUTION).

Run from the repository root, with ../shared/datasets/garbage-cn present:

    .venv/bin/python gateway/demo_data/camera/make_scene.py ../shared/datasets/garbage-cn

clean.jpg is the dataset's image 002530 unchanged (re-encoded). pile.jpg is the same image with
the labelled garbage pile of image 001587 (its box, 8 px of margin) pasted on the pavement at
(30, 360) with feathered edges. Not part of the installed package; the demo uses the JPEGs.
"""

import sys
from pathlib import Path

import cv2
import numpy as np

CLEAN, PILE_FROM, AT, PAD, FEATHER = "002530", "001587", (30, 360), 8, 0.18


def label_box(path: Path, cls: int = 0) -> tuple[int, int, int, int]:
    for line in path.read_text().splitlines():
        p = line.split()
        if p and int(p[0]) == cls:
            cx, cy, w, h = (float(v) * 512 for v in p[1:])
            return int(cx - w / 2), int(cy - h / 2), int(cx + w / 2), int(cy + h / 2)
    raise SystemExit("%s has no box of class %d" % (path, cls))


def main(root: Path, out: Path) -> None:
    bg = cv2.imread(str(root / "images" / (CLEAN + ".jpg")))
    fg = cv2.imread(str(root / "images" / (PILE_FROM + ".jpg")))
    x1, y1, x2, y2 = label_box(root / "labels" / (PILE_FROM + ".txt"))
    x1, y1, x2, y2 = max(0, x1 - PAD), max(0, y1 - PAD), min(512, x2 + PAD), min(512, y2 + PAD)
    patch = fg[y1:y2, x1:x2]
    X, Y = AT
    h, w = min(patch.shape[0], bg.shape[0] - Y), patch.shape[1]
    patch = patch[:h]
    # Feathered edges: the pile's own surroundings fade into the pavement instead of a hard seam.
    alpha = np.zeros((h, w), np.float32)
    m = max(3, int(min(h, w) * FEATHER))
    alpha[m:-m, m:-m] = 1.0
    alpha = cv2.GaussianBlur(alpha, (0, 0), m / 2)[..., None]
    pile = bg.copy()
    roi = pile[Y:Y + h, X:X + w].astype(np.float32)
    pile[Y:Y + h, X:X + w] = (patch * alpha + roi * (1 - alpha)).astype(np.uint8)
    cv2.imwrite(str(out / "clean.jpg"), bg, [cv2.IMWRITE_JPEG_QUALITY, 85])
    cv2.imwrite(str(out / "pile.jpg"), pile, [cv2.IMWRITE_JPEG_QUALITY, 85])


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).resolve().parent)
