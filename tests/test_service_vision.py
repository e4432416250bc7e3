"""`linli run` with cameras: real frames -> pile events and their snapshots upstream, snapshots
that wait for the uplink, a broken model that leaves the rest of the gateway running, and the
camera status file that `linli doctor` reads."""

import hashlib
import json
import queue
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from linli.config import Config
from linli.link import Kind, Role

from gateway_peer import GatewayThread, PeerNode, Upstream, gateway_toml

IMAGES = Path(__file__).parent / "data" / "detector" / "images"
PILE, NO_PILE = "003353.jpg", "002456.jpg"  # a pile on the ground; bins only
HEALTH_KEYS = {"state", "fps", "decode_ms", "inference_ms", "last_frame_age_s", "reconnects", "last_error"}

# Fast lifecycle: the frames come every 0.2 s instead of every few seconds.
CAMERA = """
[[camera]]
name = "gate"
url = "folder:frames"
interval_s = 0.2
watchdog_s = 5
[camera.tracker]
confirm_hits = 2
confirm_window = 3
confirm_min_s = 0.3
clear_misses = 3
clear_min_s = 0.5
"""


def frames(folder: Path, sequence) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(sequence):
        shutil.copyfile(IMAGES / name, folder / ("%03d.jpg" % i))
    return folder


def make_config(tmp_path, local, upstream=None, extra="", sequence=(NO_PILE,) * 2 + (PILE,) * 30) -> Config:
    frames(tmp_path / "frames", sequence)
    p = tmp_path / "gateway.toml"
    p.write_text(gateway_toml(tmp_path / "data", local, upstream, CAMERA + extra))
    return Config.load(p)  # the folder URL is relative to the file


def snapshot_refs(data: dict) -> list[dict]:
    """The snapshot references an event carries (each has id, kind, sha256, bytes)."""
    refs = data.get("snapshots", data.get("snapshot")) or []
    return refs if isinstance(refs, list) else [refs]


def wait_event(gw: GatewayThread, type_: str, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            e = gw.events.get(timeout=max(0.05, end - time.monotonic()))
        except queue.Empty:
            break
        if e.type == type_:
            return e
    raise AssertionError("no %s event within %.0f s" % (type_, timeout))


def collect(probe, until, timeout: float = 30.0) -> list:
    """Messages from ``probe`` until ``until(messages)`` holds."""
    got: list = []
    end = time.monotonic() + timeout
    while not until(got):
        left = end - time.monotonic()
        assert left > 0, "timed out; got %s" % [m.topic for m in got]
        try:
            got.append(probe.get(left))
        except queue.Empty:
            pass
    return got


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff" and cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None


def status(cfg: Config) -> dict:
    return json.loads((cfg.gateway.data_dir / "status" / "cameras.json").read_text())


def test_pile_event_and_its_snapshots_reach_the_backend(tmp_path, mosquitto_factory, monkeypatch):
    monkeypatch.setattr("linli.service.STATUS_EVERY_S", 0.3)
    local, upstream = mosquitto_factory(), mosquitto_factory()
    cfg = make_config(tmp_path, local, upstream)
    backend = Upstream(upstream)
    gw = GatewayThread(cfg).start()
    try:
        evs = backend.events(until_type="garbage.pile.detected", timeout=40)
        detected = backend.of("garbage.pile.detected")
        assert detected, [e["type"] for e in evs]
        ev = detected[0]
        assert ev["source"].endswith("/camera/gate") and ev["data"]["camera"] == "gate"
        refs = snapshot_refs(ev["data"])
        assert refs, ev["data"]
        want = {r["id"]: r for r in refs}
        # Every snapshot of the event arrives on its own topic, QoS 1, not retained, as the JPEG
        # whose sha256 the event carries.
        prefix = "linli/v1/test-site/gw-1/snapshots/"
        have = {m.topic[len(prefix):]: m for m in backend.other if m.topic.startswith(prefix)}
        end = time.monotonic() + 20
        while not set(want) <= set(have) and time.monotonic() < end:
            try:
                m = backend.probe.get(0.5)
            except queue.Empty:
                continue
            if m.topic.startswith(prefix):
                have[m.topic[len(prefix):]] = m
        assert set(want) <= set(have), (sorted(want), sorted(have))
        for sid, ref in want.items():
            msg = have[sid]
            assert not msg.retain and msg.qos == 1
            assert hashlib.sha256(msg.payload).hexdigest() == ref["sha256"]
            assert len(msg.payload) == ref["bytes"] and is_jpeg(msg.payload)
        # Marked sent in the store once acked (after the PUBACK, so allow it a moment).
        end = time.monotonic() + 10
        while time.monotonic() < end and set(want) & {r["id"] for r in gw.call(_pending(gw))}:
            time.sleep(0.1)
        assert not set(want) & {r["id"] for r in gw.call(_pending(gw))}
        assert gw.gw.snapshot_stats["published"] >= len(want)
        # The status file: one entry per camera with the health keys doctor reads.
        end = time.monotonic() + 10
        while status(cfg)["cameras"]["gate"]["state"] != "ok" and time.monotonic() < end:
            time.sleep(0.1)
        st = status(cfg)
        assert time.time() - st["updated"] < 5
        cam = st["cameras"]["gate"]
        assert HEALTH_KEYS <= set(cam), cam
        assert cam["state"] == "ok" and cam["fps"] > 0 and cam["inference_ms"] > 0 and cam["last_error"] is None
    finally:
        gw.stop()
        backend.close()
    # Written once more at stop.
    assert status(cfg)["updated"] >= st["updated"]


async def _pending_list(store):
    return list(store.pending())


def _pending(gw):
    return _pending_list(gw.gw.snapshots)


def test_snapshots_wait_while_upstream_is_down_then_go(tmp_path, mosquitto_factory):
    local = mosquitto_factory()
    upstream = mosquitto_factory(persistence=True)
    # The backend keeps a persistent session: what the gateway sends while it reconnects is kept.
    backend = upstream.client("backend", clean=False)
    backend.connect()
    backend.subscribe("linli/v1/test-site/gw-1/snapshots/+", qos=1)
    backend.close()
    upstream.stop()
    cfg = make_config(tmp_path, local, upstream)
    gw = GatewayThread(cfg).start()
    try:
        ev = wait_event(gw, "garbage.pile.detected")
        want = {r["id"]: r for r in snapshot_refs(ev.data)}
        assert want
        time.sleep(1.0)  # the publisher had its chances: nothing can go while upstream is down
        waiting = {r["id"] for r in gw.call(_pending(gw))}
        assert set(want) <= waiting
        assert gw.gw.snapshot_stats["published"] == 0
        assert any(p.is_file() for p in (cfg.gateway.data_dir / "snapshots").rglob("*")), "stored locally"
        upstream.start()
        backend = upstream.client("backend", clean=False)
        backend.connect()
        prefix = "linli/v1/test-site/gw-1/snapshots/"
        got = collect(backend, lambda ms: set(want) <= {m.topic[len(prefix):] for m in ms}, timeout=60)
        for m in got:
            sid = m.topic[len(prefix):]
            if sid in want:
                assert hashlib.sha256(m.payload).hexdigest() == want[sid]["sha256"]
        end = time.monotonic() + 10
        while time.monotonic() < end and set(want) & {r["id"] for r in gw.call(_pending(gw))}:
            time.sleep(0.1)
        assert not set(want) & {r["id"] for r in gw.call(_pending(gw))}
        backend.close()
    finally:
        gw.stop()


def test_without_upstream_snapshots_stay_local(tmp_path, mosquitto_factory):
    local = mosquitto_factory()
    cfg = make_config(tmp_path, local)
    gw = GatewayThread(cfg).start()
    try:
        ev = wait_event(gw, "garbage.pile.detected")
        refs = snapshot_refs(ev.data)
        assert refs and gw.gw.uplink is None
        for r in refs:
            assert hashlib.sha256(gw.call(_get(gw, r))).hexdigest() == r["sha256"]
        assert {r["id"] for r in refs} <= {r["id"] for r in gw.call(_pending(gw))}
    finally:
        gw.stop()


async def _get_blob(store, ref):
    return store.get(ref)


def _get(gw, ref):
    return _get_blob(gw.gw.snapshots, ref)


def test_a_corrupt_model_turns_cameras_off_and_nodes_keep_working(tmp_path, mosquitto_factory):
    local, upstream = mosquitto_factory(), mosquitto_factory()
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07" + bytes(range(256)) * 40)  # not a protobuf an ONNX runtime loads
    cfg = make_config(tmp_path, local, upstream, '[vision]\nmodel = "broken.onnx"\n')
    backend = Upstream(upstream)
    node = PeerNode("bin-0001", Role.BIN, local, cfg.gateway.data_dir / "keys.db")
    gw = GatewayThread(cfg).start()
    try:
        # The cameras are still sampled and watched, without detection or snapshots.
        assert gw.gw.vision.detector is None and gw.gw.snapshots is None
        assert "broken.onnx" in gw.gw.vision_error
        # The nodes' side runs as ever.
        assert node.wait_ack(node.send(Kind.HELLO, {"fw": "0.1.0", "rc": "pwron", "bc": 1, "sm": 0})) == 0
        assert node.wait_ack(node.send(Kind.TELEMETRY, {"fill": 91, "bat": 3.9, "depth": 110})) == 0
        backend.events(until_type="bin.full", timeout=15)
        failed = backend.of("vision.model_failed")
        assert failed and failed[0]["data"]["model"] == str(bad) and failed[0]["data"]["error"], [e["type"] for e in backend.seen]
        assert backend.of("bin.full") and not backend.of("garbage.pile.detected")
        # ... and the camera fault is where doctor looks.
        cam = status(cfg)["cameras"]["gate"]
        assert HEALTH_KEYS <= set(cam)
        assert cam["state"] == "degraded" and "broken.onnx" in cam["last_error"]
    finally:
        gw.stop()
        node.close()
        backend.close()


def test_without_a_working_privacy_filter_no_image_is_stored(tmp_path, mosquitto_factory, monkeypatch):
    # OpenCV without its face cascades: redaction cannot be promised, so the events go without
    # snapshots instead of with unredacted ones.
    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path / "no-cascades"))
    local = mosquitto_factory()
    cfg = make_config(tmp_path, local)
    gw = GatewayThread(cfg).start()
    try:
        ev = wait_event(gw, "garbage.pile.detected")
        assert snapshot_refs(ev.data) == [] and gw.gw.snapshots is None
        assert "snapshots disabled" in gw.gw.vision_error and "haarcascade" in gw.gw.vision_error
        assert not (cfg.gateway.data_dir / "snapshots").exists()
    finally:
        gw.stop()
    assert "snapshots disabled" in status(cfg)["cameras"]["gate"]["last_error"]


def test_linli_run_refuses_a_bad_camera_key(tmp_path):
    p = tmp_path / "gateway.toml"
    p.write_text(
        '[gateway]\nsite = "s"\nid = "g"\n[privacy]\nsite_secret = "0123456789abcdef"\n'
        '[[camera]]\nname = "a"\nurl = "rtsp://cam/"\n'
        '[[camera]]\nname = "b"\nurl = "rtsp://cam/2"\nthresholds = { garbage = 1.2 }\n'
    )
    r = subprocess.run([sys.executable, "-m", "linli.cli", "run", "--config", str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "%s: camera[1].thresholds.garbage: must be a score 0..1, got 1.2" % p in r.stderr
