"""Config errors name the file, the key and what is allowed."""

import pytest

from linli.config import Config
from linli.errors import ConfigError

BASE = """
[gateway]
site = "xinhua-1"
id = "gw-01"
[privacy]
site_secret = "0123456789abcdef"
"""


def load(extra="", base=BASE):
    return Config.from_text(base + extra, "gateway.toml")


def test_minimal_config_has_defaults():
    cfg = load()
    assert cfg.local.port == 1883 and not cfg.upstream.enabled
    assert cfg.rules_for("bin-1").bin_full_pct == 85.0


@pytest.mark.parametrize(
    "extra, key, words",
    [
        ("[outbox]\nmax_events = 'lots'\n", "outbox.max_events", "positive integer"),
        ("[outbox]\nmax_evnts = 5\n", "outbox.max_evnts", "unknown key"),
        ("[local]\nport = 70000\n", "local.port", "1-65535"),
        ("[upstream]\nprotocol = '4'\n", "upstream.protocol", "'auto', '5' or '3.1.1'"),
        ("[upstream]\nclient = 'hbmqtt'\n", "upstream.client", "'native' or 'paho'"),
        ("[upstream]\nca_file = 'nope.pem'\n", "upstream.ca_file", "does not exist"),
        ("[rules]\nbin_empty_pct = 90\n", "rules.bin_empty_pct", "below rules.bin_full_pct"),
        ("[rules.nodes.'bad id!']\nbin_full_pct = 80\n", "rules.nodes.bad id!", "not a valid node id"),
        ("[rules.nodes.bin-1]\nbin_ful_pct = 80\n", "rules.nodes.bin-1.bin_ful_pct", "unknown key"),
        ("[[serial]]\nport = '/dev/ttyUSB0'\nbaudrate = 1234\n", "serial[0].baudrate", "standard baud rate"),
        ("[[serial]]\nbaudrate = 9600\n", "serial[0].port", "required"),
        ("[whatever]\n", "whatever", "unknown key"),
    ],
)
def test_bad_values_name_the_key(extra, key, words):
    with pytest.raises(ConfigError) as e:
        load(extra)
    assert e.value.key == key
    assert e.value.file == "gateway.toml"
    assert words in str(e.value)


def test_missing_sections_and_bad_toml():
    with pytest.raises(ConfigError, match="gateway: is required"):
        Config.from_text("[privacy]\nsite_secret='0123456789abcdef'\n", "g.toml")
    with pytest.raises(ConfigError, match="privacy.site_secret: must be at least 16"):
        load(base=BASE.replace("0123456789abcdef", "short"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.from_text("[gateway\n", "g.toml")
    with pytest.raises(ConfigError, match="gateway.site: must be 1-32 chars"):
        load(base=BASE.replace("xinhua-1", "Xinhua Road"))


def test_secrets_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LINLI_SECRET", "from-the-environment!")
    cfg = load(base=BASE.replace('"0123456789abcdef"', '"env:LINLI_SECRET"'))
    assert cfg.site_secret == "from-the-environment!"
    f = tmp_path / "secret"
    f.write_text("from-a-file-0123456\n")
    cfg = load(base=BASE.replace('"0123456789abcdef"', '"file:%s"' % f))
    assert cfg.site_secret == "from-a-file-0123456"
    with pytest.raises(ConfigError, match="environment variable NOPE is not set"):
        load(base=BASE.replace('"0123456789abcdef"', '"env:NOPE"'))


def test_per_node_overrides_inherit_site_rules():
    cfg = load("[rules]\nfire_temp_c = 55\n[rules.nodes.bin-7]\nbin_full_pct = 70\n")
    r = cfg.rules_for("bin-7")
    assert (r.bin_full_pct, r.fire_temp_c) == (70.0, 55.0)
    assert cfg.rules_for("bin-8").bin_full_pct == 85.0


def test_load_from_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        Config.load(tmp_path / "missing.toml")
    p = tmp_path / "gw.toml"
    p.write_text(BASE + "[outbox]\nmax_mb = -1\n")
    with pytest.raises(ConfigError) as e:
        Config.load(p)
    assert e.value.file == str(p) and e.value.key == "outbox.max_mb"


# -- cameras, vision, panel -------------------------------------------------------------------
CAMERA = """
[[camera]]
name = "east-gate"
url = "rtsp://10.0.0.7/stream2"
"""


def test_camera_sections_give_the_pipeline_its_specs(tmp_path):
    from linli.vision.pipeline import CameraSpec

    p = tmp_path / "gw.toml"
    p.write_text(BASE + """
[vision]
model = "models/custom.onnx"
threads = 2
snapshot_retention_days = 3
snapshot_max_mb = 50
[panel]
enabled = true
profile = "raspberry-pi-5"
[[camera]]
name = "east-gate"
url = "folder:frames/east"
interval_s = 2
watchdog_s = 10
zones = [[[0, 100], [640, 100], [640, 480], [0, 480]]]
masks = [[[0, 0], [200, 0], [200, 80]]]
min_box_px = 24
thresholds = { garbage = 0.5 }
[camera.bins]
"bin-07" = [[400, 200], [560, 200], [560, 400], [400, 400]]
[camera.tracker]
confirm_hits = 2
confirm_window = 3
clear_min_s = 30
[[camera]]
name = "yard"
url = "/dev/video0"
""")
    cfg = Config.load(p)
    assert cfg.vision.model == (tmp_path / "models/custom.onnx").resolve()
    assert (cfg.vision.threads, cfg.vision.snapshot_retention_days, cfg.vision.snapshot_max_mb, cfg.vision.blur) == (2, 3.0, 50.0, True)
    assert (cfg.panel.enabled, cfg.panel.profile) == (True, "raspberry-pi-5")
    east, yard = cfg.cameras
    assert (east.name, east.interval_s, east.watchdog_s) == ("east-gate", 2.0, 10.0)
    assert east.url == "folder:%s" % (tmp_path / "frames/east").resolve()  # relative to the file
    assert yard.url == "/dev/video0" and yard.interval_s == 5.0 and yard.watchdog_s == 30.0
    spec = east.spec()
    assert isinstance(spec, CameraSpec) and spec.name == "east-gate" and spec.interval_s == 2.0
    assert spec.zones == [[[0.0, 100.0], [640.0, 100.0], [640.0, 480.0], [0.0, 480.0]]]
    assert spec.masks == [[[0.0, 0.0], [200.0, 0.0], [200.0, 80.0]]]
    assert spec.min_box_px == 24.0
    assert spec.thresholds == {"garbage": 0.5, "overflow": 0.35}  # unnamed labels keep their defaults
    assert (spec.tracker.confirm_hits, spec.tracker.confirm_window, spec.tracker.clear_min_s) == (2, 3, 30.0)
    # The bin region reaches the tracker, which links an overflow box there to the node.
    from linli.vision.tracker import CameraTracker

    assert CameraTracker("east-gate", spec.tracker).bin_for((420, 250, 500, 350)) == "bin-07"
    assert yard.spec().thresholds == {"garbage": 0.3, "overflow": 0.35}


def test_camera_decoding_follows_the_interval_unless_set():
    from linli.vision.sources import CaptureSource

    often = load(CAMERA).cameras[0]
    rare = load(CAMERA + "interval_s = 60\n").cameras[0]
    chosen = load(CAMERA + "interval_s = 60\ndecode = 'stream'\nwidth = 640\n").cameras[0]
    assert (often.decode, rare.decode, chosen.decode, chosen.width) == ("stream", "sample", "stream", 640)
    src = rare.source()
    assert isinstance(src, CaptureSource) and src.reopen and src.live
    assert not often.source().reopen and chosen.source().width == 640


def test_no_cameras_by_default():
    cfg = load()
    assert cfg.cameras == () and cfg.vision.model is None and not cfg.panel.enabled


@pytest.mark.parametrize(
    "extra, key, words",
    [
        ("[[camera]]\nurl = 'rtsp://x/'\n", "camera[0].name", "required"),
        ("[[camera]]\nname = 'east gate'\nurl = 'rtsp://x/'\n", "camera[0].name", "1-16 chars"),
        ("[[camera]]\nname = 'a'\n", "camera[0].url", "required"),
        ("[[camera]]\nname = 'a'\nurl = ''\n", "camera[0].url", "rtsp://"),
        ("[[camera]]\nname = 'a'\nurl = 'v4l2:first'\n", "camera[0].url", "v4l2:N"),
        (CAMERA + "interval_s = 0\n", "camera[0].interval_s", "> 0"),
        (CAMERA + "watchdog_s = -1\n", "camera[0].watchdog_s", "seconds > 0"),
        (CAMERA + "intervall_s = 5\n", "camera[0].intervall_s", "unknown key"),
        (CAMERA + "zones = [[[0, 0], [10, 0]]]\n", "camera[0].zones[0]", "3 or more [x, y] points"),
        (CAMERA + "zones = [[[0, 0], [10, 0], [10]]]\n", "camera[0].zones[0]", "3 or more [x, y] points"),
        (CAMERA + "masks = [[[0, 0], [10, 0], [10, 'x']]]\n", "camera[0].masks[0]", "polygon"),
        (CAMERA + "masks = [[[0, 0], [10, 0], [10, -5]]]\n", "camera[0].masks[0]", ">= 0"),
        (CAMERA + "zones = 'all'\n", "camera[0].zones", "array of polygons"),
        (CAMERA + "min_box_px = -1\n", "camera[0].min_box_px", ">= 0"),
        (CAMERA + "decode = 'keyframes'\n", "camera[0].decode", '"stream" or "sample"'),
        (CAMERA + "width = 10\n", "camera[0].width", "64..7680"),
        (CAMERA + "thresholds = { garbage = 1.5 }\n", "camera[0].thresholds.garbage", "0..1"),
        (CAMERA + "thresholds = { overflow = -0.1 }\n", "camera[0].thresholds.overflow", "0..1"),
        (CAMERA + "thresholds = { garbage = 'high' }\n", "camera[0].thresholds.garbage", "0..1"),
        (CAMERA + "thresholds = { garbge = 0.4 }\n", "camera[0].thresholds.garbge", "not a label the tracker follows (garbage, overflow"),
        (CAMERA + "[camera.bins]\n'bin 7' = [0, 0, 10, 10]\n", "camera[0].bins", "not a valid node id"),
        (CAMERA + "[camera.bins]\nbin-7 = [10, 0, 0, 10]\n", "camera[0].bins.bin-7", "rect"),
        (CAMERA + "[camera.tracker]\nconfirm_hits = 6\n", "camera[0].tracker.confirm_window", ">= confirm_hits"),
        (CAMERA + "[camera.tracker]\nconfirm_hit = 2\n", "camera[0].tracker.confirm_hit", "unknown key"),
        (CAMERA + "[camera.tracker]\niou_min = 0\n", "camera[0].tracker.iou_min", "number in"),
        (CAMERA + "[camera.tracker]\nbins = {}\n", "camera[0].tracker.bins", "[camera.bins]"),
        (CAMERA + CAMERA.replace("rtsp://10.0.0.7", "rtsp://10.0.0.8"), "camera[1].name", "already the name of camera[0]"),
        (CAMERA + "[[camera]]\nname = 'b'\nurl = 'rtsp://b/'\nthresholds = { garbage = 2 }\n", "camera[1].thresholds.garbage", "0..1"),
        ("[vision]\nthreads = 0\n", "vision.threads", "1..64"),
        ("[vision]\nsnapshot_retention_days = 0\n", "vision.snapshot_retention_days", "> 0"),
        ("[vision]\nsnapshot_max_mb = -5\n", "vision.snapshot_max_mb", "> 0"),
        ("[vision]\nblur = false\n", "vision.blur", "blur_off_reason"),
        ("[vision]\nblur_off_reason = 'why'\n", "vision.blur_off_reason", "only meaningful with blur = false"),
        ("[vision]\nmodel = 5\n", "vision.model", "path to an .onnx"),
        ("[vision]\nmodle = 'x.onnx'\n", "vision.modle", "unknown key"),
        ("[panel]\nenabled = 'yes'\n", "panel.enabled", "bool"),
        ("[panel]\nprofile = 'Raspberry Pi'\n", "panel.profile", "gateway profile"),
    ],
)
def test_bad_camera_keys_name_the_key(extra, key, words):
    with pytest.raises(ConfigError) as e:
        load(extra)
    assert e.value.key == key, str(e.value)
    assert e.value.file == "gateway.toml"
    assert words in str(e.value), str(e.value)


def test_camera_must_be_an_array_of_tables():
    with pytest.raises(ConfigError, match=r"gateway.toml: camera: must be an array of \[\[camera\]\] tables"):
        load(base="camera = 'east'\n" + BASE)


def test_blur_may_be_turned_off_only_with_a_reason():
    cfg = load("[vision]\nblur = false\nblur_off_reason = 'private yard, no public access'\n")
    assert cfg.vision.blur is False and cfg.vision.blur_off_reason.startswith("private yard")
