"""Privacy redaction on real pixels: masks exactly black, a real face and a real person blurred
beyond recovery, and a filter that cannot load its cascades refuses to start."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from linli.errors import LinliError
from linli.vision.privacy import FRONTAL, PROFILE, PrivacyError, PrivacyFilter, destroy

DATA = Path(__file__).parent / "data"
PILE = DATA / "detector" / "images" / "003353.jpg"
PERSON = DATA / "vision" / "002578.jpg"  # a man standing beside a bin (CC BY 4.0, see ATTRIBUTION)
FACE_BOX = (365, 45, 467, 147)  # where the face lands in scene_with_face()


def scene_with_face():
    """A real street frame with the head of NASA's astronaut portrait (public domain, shipped in
    scikit-image) in its top right corner."""
    from skimage import data

    img = cv2.imread(str(PILE))
    img[20:170, 340:490] = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[40:190, 150:300]
    return img


def detail(a):
    """Variance of the Laplacian: how much fine detail (edges, features) a region holds."""
    return cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()


def overlap(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / ((b[2] - b[0]) * (b[3] - b[1]))


@pytest.fixture(scope="module")
def pf():
    return PrivacyFilter()


def test_a_real_face_is_found_and_destroyed(pf):
    frame = scene_with_face()
    keep = frame.copy()
    out, found = pf.redact(frame)
    assert np.array_equal(frame, keep)  # the input is never modified
    assert found.as_dict()["faces"] >= 1 and found.masks == 0
    assert max(overlap(b, FACE_BOX) for b in found.faces) > 0.95  # the whole face, with margin
    x1, y1, x2, y2 = FACE_BOX
    before, after = frame[y1:y2, x1:x2], out[y1:y2, x1:x2]
    assert after.astype(float).var() < before.astype(float).var() / 5
    assert detail(after) < detail(before) / 50
    # Far from any found box the frame is untouched.
    assert np.array_equal(out[470:, :100], frame[470:, :100])


def test_a_real_person_is_found_and_destroyed(pf):
    frame = cv2.imread(str(PERSON))
    out, found = pf.redact(frame)
    assert found.as_dict()["people"] >= 1
    body = (300, 90, 470, 500)  # the man, head to feet (checked by eye on the image)
    assert max(overlap(b, body) for b in found.people) > 0.95
    x1, y1, x2, y2 = body
    assert detail(out[y1:y2, x1:x2]) < detail(frame[y1:y2, x1:x2]) / 50
    # The bin beside him stays sharp: the snapshot still shows what it is for.
    assert detail(out[250:480, 90:230]) > detail(frame[250:480, 90:230]) * 0.9


def test_masks_are_exactly_black_and_counted(pf):
    frame = scene_with_face()
    masks = [[[10, 10], [200, 10], [200, 150], [10, 150]], [[250, 300], [400, 460], [250, 460]]]
    out, found = pf.redact(frame, masks)
    inside = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.asarray(m, np.int32) for m in masks], 1)
    assert out[inside.astype(bool)].max() == 0 and frame[inside.astype(bool)].max() > 100
    assert found.as_dict() == {"faces": len(found.faces), "people": len(found.people), "masks": 2}
    # Masked first: a face behind a mask is not even looked for (nothing of it is left).
    face_mask = [[340, 20], [490, 20], [490, 170], [340, 170]]
    out, found = pf.redact(frame, [face_mask])
    assert not any(overlap(b, FACE_BOX) > 0.5 for b in found.faces)
    assert out[20:170, 340:490].max() == 0


@pytest.mark.parametrize("method", ["pixelate", "fill"])
def test_other_methods_destroy_detail_too(method):
    frame = scene_with_face()
    out = frame.copy()
    destroy(out, FACE_BOX, method)
    x1, y1, x2, y2 = FACE_BOX
    colours = len(np.unique(out[y1:y2, x1:x2].reshape(-1, 3), axis=0))
    assert colours == 1 if method == "fill" else colours <= 36  # 6 x 6 blocks at most
    assert len(np.unique(frame[y1:y2, x1:x2].reshape(-1, 3), axis=0)) > 1000


def test_detectors_off_keeps_masks_only():
    frame = scene_with_face()
    out, found = PrivacyFilter(faces=False, people=False).redact(frame, [[[0, 0], [20, 0], [20, 20]]])
    assert found.as_dict() == {"faces": 0, "people": 0, "masks": 1}
    assert np.array_equal(out[100:, 100:], frame[100:, 100:])


def test_missing_or_corrupt_cascades_refuse_to_start(tmp_path):
    with pytest.raises(PrivacyError, match="missing; without it faces would go out unblurred"):
        PrivacyFilter(cascade_dir=str(tmp_path))
    src = Path(cv2.data.haarcascades)
    shutil.copy(src / FRONTAL, tmp_path / FRONTAL)
    (tmp_path / PROFILE).write_text("<opencv_storage><cascade>truncated")
    with pytest.raises(PrivacyError, match="cannot be loaded"):
        PrivacyFilter(cascade_dir=str(tmp_path))
    assert issubclass(PrivacyError, LinliError)
    with pytest.raises(ValueError, match="method"):
        PrivacyFilter(method="smudge")


def test_a_bad_frame_is_refused(pf):
    with pytest.raises(PrivacyError, match="H x W x 3 uint8"):
        pf.redact(np.zeros((10, 10), np.uint8))


def test_a_pipeline_with_snapshots_refuses_to_start_without_cascades(tmp_path, monkeypatch):
    from linli.vision.pipeline import CameraSpec, VisionPipeline
    from linli.vision.snapshots import SnapshotStore
    from linli.vision.sources import FolderSource

    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path))
    with pytest.raises(PrivacyError, match="missing"):
        VisionPipeline([(CameraSpec("gate"), FolderSource(str(PILE.parent)))], None, None, snapshots=SnapshotStore(tmp_path / "snap"))
