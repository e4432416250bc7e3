"""The pile lifecycle tracker (issue 6 item 3) on scripted sequences of detections.

Every event the tracker emits is checked against its published JSON Schema, as a backend sees it
(the CloudEvent the outbox would store).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from linli.contract import Contract
from linli.errors import ConfigError
from linli.vision.tracker import CameraTracker, TrackerConfig, TrackerStateError, iou

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"
CAM = "gate-north"
PILE = (400.0, 300.0, 560.0, 440.0)
_validators: dict = {}


def _validate(ev):
    if "jsonschema" not in _validators:
        try:
            import jsonschema
        except ImportError as exc:
            if os.environ.get("LINLI_REQUIRE_ALL"):
                pytest.fail("jsonschema is not installed (LINLI_REQUIRE_ALL is set): %s" % exc, pytrace=False)
            pytest.skip("jsonschema is not installed: pip install jsonschema")
        _validators["jsonschema"] = jsonschema
    js = _validators["jsonschema"]
    if ev.type not in _validators:
        schema = json.loads((SCHEMAS / ("%s.json" % ev.type)).read_text())
        cls = js.validators.validator_for(schema)
        _validators[ev.type] = cls(schema, format_checker=cls.FORMAT_CHECKER)
    ce = Contract("xinhua-1", "gw-01").cloudevent(ev, seq=1, chain="0" * 16, prevhash="0" * 64)
    _validators[ev.type].validate(ce)


def det(box, label="garbage", score=0.8):
    return {"label": label, "score": score, "box": tuple(box)}


def run(trk, script):
    """Feed (t, detections) samples; return every event, each validated against its schema."""
    out = []
    for t, dets in script:
        for ev in trk.update(t, dets):
            _validate(ev)
            assert ev.source == "camera/%s" % trk.camera and ev.time == t
            out.append(ev)
    return out


def every(step, start, stop, dets_at):
    """Samples at start, start+step, ... < stop; ``dets_at(i, t)`` gives the detections."""
    return [(start + i * step, dets_at(i, start + i * step)) for i in range(int((stop - start) / step))]


def types(events):
    return [e.type for e in events]


def shift(box, dx=0.0, dy=0.0):
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


# -- confirmation --------------------------------------------------------------------------------------
def test_a_person_crossing_with_a_bag_gives_no_event():
    trk = CameraTracker(CAM)
    bag = (0.0, 300.0, 60.0, 380.0)
    script = [(0, [det(bag)]), (5, [det(shift(bag, 150))])] + every(5, 10, 200, lambda i, t: [])
    assert run(trk, script) == []
    assert trk.to_state()["tracks"] == []  # tentative tracks expire


def test_a_pile_appearing_is_detected_exactly_once_after_confirmation():
    trk = CameraTracker(CAM)
    evs = run(trk, every(5, 1000, 1300, lambda i, t: [det(PILE, score=0.83)]))
    assert types(evs) == ["garbage.pile.detected"]
    d = evs[0].data
    assert evs[0].time == 1020  # K=3 of M=5 samples, and T=20 s after the first sighting
    assert d == {"camera": CAM, "track_id": 1, "box": list(PILE), "score": 0.83, "dwell_s": 20.0, "first_seen": 1000.0}


def test_confirmation_needs_k_of_the_last_m_samples():
    trk = CameraTracker(CAM, TrackerConfig(confirm_hits=3, confirm_window=5, confirm_min_s=0))
    seen = [1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 1]  # never 3 in 5 until the end
    evs = run(trk, [(i * 5, [det(PILE)] if s else []) for i, s in enumerate(seen)])
    assert [e.time for e in evs] == [55]  # samples 8, 9, 11: 3 hits in the last 5


def test_no_flapping_through_detector_misses():
    trk = CameraTracker(CAM)
    evs = run(trk, every(5, 0, 600, lambda i, t: [] if i % 3 == 2 else [det(PILE)]))
    assert types(evs) == ["garbage.pile.detected"]


def test_absent_for_many_samples_but_not_long_enough_is_not_cleared():
    trk = CameraTracker(CAM)  # clear after 5 misses AND 60 s
    script = every(5, 0, 100, lambda i, t: [det(PILE)]) + every(5, 100, 150, lambda i, t: []) \
        + every(5, 150, 300, lambda i, t: [det(PILE)])
    evs = run(trk, script)
    assert types(evs) == ["garbage.pile.detected"]
    assert trk.to_state()["tracks"][0]["id"] == 1


def test_jitter_of_a_few_pixels_stays_one_track():
    rng = random.Random(6)
    trk = CameraTracker(CAM)
    evs = run(trk, every(5, 0, 300, lambda i, t: [det([v + rng.uniform(-6, 6) for v in PILE])]))
    assert types(evs) == ["garbage.pile.detected"]
    assert [tr["id"] for tr in trk.to_state()["tracks"]] == [1]


def test_a_moving_camera_shift_is_followed_by_centre_distance():
    big = (100.0, 100.0, 200.0, 200.0)
    moved = shift(big, 55, 0)  # IoU 0.29 < 0.3, centre moved 0.55 box sizes
    assert iou(big, moved) < 0.3
    trk = CameraTracker(CAM, TrackerConfig(centre_tol=0.6))
    run(trk, [(0, [det(big)]), (5, [det(moved)])])
    assert [tr["id"] for tr in trk.to_state()["tracks"]] == [1]
    trk = CameraTracker(CAM, TrackerConfig(centre_tol=0.5))
    run(trk, [(0, [det(big)]), (5, [det(moved)])])
    assert [tr["id"] for tr in trk.to_state()["tracks"]] == [1, 2]


def test_a_small_bag_beside_a_pile_does_not_take_over_its_track():
    trk = CameraTracker(CAM, TrackerConfig(centre_tol=1.0))
    big = (100.0, 100.0, 300.0, 300.0)
    bag = (260.0, 250.0, 300.0, 290.0)  # centre near, a twenty-fifth of the area, inside the pile
    run(trk, [(0, [det(big)]), (5, [det(big), det(bag)])])
    assert [tr["box"] for tr in trk.to_state()["tracks"]] == [list(big)]


def test_a_partial_second_box_of_one_pile_is_not_a_second_pile():
    part = (420.0, 320.0, 500.0, 430.0)  # inside PILE
    trk = CameraTracker(CAM)
    evs = run(trk, every(5, 0, 300, lambda i, t: [det(PILE), det(part, score=0.5)]))
    assert types(evs) == ["garbage.pile.detected"]
    assert len(trk.to_state()["tracks"]) == 1


def test_a_pile_that_grows_a_lot_at_once_keeps_its_track():
    huge = (300.0, 200.0, 760.0, 560.0)  # contains PILE, 7 times its area
    trk = CameraTracker(CAM)
    evs = run(trk, every(5, 0, 100, lambda i, t: [det(PILE)]) + every(5, 100, 200, lambda i, t: [det(huge)]))
    assert types(evs) == ["garbage.pile.detected", "garbage.pile.updated"]
    assert {e.data["track_id"] for e in evs} == {1}


# -- updates and clearing ------------------------------------------------------------------------------
def test_growth_gives_one_update():
    grown = (380.0, 280.0, 600.0, 480.0)  # area x1.96
    trk = CameraTracker(CAM)
    evs = run(trk, every(5, 0, 120, lambda i, t: [det(PILE)]) + every(5, 120, 600, lambda i, t: [det(grown, score=0.9)]))
    assert types(evs) == ["garbage.pile.detected", "garbage.pile.updated"]
    up = evs[1]
    assert up.time == 125  # held for 2 sightings, >= 60 s after the detected
    assert up.data["box"] == list(grown) and up.data["dwell_s"] == 125.0 and up.data["score"] == 0.9


def test_updates_respect_the_minimum_interval():
    trk = CameraTracker(CAM)
    b1, b2, b3 = PILE, (380.0, 280.0, 600.0, 480.0), (300.0, 200.0, 700.0, 560.0)
    script = every(5, 0, 25, lambda i, t: [det(b1)]) + every(5, 25, 40, lambda i, t: [det(b2)]) \
        + every(5, 40, 200, lambda i, t: [det(b3)])
    evs = run(trk, script)
    assert types(evs) == ["garbage.pile.detected", "garbage.pile.updated"]
    assert evs[1].time == 80 and evs[1].data["box"] == list(b3)  # 60 s after the detected at 20


def test_a_single_odd_box_is_not_an_update():
    grown = (380.0, 280.0, 600.0, 480.0)
    trk = CameraTracker(CAM)
    evs = run(trk, every(5, 0, 600, lambda i, t: [det(grown if i % 4 == 3 else PILE)]))
    assert types(evs) == ["garbage.pile.detected"]


def test_removed_pile_is_cleared_once_with_its_dwell_time():
    trk = CameraTracker(CAM)
    script = every(5, 1000, 1305, lambda i, t: [det(PILE)]) + every(5, 1305, 1600, lambda i, t: [])
    evs = run(trk, script)
    assert types(evs) == ["garbage.pile.detected", "garbage.pile.cleared"]
    cl = evs[1]
    assert cl.time == 1360  # 5 misses and 60 s after the last sighting at 1300
    assert cl.data["dwell_s"] == 300.0  # first sighting 1000 -> last sighting 1300
    assert cl.data["first_seen"] == 1000.0 and cl.data["last_seen"] == 1300.0
    assert cl.data["track_id"] == evs[0].data["track_id"] == 1
    assert trk.to_state()["tracks"] == []


def test_a_pile_back_after_clearing_is_a_new_track():
    trk = CameraTracker(CAM)
    script = every(5, 0, 100, lambda i, t: [det(PILE)]) + every(5, 100, 200, lambda i, t: []) \
        + every(5, 200, 300, lambda i, t: [det(PILE)])
    evs = run(trk, script)
    assert types(evs) == ["garbage.pile.detected", "garbage.pile.cleared", "garbage.pile.detected"]
    assert [e.data["track_id"] for e in evs] == [1, 1, 2]


def test_two_piles_are_two_tracks():
    other = (50.0, 400.0, 200.0, 470.0)
    trk = CameraTracker(CAM)
    script = every(5, 0, 100, lambda i, t: [det(PILE), det(other, score=0.7)]) \
        + every(5, 100, 200, lambda i, t: [det(other, score=0.7)]) + every(5, 200, 300, lambda i, t: [])
    evs = run(trk, script)
    assert [(e.type, e.data["track_id"]) for e in evs] == [
        ("garbage.pile.detected", 1), ("garbage.pile.detected", 2),
        ("garbage.pile.cleared", 1), ("garbage.pile.cleared", 2),
    ]
    assert evs[2].data["dwell_s"] == 95.0 and evs[3].data["dwell_s"] == 195.0


# -- restarts --------------------------------------------------------------------------------------------
def restart(trk, config=None):
    return CameraTracker.from_state(json.loads(json.dumps(trk.to_state())), config, camera=trk.camera)


@pytest.mark.parametrize("at", [10, 100])  # before and after confirmation
def test_a_restart_mid_way_gives_no_duplicate(at):
    trk = CameraTracker(CAM)
    evs = run(trk, every(5, 0, at, lambda i, t: [det(PILE)]))
    trk = restart(trk)
    evs += run(trk, every(5, at, 300, lambda i, t: [det(PILE)]) + every(5, 300, 400, lambda i, t: []))
    assert types(evs) == ["garbage.pile.detected", "garbage.pile.cleared"]
    assert evs[0].time == 20 and evs[1].data["dwell_s"] == 295.0
    assert {e.data["track_id"] for e in evs} == {1}


def test_a_gateway_down_for_a_while_keeps_the_pile():
    trk = CameraTracker(CAM)
    evs = run(trk, every(5, 0, 100, lambda i, t: [det(PILE)]))
    trk = restart(trk)
    evs += run(trk, every(5, 3600, 3700, lambda i, t: [det(shift(PILE, 3, -2))]))
    assert types(evs) == ["garbage.pile.detected"]


def test_track_ids_are_not_reused_after_a_restart():
    trk = CameraTracker(CAM)
    run(trk, every(5, 0, 100, lambda i, t: [det(PILE)]) + every(5, 100, 200, lambda i, t: []))
    assert trk.to_state()["tracks"] == []
    trk = restart(trk)
    evs = run(trk, every(5, 200, 300, lambda i, t: [det(PILE)]))
    assert [e.data["track_id"] for e in evs] == [2]


def test_bad_state_is_refused():
    state = CameraTracker(CAM).to_state()
    with pytest.raises(TrackerStateError, match="version"):
        CameraTracker.from_state(dict(state, version=99))
    with pytest.raises(TrackerStateError, match="camera"):
        CameraTracker.from_state(state, camera="yard-2")
    with pytest.raises(TrackerStateError, match="malformed"):
        CameraTracker.from_state(dict(state, tracks=[{"id": 1}]))
    assert isinstance(TrackerStateError("x"), ValueError)


# -- overflowing bins ------------------------------------------------------------------------------------
BINS = {"bin-0007": [100, 80, 300, 320], "bin-0008": [[400, 80], [600, 80], [600, 320], [400, 320]]}


def test_an_overflowing_bin_is_linked_to_its_bin_node():
    trk = CameraTracker("yard-2", TrackerConfig(bins=BINS))
    over = (420.0, 60.0, 590.0, 300.0)
    evs = run(trk, every(5, 0, 100, lambda i, t: [det(over, "overflow", 0.77), det((110, 90, 290, 310), "garbage_bin", 0.9)])
              + every(5, 100, 200, lambda i, t: []))
    assert types(evs) == ["bin.overflow.detected", "bin.overflow.cleared"]
    assert [e.data["bin"] for e in evs] == ["bin-0008", "bin-0008"]
    assert evs[1].data["dwell_s"] == 95.0
    assert len({e.data["track_id"] for e in evs}) == 1


def test_bin_mapping_containing_then_overlapping_then_none():
    trk = CameraTracker("yard-2", TrackerConfig(bins=BINS))
    assert trk.bin_for((150, 100, 250, 300)) == "bin-0007"  # centre inside
    assert trk.bin_for((280, 250, 380, 400)) == "bin-0007"  # overlaps only bin-0007's region
    assert trk.bin_for((280, 250, 420, 400)) == "bin-0007"  # overlaps both: nearest centroid
    assert trk.bin_for((700, 400, 800, 500)) is None
    trk = CameraTracker("yard-2")
    evs = run(trk, every(5, 0, 30, lambda i, t: [det((700, 400, 800, 500), "overflow")]))
    assert [e.data["bin"] for e in evs] == [None]


def test_garbage_bins_are_ignored_unless_configured():
    box = (110.0, 90.0, 290.0, 310.0)
    trk = CameraTracker(CAM)
    assert run(trk, every(5, 0, 100, lambda i, t: [det(box, "garbage_bin")])) == []
    trk = CameraTracker(CAM, TrackerConfig(labels={"garbage_bin": "pile"}))
    assert types(run(trk, every(5, 0, 100, lambda i, t: [det(box, "garbage_bin")]))) == ["garbage.pile.detected"]


def test_labels_are_associated_separately():
    trk = CameraTracker(CAM)
    run(trk, [(0, [det(PILE, "garbage"), det(PILE, "overflow")])])
    assert sorted((tr["label"], tr["kind"]) for tr in trk.to_state()["tracks"]) == [("garbage", "pile"), ("overflow", "overflow")]


# -- inputs and config -----------------------------------------------------------------------------------
def test_detector_objects_are_accepted():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Detection:  # the shape of linli.detector.Detection, without importing OpenCV here
        label: str
        score: float
        box: tuple
        class_id: int = 0

    trk = CameraTracker(CAM)
    evs = run(trk, every(5, 0, 30, lambda i, t: [Detection("garbage", 0.8, PILE)]))
    assert types(evs) == ["garbage.pile.detected"]


def test_a_clock_stepping_back_does_not_break_dwell():
    trk = CameraTracker(CAM)
    evs = run(trk, every(5, 0, 20, lambda i, t: [det(PILE)]))
    evs += trk.update(10, [det(PILE)])  # counts as t=15
    evs += run(trk, every(5, 20, 30, lambda i, t: [det(PILE)]))
    assert types(evs) == ["garbage.pile.detected"] and evs[0].data["dwell_s"] == 20.0


@pytest.mark.parametrize("bad, key", [
    (dict(confirm_hits=0), "tracker.confirm_hits"),
    (dict(confirm_hits=6), "tracker.confirm_window"),
    (dict(confirm_min_s=-1), "tracker.confirm_min_s"),
    (dict(clear_misses=True), "tracker.clear_misses"),
    (dict(iou_min=0), "tracker.iou_min"),
    (dict(update_ratio=1.0), "tracker.update_ratio"),
    (dict(labels={"garbage": "heap"}), "tracker.labels.garbage"),
    (dict(bins={"bin-0007": [10, 10, 5, 20]}), "tracker.bins.bin-0007"),
    (dict(bins={"bin 7": [0, 0, 5, 5]}), "tracker.bins"),
    (dict(clear_min_s=float("nan")), "tracker.clear_min_s"),
])
def test_config_errors_name_the_key(bad, key):
    with pytest.raises(ConfigError) as info:
        TrackerConfig(**bad)
    assert info.value.key == key and isinstance(info.value, ValueError)


def test_config_from_a_table():
    cfg = TrackerConfig.from_dict({"confirm_hits": 2, "bins": {"bin-0007": [0, 0, 10, 10]}}, key="cameras.yard-2.tracker")
    assert cfg.confirm_hits == 2 and cfg.key == "cameras.yard-2.tracker"
    with pytest.raises(ConfigError) as info:
        TrackerConfig.from_dict({"confirm_hitz": 2}, key="cameras.yard-2.tracker")
    assert info.value.key == "cameras.yard-2.tracker.confirm_hitz"


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        CameraTracker("gate north")
    trk = CameraTracker(CAM)
    with pytest.raises(ValueError, match="box"):
        trk.update(0, [det((10, 10, 5, 20))])
    with pytest.raises(ValueError, match="time"):
        trk.update(float("nan"), [])


def test_tracks_are_bounded():
    trk = CameraTracker(CAM, TrackerConfig(max_tracks=3))
    run(trk, [(0, [det((i * 100.0, 0.0, i * 100.0 + 50, 50.0)) for i in range(10)])])
    assert len(trk.to_state()["tracks"]) == 3


def test_a_state_with_a_degenerate_box_is_refused():
    trk = CameraTracker(CAM)
    run(trk, [(0, [det(PILE)])])
    state = trk.to_state()
    state["tracks"][0]["box"] = [10, 10, 10, 20]
    with pytest.raises(TrackerStateError, match="malformed"):
        CameraTracker.from_state(state)
