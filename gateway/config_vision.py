"""The camera sections of the gateway config: ``[vision]``, ``[[camera]]`` and ``[panel]``.

Read by :mod:`linli.config` (which owns the file-level rules: errors name the file and key);
kept apart so that config.py stays readable. A camera section gives the pipeline's
:class:`~linli.vision.pipeline.CameraSpec` through :meth:`CameraSection.spec`.

>>> from linli.config import Config
>>> cfg = Config.from_text('''
... [gateway]
... site = "xinhua-1"
... id = "gw-01"
... [privacy]
... site_secret = "correct horse battery staple"
... [[camera]]
... name = "east-gate"
... url = "rtsp://10.0.0.7/stream2"
... zones = [[[0, 300], [1280, 300], [1280, 720], [0, 720]]]
... thresholds = { garbage = 0.4 }
... ''', "gateway.toml")
>>> cam = cfg.cameras[0]
>>> cam.name, cam.interval_s, cam.spec().thresholds
('east-gate', 5.0, {'garbage': 0.4, 'overflow': 0.35})
>>> cfg.vision.threads, cfg.vision.blur, cfg.panel.enabled
(1, True, False)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from linli.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from linli.config import _Reader
    from linli.vision.pipeline import CameraSpec
    from linli.vision.tracker import TrackerConfig

_CAMERA = re.compile(r"^[A-Za-z0-9._-]{1,16}$")  # the same rule as node ids
_PROFILE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
DEFAULT_THRESHOLDS = {"garbage": 0.3, "overflow": 0.35}
# URL forms kept as they are; anything else is a path (relative to the config file).
_VERBATIM = ("rtsp://", "rtsps://", "http://", "https://", "snapshot+", "v4l2:", "/dev/")


@dataclass(frozen=True)
class VisionSection:
    """``[vision]``: the detector and snapshot settings shared by every camera."""

    model: Optional[Path] = None  # None: the shipped model (Detector.default())
    threads: int = 1
    snapshot_retention_days: float = 7.0
    snapshot_max_mb: float = 200.0
    blur: bool = True
    blur_off_reason: Optional[str] = None


@dataclass(frozen=True)
class PanelSection:
    """``[panel]``: the gateway's own GPIO panel (status LEDs, buttons)."""

    enabled: bool = False
    profile: str = "raspberry-pi"


@dataclass(frozen=True)
class CameraSection:
    """One ``[[camera]]``: where its frames come from and what counts in them."""

    name: str
    url: str
    interval_s: float = 5.0
    watchdog_s: float = 30.0
    zones: tuple = ()
    masks: tuple = ()
    min_box_px: float = 16.0
    thresholds: dict = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    tracker: Any = None  # a TrackerConfig (bins included)
    decode: str = "stream"  # streams: "stream" drains every frame, "sample" connects per sample
    width: Optional[int] = None  # ask a V4L2 device for frames this wide

    def source(self):
        """The camera's frame source (nothing opened yet)."""
        from linli.vision.sources import open_source

        return open_source(self.url, decode=self.decode, width=self.width)

    def spec(self) -> "CameraSpec":
        """The pipeline's settings for this camera."""
        from linli.vision.pipeline import CameraSpec

        return CameraSpec(
            self.name, interval_s=self.interval_s,
            zones=[[list(p) for p in poly] for poly in self.zones],
            masks=[[list(p) for p in poly] for poly in self.masks],
            min_box_px=self.min_box_px, thresholds=dict(self.thresholds), tracker=self.tracker,
            watchdog_s=self.watchdog_s,
        )


def _number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def read_vision(r: "_Reader", base: Path) -> VisionSection:
    model = r.take("model", str, None, allowed="a path to an .onnx file")
    v = VisionSection(
        model=(base / model).resolve() if model else None,
        threads=r.take("threads", int, 1, check=lambda n: 1 <= n <= 64, allowed="an integer 1..64"),
        snapshot_retention_days=r.take("snapshot_retention_days", float, 7.0, check=lambda n: n > 0, allowed="a number of days > 0"),
        snapshot_max_mb=r.take("snapshot_max_mb", float, 200.0, check=lambda n: n > 0, allowed="a number of MB > 0"),
        blur=r.take("blur", bool, True),
        blur_off_reason=r.take("blur_off_reason", str, None, check=lambda s: bool(s.strip()), allowed="a non-empty string"),
    )
    # PIPL art. 26: images of people leave the gateway only blurred, unless someone wrote why not.
    if not v.blur and not v.blur_off_reason:
        r.fail("blur", "may be false only with vision.blur_off_reason saying why (people in snapshots are personal information)")
    if v.blur and v.blur_off_reason:
        r.fail("blur_off_reason", "is only meaningful with blur = false")
    r.done()
    return v


def read_panel(r: "_Reader") -> PanelSection:
    p = PanelSection(
        enabled=r.take("enabled", bool, False),
        profile=r.take("profile", str, "raspberry-pi", check=_PROFILE.match, allowed="a gateway profile name in hw/ (a-z 0-9 . _ -)"),
    )
    r.done()
    return p


def read_cameras(file: str, tables, base: Path, reader) -> tuple[CameraSection, ...]:
    """Every ``[[camera]]`` table; ``reader(path, table)`` makes a config reader."""
    out: list[CameraSection] = []
    for i, t in enumerate(tables):
        out.append(_camera(reader("camera[%d]" % i, t), file, base))
    seen: dict[str, int] = {}
    for i, c in enumerate(out):
        if c.name in seen:
            raise ConfigError(file, "camera[%d].name" % i, "%r is already the name of camera[%d]" % (c.name, seen[c.name]))
        seen[c.name] = i
    return tuple(out)


def _url(r: "_Reader", url: str, base: Path) -> str:
    if url.startswith("v4l2:") and not url[5:].isdigit():
        r.fail("url", "v4l2:N takes a device number (v4l2:0 is /dev/video0), got %r" % url)
    if url.startswith(_VERBATIM):
        return url
    if url.startswith("folder:"):
        return "folder:%s" % (base / url[7:]).resolve()
    return str((base / url).resolve())  # a video file or a folder of images


def _polygons(r: "_Reader", name: str) -> tuple:
    polys = r.take(name, list, [], allowed="an array of polygons, each [[x, y], [x, y], [x, y], ...]")
    out = []
    for i, p in enumerate(polys):
        ok = isinstance(p, list) and len(p) >= 3 and all(isinstance(pt, list) and len(pt) == 2 and all(_number(v) and v >= 0 for v in pt) for pt in p)
        if not ok:
            r.fail("%s[%d]" % (name, i), "must be a polygon of 3 or more [x, y] points (frame pixels, >= 0), got %r" % (p,))
        out.append(tuple((float(x), float(y)) for x, y in p))
    return tuple(out)


def _camera(r: "_Reader", file: str, base: Path) -> CameraSection:
    from linli.vision.tracker import TrackerConfig

    name = r.take("name", str, check=_CAMERA.match, allowed="1-16 chars of A-Z a-z 0-9 . _ - (as node ids)")
    url = r.take("url", str, check=lambda s: bool(s.strip()), allowed="rtsp://..., http(s)://..., /dev/videoN, folder:/path or a video file")
    interval = r.take("interval_s", float, 5.0, check=lambda v: 0 < v <= 3600, allowed="seconds, > 0 and <= 3600")
    watchdog = r.take("watchdog_s", float, 30.0, check=lambda v: v > 0, allowed="seconds > 0")
    # Long intervals: one connection and one decoded frame per sample beats decoding the stream.
    decode = r.take("decode", str, "sample" if interval >= 30 else "stream", check=lambda v: v in ("stream", "sample"), allowed='"stream" or "sample"')
    width = r.take("width", int, None, check=lambda v: 64 <= v <= 7680, allowed="a frame width in pixels, 64..7680")
    zones = _polygons(r, "zones")
    masks = _polygons(r, "masks")
    min_box = r.take("min_box_px", float, 16.0, check=lambda v: v >= 0, allowed="pixels >= 0")
    th_table = r.take("thresholds", dict, {}, allowed="a table of detector label -> score 0..1")
    thresholds = dict(DEFAULT_THRESHOLDS)
    for label, v in th_table.items():
        if not _number(v) or not 0.0 <= v <= 1.0:
            r.fail("thresholds.%s" % label, "must be a score 0..1, got %r" % (v,))
        thresholds[label] = float(v)
    bins = r.take("bins", dict, {}, allowed="a table of bin node id -> [x1, y1, x2, y2] or [[x, y], ...]")
    tr_table = r.take("tracker", dict, {}, allowed="a [camera.tracker] table")
    if "bins" in tr_table:
        r.fail("tracker.bins", "put the bins in [camera.bins]")
    try:
        tracker: TrackerConfig = TrackerConfig.from_dict(tr_table, key=r.key("tracker"))
        # Checked again with the camera's own key, so a bad bin is named camera[i].bins.ID.
        from dataclasses import replace

        tracker = replace(tracker, bins=bins, key=r.path) if bins else tracker
        tracker = replace(tracker, key=r.key("tracker"))
    except ConfigError as exc:  # the tracker names the key but not our file
        raise ConfigError(file, exc.key, exc.message) from None
    except TypeError as exc:
        raise ConfigError(file, r.key("tracker"), str(exc)) from None
    for label in th_table:  # a misspelt label would silently never count
        if label not in tracker.labels:
            r.fail("thresholds.%s" % label, "is not a label the tracker follows (%s; [camera.tracker] labels adds others)" % ", ".join(sorted(tracker.labels)))
    r.done()
    return CameraSection(name=name, url=_url(r, url, base), interval_s=interval, watchdog_s=watchdog, zones=zones, masks=masks, min_box_px=min_box, thresholds=thresholds, tracker=tracker, decode=decode, width=width)
