"""`linli doctor`'s camera and model checks.

Cameras: when the gateway is running it writes ``data_dir/status/cameras.json`` (each camera's
state, fps, frame age, last error); if that file is fresh the check reports from it and leaves
the cameras alone. Otherwise it opens each source itself and wants a frame within
``--camera-timeout`` seconds (in a thread it can abandon: OpenCV may block on a dead RTSP host).

Model: the file is there, its SHA-256 matches the manifest, it loads, and a test inference runs;
the finding gives the inference time.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Optional

from linli.doctor import FAIL, PASS, SKIP, WARN, Context, Result
from linli.doctor_checks import no_config

# A picture the detector knows (a source checkout has it); else a synthetic frame is used.
SAMPLE_IMAGE = Path(__file__).resolve().parent.parent / "tests" / "data" / "detector" / "images" / "003353.jpg"


def read_status(ctx: Context) -> Optional[dict]:
    """The running gateway's cameras.json if it is fresh, else None."""
    path = ctx.cfg.gateway.data_dir / "status" / "cameras.json"
    try:
        st = json.loads(path.read_text())
        fresh = ctx.probes.now() - float(st["updated"]) <= ctx.options.status_max_age
        return st if fresh and isinstance(st.get("cameras"), dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _in_thread(fn, timeout: float):
    """(result, error, finished): run ``fn`` in a daemon thread and give up after ``timeout``."""
    box: dict = {}

    def run():
        try:
            box["r"] = fn()
        except Exception as exc:  # reported to the caller
            box["e"] = exc

    t = threading.Thread(target=run, daemon=True, name="doctor-camera")
    t.start()
    t.join(timeout)
    return box.get("r"), box.get("e"), not t.is_alive()


def _grab(url: str, window: float):
    """Open a source, read a first frame, then frames for up to ``window`` s: (shape, fps, first_s)."""
    from linli.vision.sources import open_source

    src = open_source(url)
    t0 = time.monotonic()
    try:
        src.open()
        frame = src.read()
        first = time.monotonic() - t0
        n, t1 = 0, time.monotonic()
        while n < 5 and time.monotonic() - t1 < window:
            src.read()
            n += 1
        dt = time.monotonic() - t1
        return frame.shape, (n / dt if n and dt > 0 else None), first
    finally:
        src.close()


def _fix_dead(i: int, cam, ctx) -> str:
    return "check the camera's power and network (ping it), and camera[%d].url in %s" % (i, ctx.cfg.file)


def check_cameras(ctx: Context) -> list[Result]:
    if ctx.cfg is None:
        return no_config("camera", ctx)
    cams = tuple(getattr(ctx.cfg, "cameras", ()) or ())
    if not cams:
        return [Result("camera", SKIP, "no cameras configured")]
    status = read_status(ctx)
    out = []
    for i, cam in enumerate(cams):
        name = "camera:%s" % cam.name
        st = (status or {}).get("cameras", {}).get(cam.name) if status else None
        if st is not None:
            age = st.get("last_frame_age_s")
            fig = "fps %s, last frame %s s ago, inference %s ms, %s reconnect(s)" % (_num(st.get("fps")), _num(age), _num(st.get("inference_ms")), st.get("reconnects", 0))
            data = dict(st, source="gateway")
            if st.get("state") == "ok":
                out.append(Result(name, PASS, "ok in the running gateway: " + fig, data=data))
            elif st.get("state") == "starting":
                out.append(Result(name, WARN, "still starting in the running gateway: " + fig, "run linli doctor again in a minute", data))
            else:
                err = (st.get("last_error") or "no frame").replace(cam.url, _safe(cam.url))
                out.append(Result(name, FAIL, "%s in the running gateway: %s (%s)" % (st.get("state", "?"), err, fig), _fix_dead(i, cam, ctx), data))
            continue
        url = cam.url
        r, err, done = _in_thread(lambda u=url: _grab(u, min(2.0, ctx.options.camera_timeout)), ctx.options.camera_timeout)
        if not done:
            out.append(Result(name, FAIL, "%s: no frame within %g s" % (_safe(url), ctx.options.camera_timeout), _fix_dead(i, cam, ctx), {"url": _safe(url)}))
        elif err is not None:
            out.append(Result(name, FAIL, "%s: %s" % (_safe(url), str(err).replace(url, _safe(url))), _fix_dead(i, cam, ctx), {"url": _safe(url)}))
        else:
            shape, fps, first = r
            fps_text = "%.1f fps" % fps if fps else "single frames"
            out.append(Result(name, PASS, "%s: a %dx%d frame in %.2f s, %s" % (_safe(url), shape[1], shape[0], first, fps_text),
                              data={"url": _safe(url), "fps": fps, "first_frame_s": round(first, 3), "source": "doctor"}))
    return out


def _num(v) -> str:
    if v is None:
        return "?"
    return "%.1f" % v if isinstance(v, float) else str(v)


def _safe(url: str) -> str:
    """The URL without a password (rtsp://user:pass@host/...)."""
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        creds, host = rest.split("@", 1)
        return "%s://%s:***@%s" % (scheme, creds.split(":", 1)[0], host)
    return url


# -- the model ---------------------------------------------------------------------------------
def _model_path(cfg) -> tuple[Path, Optional[Path]]:
    """(model file, manifest to check it against or None)."""
    from linli.detector import DEFAULT_MANIFEST, DEFAULT_MODEL

    vision = getattr(cfg, "vision", None)
    model = getattr(vision, "model", None) if vision is not None else None
    if model is None:
        return DEFAULT_MODEL, DEFAULT_MANIFEST
    model = Path(model)
    manifest = getattr(vision, "manifest", None)
    if manifest:
        return model, Path(manifest)
    for cand in (model.parent / "manifest.json", DEFAULT_MANIFEST):
        try:
            if any(e.get("file") == model.name for e in json.loads(cand.read_text())["models"]):
                return model, cand
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return model, None


def check_model(ctx: Context) -> list[Result]:
    if ctx.cfg is None:
        return no_config("model", ctx)
    if not getattr(ctx.cfg, "cameras", ()):
        return [Result("model", SKIP, "no cameras configured: the detector is not used")]
    try:
        from linli.detector import Detector, DetectorError
    except ImportError as exc:
        return [Result("model", FAIL, "the detector cannot be imported: %s" % exc, "install the gateway with its vision extras (pip install linli[vision]) or onnxruntime")]
    model, manifest = _model_path(ctx.cfg)
    fix = "re-install the model file %s (copy it again from the release or `pip install --force-reinstall linli`), then run linli doctor again" % model
    if not model.is_file():
        return [Result("model", FAIL, "model file %s is missing" % model, fix)]
    threads = getattr(getattr(ctx.cfg, "vision", None), "threads", 2) or 2
    t0 = time.monotonic()
    try:
        det = Detector(model, manifest=manifest, threads=threads)
    except DetectorError as exc:
        return [Result("model", FAIL, str(exc), fix, {"model": str(model)})]
    load_s = time.monotonic() - t0
    frame = _sample()
    det.detect(frame)  # the first run allocates; time the second
    t1 = time.monotonic()
    found = det.detect(frame)
    ms = (time.monotonic() - t1) * 1000
    checked = "SHA-256 matches %s" % manifest.name if manifest else "no manifest entry, hash not checked"
    data = {"model": str(model), "inference_ms": round(ms, 1), "load_s": round(load_s, 2), "detections": len(found), "hash_checked": manifest is not None}
    finding = "%s: %s, loads in %.1f s, a test inference takes %.0f ms (%d object(s) on the sample)" % (model.name, checked, load_s, ms, len(found))
    if manifest is None:
        return [Result("model", WARN, finding, "ship a manifest.json listing the model's sha256 next to it, so a corrupt copy is caught", data)]
    return [Result("model", PASS, finding, data=data)]


def _sample():
    import cv2
    import numpy as np

    frame = cv2.imread(str(SAMPLE_IMAGE)) if SAMPLE_IMAGE.is_file() else None
    if frame is None:
        rng = np.random.default_rng(0)
        frame = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    return frame
