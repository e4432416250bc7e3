"""Firmware figures (issue 3): smallest heap per role, heap drift, .mpy sizes, awake time.

Run: ``.venv/bin/python bench/firmware.py`` (about 10 minutes; needs the MicroPython unix
port, mpy-cross and Mosquitto; ``--quick`` skips the heap search, ``--deploy romfs`` halves it).
Everything runs on the real unix port with firmware/ compiled to .mpy (in
firmware/build/bench-mpy), on the simulated ESP32 of :mod:`linli.simboard`. The last line holds
every figure, e.g. ``romfs_bin=57592 bin=36wK bin_files=52wK ... goal_48wK=met
goal_48wK_files=missed world_bin=4800 ... drift_bin=32 ... drift_goal_1KB=met mpy_total=77446
mpy_bin=44904 ... awake_ms=561 awake_ms_cpu=10``.

**1. Smallest heap per role** (``-X heapsize=NwK``: N K words, N KiB on a 32-bit ESP32, but see
"Host and board" below; the sim's own heap is added on top, as in the tests: that includes the
sim's stand-ins for an ESP32's built-in modules, ``machine``, ``time``, ``esp32``, ``onewire``
and ``network``, loaded before the firmware starts). Two ways of deploying the same modules:

* ``<role>=NwK``: as ``linli flash`` deploys a board that has a ROMFS partition: the role's
  bundle image (``linli firmware build``'s ``romfs.img``, size ``romfs_<role>``) in the
  partition, mounted on /rom, its .mpy files run in place; boot.py and main.py in the flash. The
  sim holds the partition in the heap (a board maps it from flash): that is added on top too
  (:func:`linli.simboard.runner.rom_heap`). The goal (``goal_48wK``) is judged on these.
* ``<role>_files=NwK``: the .mpy files on the filesystem (a board without a partition), where
  MicroPython copies each module's bytecode and constants into the heap at import.

A role "completes a simulated day" when:

* ``bin``: 24 wakes, one per simulated hour, each a whole boot (boot.py + main.py: config, HAL,
  runtime, bin role, MQTT link) talking to our own Mosquitto and a CPython gateway peer
  (tests/node_peer.py's ``MqttPeer``: verifies with the gateway's link code, acks, answers time
  sync). The refuse rises through the day (900 mm to 250 mm: telemetry on change, a ``full``
  event); ``report_s`` is 3600 so each wake deep-sleeps an hour and the next starts from
  DEEPSLEEP_RESET with the RTC an hour on. Every wake must end in deep sleep with no exception
  (a MemoryError ends the run otherwise), and the peer must have 24 ``status asleep`` frames.
* ``streetlight``: the whole node, ``tick_ms`` 100, ``dwell_s`` 1: day light, dusk (lamp on),
  a night with a PIR pass (boost) and an open lamp (``lamp_fault``), dawn (lamp off), then
  about 3 s more of day ticks, with a ``lamp.mode``/``lamp.level`` command pair at night. Done
  when the peer has seen the lamp go on and off again, the fault and both command results, and
  the run (stopped by the harness) had no exception.
* ``petscan``: the whole node, 6 QR scans (4 good tags, 2 bad) 0.8 s apart, each good one
  answered by the peer with ``pet.status`` (as linli.ingest does), then the fouling button.
  Done when the peer has the 4 scans and the fouling event and the run had no exception.

In every case a ``MemoryError`` anywhere on the console (a task's crash, or the link logging
"link down: MemoryError" and reconnecting) fails the size, even if the node recovered. N is
bisected in steps of 2 between 32 and 96 (assuming more heap never hurts); a size passes only
if the whole day does. A node that ran out of heap often hangs rather than ends, so the console
goes to a file watched while it runs and the run is stopped at the first MemoryError.

The sim's *world* (the scripted sensor data: A02YYUW frames, BH1750 readings, QR texts) is
parsed into the same heap as the firmware, which a real board's world does not cost. Its cost
is measured (``world_<role>``, bytes: a run that makes the peripherals with the world, minus
one without) and added to each trial's heap, as the harness adds the sim's own. So ``bin=NwK``
is the firmware's need; without that correction add ``world_bin / 2048`` K words (this host).

**2. Heap drift** over 10,000 loop iterations: for each role the glue's own per-tick step
(``Bin``: ``core.update`` on readings, ``_send``, the state saved; ``Streetlight.step``;
``Petscan.step`` plus a ``pet.status`` answer per scan) runs 10,000 times inside a real
:class:`node.runtime.Node` (flash queue, counter, sealing; the link is not run: frames are acked
straight away as the gateway would). Only the inputs are faked: readings dicts for the bin and
the streetlight (whose clock steps 1 s a tick, so days and nights pass), the petscan's scanner
poll (a tag every 250 passes) and button. ``gc.mem_free()`` after ``gc.collect()`` at
iteration 100 and 10,000; drift = the difference, in host bytes (goal: under 1 KB).

**3. .mpy sizes** (bytes, this host's mpy-cross for x64; an ESP32's xtensa .mpy is about the
same size for bytecode): all of firmware/, and per role the bundle a node of that role loads
(found by recording sys.modules after the role's node runs, plus what it imported and unloaded
again on the way, so only what is really imported).

**4. Awake ms per bin report cycle**: one bin wake, boot to the frames sealed and queued in
flash, with the network left out: ``transport`` is ``serial`` on a UART with nothing attached
(the sim's UART writes go nowhere and never block), so the link takes no time, and the figure
is the time from the start of ``main.py`` to the role's ``node.idle`` call (every report sealed
and queued), measured with ``ticks_ms`` in the run (the median of 5 wakes). The sensor waits
the bin role does (5 A02YYUW frames 100 ms apart) are part of a real wake and are included;
``awake_ms_cpu`` leaves out the time spent awaiting them (``Bin.pings``/``Bin.weight`` are
timed). That is this host's CPU and file system: an ESP32 at 240 MHz runs bytecode about an
order of magnitude slower and writes flash slower, so take ``awake_ms_cpu`` as a floor.

**Host and board.** The unix port here has 8-byte words: pointers, object headers, dict and
list slots take twice an ESP32's bytes, and ``NwK`` doubles the heap to match. What does not
double is byte data: string and bytes contents made at run time, ``bytearray`` buffers (the
queue index alone is 5 KB) and, with files, the bytecode of every loaded .mpy. The host gives
those twice the room they need on the board, so N here is a *floor* for the board: an ESP32
needs about N KiB plus half the byte data. From ROMFS the bytecode and the .mpy's constants
stay in flash, so that correction is a few KiB; from files it is up to ~15 KiB more (half a
role's ~35 KB of loaded .mpy).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]

from harness.mosquitto import Broker, find_mosquitto  # noqa: E402
from linli.simboard import MicroPython  # noqa: E402
from linli.simboard.runner import heap_bytes  # noqa: E402
from linli.simboard.build import FIRMWARE, FirmwareBuild, find_micropython, find_mpy_cross, probe  # noqa: E402

BUILD = FIRMWARE / "build" / "bench-mpy"
LO, HI, STEP = 32, 96, 2
GOAL_WK = 48
HOUR = 3600


def log(fmt, *args):
    print(fmt % args, file=sys.stderr, flush=True)


def _lines(stdout, k):
    """The JSON objects ``{"k": k, ...}`` a MicroPython run printed (its json puts keys in any order)."""
    out = []
    for x in stdout.splitlines():
        if x.startswith("{"):
            try:
                obj = json.loads(x)
            except ValueError:
                continue
            if obj.get("k") == k:
                out.append(obj)
    return out


# -- 1. the smallest heap ------------------------------------------------------------------

def a02_frames(mm):
    h, low = mm >> 8, mm & 0xFF
    return [0xFF, h, low, (0xFF + h + low) & 0xFF]


def bin_world(dist_mm):
    # As tests/test_role_bin.py: A02YYUW frames every 100 ms while the firmware listens; kept
    # short, because the world lives in the same heap as the firmware.
    sched = [[ms, a02_frames(dist_mm + (i % 3) - 1)] for i, ms in enumerate(range(100, 1600, 100))]
    return {"pins": {"27": 0, "26": 1}, "uart": {"2": {"schedule": sched}}, "adc": {"35": 40000}}


def bin_day(board, broker, heap):
    """24 hourly wakes; returns None when done, else why not."""
    from node_peer import MqttPeer, node_files

    peer = MqttPeer(broker, client_id="gw-bench-%d" % time.monotonic_ns())
    try:
        files = node_files(broker_port=broker.port, bat_pin=35, report_s=HOUR, health_s=6 * HOUR,
                           bin={"rfid": False, "cat": "recyclable"})
        for hour in range(24):
            dist = 900 - hour * 650 // 23  # 900 mm (empty-ish) to 250 mm (full) over the day
            run = _Run(board, world=bin_world(dist), files=files if hour == 0 else None, heap=heap)
            r, text = run.finish(peer, timeout=20)  # a wake takes about 1 s
            if "MemoryError" in text:
                return "wake %d: %s" % (hour, _first_memory_error(text))
            if r.end != "deepsleep" or r.exception:
                exc = r.exception or r.record.get("stopped_at") or {}
                return "wake %d: end=%s %s %s" % (hour, r.end, exc.get("type"), exc.get("message"))
            if r.deepsleep_ms != HOUR * 1000:
                return "wake %d: slept %s ms" % (hour, r.deepsleep_ms)
        asleep = [s for s in peer.new("status") if s.body.get("st") == "asleep"]
        if len(asleep) != 24:
            return "%d asleep status frames, not 24" % len(asleep)
        return None
    finally:
        peer.close()


class _Run:
    """A node run whose console goes to a file, so a MemoryError is seen while it runs (a node
    that ran out of heap often hangs instead of ending: it is stopped at once)."""

    def __init__(self, board, **kw):
        self.path = board.state / ("console-%d.txt" % time.monotonic_ns())
        self._f = open(self.path, "wb")
        self.proc = board.start(output=self._f, **kw)

    def text(self):
        return self.path.read_text(errors="replace")

    def failed(self):
        return "MemoryError" in self.text()

    def pump_until(self, peer, pred, timeout):
        """Pump ``peer`` until ``pred(peer)``, the end of the run, a MemoryError or ``timeout`` s."""
        end = time.monotonic() + timeout
        while not pred(peer) and self.proc.proc.poll() is None and time.monotonic() < end and not self.failed():
            peer.pump(0.05)

    def finish(self, peer, stop_after=None, timeout=20.0):
        """Stop (or wait for the end of) the run: its RunResult, and the console text."""
        if stop_after is not None and not self.failed():
            end = time.monotonic() + stop_after
            while self.proc.proc.poll() is None and time.monotonic() < end and not self.failed():
                peer.pump(0.05)
        elif stop_after is None:
            self.pump_until(peer, lambda p: False, timeout)
        r = self.proc.wait(timeout=0.01, stop_after=0.01) if self.proc.proc.poll() is None else self.proc.wait()
        peer.pump(0.2)
        self._f.close()
        return r, self.text()


def _first_memory_error(text):
    """Where the first MemoryError was logged (a task's crash or a link drop)."""
    lines = text.splitlines()
    for i, x in enumerate(lines):
        if "MemoryError" in x:
            where = [y.strip() for y in lines[max(0, i - 3):i] if y.strip().startswith("File")]
            return "%s%s" % (x.strip()[:80], " at " + where[-1] if where else "")
    return ""


def bh1750(lux):
    counts = int(lux * 1.2)
    return [counts >> 8, counts & 0xFF]


def streetlight_world():
    # BH1750 reads in turn, one a tick (the last repeats): day, dusk, night, dawn, day.
    reads = [bh1750(2000)] * 6 + [bh1750(2)] * 40 + [bh1750(5000)]
    return {
        "i2c": {0x23: {"reads": reads}, 0x40: {"regs": {2: b"\x60\xe2", 4: b"\x00\x33"}}},  # lamp open
        "pins": {27: [(0, 0), (3000, 1), (3200, 0)]},  # PIR: someone walks by at night
    }


def streetlight_day(board, broker, heap):
    from linli.link import Role
    from node_peer import MqttPeer, node_files

    peer = MqttPeer(broker, role=Role.STREETLIGHT, client_id="gw-bench-%d" % time.monotonic_ns())
    world = streetlight_world()
    files = node_files(broker_port=broker.port, role="streetlight", report_s=60,
                       streetlight={"profile": [[0, 40]], "ina_pv": None, "tick_ms": 100, "dwell_s": 1,
                                    "settle_s": 1, "fault_s": 1, "hold_s": 1})
    sent = []

    def lamp(p):
        return [s.body["lamp"] for s in p.new("telemetry") if "lamp" in s.body]

    def night_done(p):
        lv = lamp(p)
        if not sent and lv and lv[-1] > 0:  # night: the gateway sends two commands
            p.command(3, "lamp.level", {"level": 300})  # refused: range
            p.command(4, "lamp.mode", {"mode": "auto"})
            sent.append(1)
        faults = [s for s in p.new("event") if s.body.get("ev") == "lamp_fault"]
        return len(p.new("command_result")) >= 2 and faults and lv and lv[-1] == 0

    try:
        run = _Run(board, world=world, files=files, heap=heap)
        run.pump_until(peer, night_done, 60)
        r, text = run.finish(peer, stop_after=3.0)  # and some day ticks after dawn
        if "MemoryError" in text:
            return _first_memory_error(text)
        if r.exception or r.end != "stopped":
            exc = r.exception or {}
            return "end=%s %s %s" % (r.end, exc.get("type"), exc.get("message"))
        lv = lamp(peer)
        on = [i for i, v in enumerate(lv) if v > 0]
        if not on or 0 not in lv[on[0]:]:
            return "the lamp did not go on and off: %s" % lv
        if not [s for s in peer.new("event") if s.body.get("ev") == "lamp_fault"]:
            return "no lamp_fault"
        if len(peer.new("command_result")) < 2:
            return "command results missing"
        return None
    finally:
        peer.close()


def petscan_world(tags):
    # 6 scans 0.8 s apart once the link is up (4 good tags, 2 bad), then the fouling button.
    good, bad = tags
    texts = [good[0], bad[0], good[1], good[2], bad[1], good[3]]
    sched = [(2500 + i * 800, t + "\r") for i, t in enumerate(texts)]
    end = 2500 + len(texts) * 800 + 500
    return {"uart": {1: {"schedule": sched}}, "pins": {33: [(0, 1), (end, 0), (end + 200, 1)]}}


def petscan_day(board, broker, heap, tags):
    from linli.link import Role
    from node_peer import MqttPeer, node_files

    peer = MqttPeer(broker, role=Role.PETSCAN, client_id="gw-bench-%d" % time.monotonic_ns())
    world = petscan_world(tags)
    answered = set()

    def answer(p):
        for s in p.new("event"):
            if s.body.get("ev") == "scan" and s.counter not in answered:  # as linli.ingest
                answered.add(s.counter)
                p.command(s.counter, "pet.status", {"tag": s.body["tag"][4:12], "status": "green", "buzz": "ok"})
        return [s for s in p.new("event") if s.body.get("ev") == "fouling"]

    try:
        run = _Run(board, world=world, files=node_files(broker_port=broker.port, role="petscan"), heap=heap)
        run.pump_until(peer, answer, 60)
        r, text = run.finish(peer, stop_after=0.5)
        if "MemoryError" in text:
            return _first_memory_error(text)
        if r.exception or r.end != "stopped":
            exc = r.exception or {}
            return "end=%s %s %s" % (r.end, exc.get("type"), exc.get("message"))
        scans = [s for s in peer.new("event") if s.body.get("ev") == "scan"]
        if len(scans) != 4:
            return "%d scans, not 4" % len(scans)
        if not answer(peer):
            return "no fouling"
        if len(peer.new("command_result")) != 4:
            return "%d pet.status results, not 4" % len(peer.new("command_result"))
        return None
    finally:
        peer.close()


_TOUCH = """import gc
from machine import I2C, UART, Pin, ADC
devs = [I2C(0), UART(1), UART(2), Pin(27, Pin.IN), Pin(26, Pin.IN), Pin(33, Pin.IN), ADC(Pin(35))]
gc.collect()
print(gc.mem_alloc())
"""


def world_cost(board, world):
    """Heap (host bytes) the sim takes for ``world``: its script is parsed into the same heap
    as the firmware, which an ESP32's real world does not cost. Added to the heap of a trial,
    as the harness adds the sim's own heap."""
    got = []
    for w in ({}, world):
        r = board.run(_TOUCH, world=w, compiled=False, heap="256wK", timeout=30)
        got.append(int(r.stdout.strip().splitlines()[-1]))
    return max(0, got[1] - got[0])


def fwbuild_bundle(role, work):
    """The role's bundle as ``linli firmware build`` makes it (portable bytecode: the unix port
    cannot load xtensawin code); its romfs.img is what ``linli flash`` puts in the partition."""
    from linli import fwbuild

    out = work / "bundles" / role
    if not out.exists():
        fwbuild.build(role, out, arch=None)
    return out


def smallest_heap(name, trial, workdir, tools, build, extra=0, rom=None):
    """Bisect N (steps of 2) for the smallest heap NwK (plus ``extra`` bytes: the world's
    cost) where ``trial`` passes; ``rom``: the firmware runs from this ROMFS image."""
    seq = [0]

    def ok(n):
        seq[0] += 1
        board = MicroPython(workdir / ("%s-%d-%d" % (name, n, seq[0])), tools, build)
        if rom is not None:
            board.flash_romfs(rom)
        try:
            t = time.monotonic()
            why = trial(board, heap_bytes("%dwK" % n) + extra)
            log("  %s at %dwK: %s (%.1f s)", name, n, why or "ok", time.monotonic() - t)
            return why is None
        finally:
            board.close()
            shutil.rmtree(board.flash.parent, ignore_errors=True)

    lo, hi = LO, HI  # invariant: fails at lo (assumed), passes at hi
    if not ok(hi):
        return None
    while hi - lo > STEP:
        mid = (lo + hi) // 2
        mid -= mid % STEP
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


# -- 2. heap drift over 10,000 iterations ----------------------------------------------------

_DRIFT_HEAD = """
import gc, json, time
from node import config
cfg = config.load()
from hal import Board
from node.runtime import Node
hal = Board()
class _NoRole:  # the role under test is built below, by hand
    def __init__(self, node, hal, cfg):
        pass
node = Node(hal, cfg, _NoRole)
def acked():  # the gateway's acks: the queue empties as on a good link
    q = node.queue
    for c in q.counters():
        q.ack(c)
N = 10000
free = {}
def mark(i):
    if i == 100 or i == N:
        gc.collect()
        free[i] = gc.mem_free()
"""

_DRIFT_TAIL = """
print(json.dumps({"k": "drift", "free100": free[100], "free10000": free[N], "drift": free[100] - free[N],
                  "frames": node.ctr.peek()}))
"""

DRIFT = {
    # One wake's logic and sending, 10,000 times: readings -> core.update -> frames sealed,
    # queued (flash) and acked; the state saved as at the end of a wake.
    "bin": """
from roles.bin import Bin, STATE_FILE
from roles.common import save_json
b = Bin(node, hal, cfg)
from roles import bin_core
core = bin_core.BinCore(b.c, cfg["report_s"], None, None)
t = 1772323200
for i in range(1, N + 1):
    mm = 900 - (i % 700)
    r = {"lid": 0, "tilt": 0, "mm": [mm, mm + 1, mm - 1, mm, mm + 2], "w_g": None, "bat": 3.7 + (i % 10) / 100,
         "temp": 20 + (i % 30)}
    tele, evs = core.update(t, r, wake=True)
    b._send(tele, evs)
    save_json(STATE_FILE, core.state())
    acked()
    t += 300
    mark(i)
""",
    # Streetlight.step on readings a tick apart (1 s of role time each): day and night in turn
    # (a 20-minute "day"), motion now and then, battery and lamp current, the daily energy.
    "streetlight": """
from roles.streetlight import Streetlight
s = Streetlight(node, hal, cfg)
T = [0]
s.now = lambda: T[0]
for i in range(1, N + 1):
    T[0] = i
    night = (i // 600) % 2 == 1
    r = {"lux": 2.0 if night else 3000.0 + (i % 50), "motion": i % 97 == 0, "lv": 12.4 - (i % 40) / 100,
         "ma": 500.0 if night else 0.0, "bat": 12.4 - (i % 40) / 100}
    s.step(r)
    acked()
    mark(i)
""",
    # Petscan.step every 20 ms of role time: a scan every 250 passes (good and bad tags in
    # turn), the gateway's answer 5 passes later, the fouling button now and then.
    "petscan": """
from roles.petscan import Petscan
p = Petscan(node, hal, cfg)
TAGS = %r
class Button:
    i = 0
    def value(self):
        return 0 if self.i %% 1000 in (600, 601, 602) else 1
btn = p.button = Button()
scan = [None]
p.qr.poll = lambda: scan[0]
now = 1000
for i in range(1, N + 1):
    btn.i = i
    scan[0] = TAGS[(i // 250) %% len(TAGS)] if i %% 250 == 0 else None
    p.step(now)
    if i %% 250 == 5:
        p.on_command("pet.status", {"tag": TAGS[(i // 250) %% len(TAGS)][4:12], "status": "green", "buzz": "ok"})
    acked()
    now += 20
    mark(i)
""",
}


def drift(board, role, world, tags, extra=None):
    from node_peer import node_files

    code = _DRIFT_HEAD + (DRIFT[role] % (tags,) if role == "petscan" else DRIFT[role]) + _DRIFT_TAIL
    files = node_files(role=role, transport="serial", **(extra or {}))
    r = board.run(code, world=world, files=files, heap="128wK", timeout=300)
    if r.end != "exit" or r.returncode != 0:
        return {"error": r.describe()[-800:]}
    got = _lines(r.stdout, "drift")
    return got[-1] if got else {"error": r.describe()[-800:]}


# -- 3. .mpy sizes -----------------------------------------------------------------------------

# What a node of a role has imported: at its deep sleep (bin) or 3 s after boot (always-on roles),
# and what it imported and dropped again before (the config checks, the role's settings, the
# bin's drivers): all of it is in the bundle it loads.
_MODULES = """
import sys, json, asyncio
from node import config
from roles import common
GONE = set()
_load = config.load
def load(*a):
    GONE.add("node.config")
    return _load(*a)
config.load = load
_unload = common.unload
def unload(name):
    if name in sys.modules:
        GONE.add(name)
    _unload(name)
common.unload = unload
from node import runtime
def _show():
    print(json.dumps({"k": "modules", "m": sorted(set(sys.modules) | GONE)}))
    raise SystemExit
async def _sleep(self, s):
    _show()
async def _peek():
    await asyncio.sleep_ms(3000)
    _show()
_run = runtime.Node.run
async def run(self):
    asyncio.create_task(_peek())
    await _run(self)
runtime.Node.sleep = _sleep
runtime.Node.run = run
runtime.main()
"""


def loaded_modules(board, files, world):
    r = board.run(_MODULES, world=world, files=files, heap="128wK", timeout=30)
    got = _lines(r.stdout, "modules")
    return got[-1]["m"] if got else None


def mpy_sizes(build):
    files = {p.relative_to(build.out).as_posix(): p.stat().st_size for p in build.out.rglob("*.mpy")}
    return files


def bundle(files, modules):
    """Bytes of the .mpy files behind ``modules`` (sys.modules names) plus main.py's."""
    total = files.get("main.mpy", 0) + files.get("boot.mpy", 0)
    for m in modules:
        base = "lib/" + m.replace(".", "/")
        total += files.get(base + ".mpy", files.get(base + "/__init__.mpy", 0))
    return total


# -- 4. awake ms per bin report cycle ------------------------------------------------------------

_AWAKE = """
import time
T0 = time.ticks_ms()
import json, sys
from node import runtime
WAIT = [0]
def _timed(fn):
    async def w(self, *a):
        t = time.ticks_ms()
        try:
            return await fn(self, *a)
        finally:
            WAIT[0] += time.ticks_diff(time.ticks_ms(), t)
    return w
async def idle(self, timeout_s):
    ms = time.ticks_diff(time.ticks_ms(), T0)
    print(json.dumps({"k": "awake", "ms": ms, "sensor_wait_ms": WAIT[0], "queued": len(self.queue)}))
    raise SystemExit
runtime.Node.idle = idle
_load = runtime.Node._role
async def _role(self):
    from roles import bin as b
    b.Bin.pings = _timed(b.Bin.pings)
    b.Bin.weight = _timed(b.Bin.weight)
    await _load(self)
runtime.Node._role = _role
runtime.main()
"""


def awake_ms(board, runs=5):
    """Boot to the role's reports sealed and queued, over a serial link to nothing (no network)."""
    from node_peer import node_files

    files = node_files(transport="serial", bat_pin=35, report_s=HOUR, bin={"rfid": False, "cat": "recyclable"})
    got = []
    for i in range(runs):
        r = board.run(_AWAKE, world=bin_world(700 - i), files=files if not i else None, heap="64wK", timeout=60)
        lines = _lines(r.stdout, "awake")
        if not lines:
            return {"error": r.describe()[-800:]}
        got.append(lines[-1])
    got.sort(key=lambda g: g["ms"])
    med = got[len(got) // 2]
    return {"awake_ms": med["ms"], "awake_ms_cpu": med["ms"] - med["sensor_wait_ms"], "queued": med["queued"]}


# -- the run -------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the heap search (1.)")
    ap.add_argument("--roles", default="bin,streetlight,petscan")
    ap.add_argument("--deploy", default="romfs,files", help="how the modules are deployed: romfs (in place, "
                    "the figures <role>=NwK), files (the figures <role>_files=NwK), or both")
    args = ap.parse_args()
    roles = args.roles.split(",")
    deploys = args.deploy.split(",")
    mp, cross = find_micropython(), find_mpy_cross()
    if not mp or not cross or not find_mosquitto():
        print("missing tools: micropython=%s mpy-cross=%s mosquitto=%s" % (mp, cross, find_mosquitto()))
        print("firmware=unavailable")
        return
    from linli.pettag import make_tag

    key = b"k" * 32
    good = [make_tag(i, key) for i in ("7Q2M9XKD", "AB12CD34", "0123ABCD", "ZZZZ1234")]
    bad = ["hello", good[0][:-2]]
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="linli-bench-fw-") as tmp:
        work = Path(tmp)
        tools = probe(mp, cross, work / "probe")
        build = FirmwareBuild(cross, out=BUILD)
        build.update()
        log("micropython %s, sim heap %d bytes, word %d bytes", tools.version, tools.sim_heap, 8 if sys.maxsize > 2**32 else 4)
        broker = Broker(work / "mosquitto").start()
        try:
            # 1.
            trials = {
                "bin": lambda b, h: bin_day(b, broker, h),
                "streetlight": lambda b, h: streetlight_day(b, broker, h),
                "petscan": lambda b, h: petscan_day(b, broker, h, (good, bad)),
            }
            worlds_cost: dict = {}
            day_worlds = {"bin": bin_world(700), "streetlight": streetlight_world(), "petscan": petscan_world((good, bad))}
            for role in roles:
                if args.quick:
                    continue
                board = MicroPython(work / ("world-" + role), tools, build)
                extra = worlds_cost[role] = world_cost(board, day_worlds[role])
                log("%s: the sim's world takes %d bytes of the heap: added to each trial's", role, extra)
                rom = (fwbuild_bundle(role, work) / "romfs.img").read_bytes()
                out["romfs_" + role] = len(rom)
                for deploy in deploys:
                    t = time.monotonic()
                    key = role if deploy == "romfs" else "%s_%s" % (role, deploy)
                    n = smallest_heap(key, trials[role], work, tools, build, extra, rom if deploy == "romfs" else None)
                    out[key] = "%dwK" % n if n else ">%dwK" % HI
                    log("%s (%s): smallest heap %s (%.0f s)", role, deploy, out[key], time.monotonic() - t)
            if not args.quick:
                for deploy in deploys:
                    keys = [r if deploy == "romfs" else "%s_%s" % (r, deploy) for r in roles]
                    need = [int(out[k][:-2]) for k in keys if out[k][0] != ">"]
                    met = len(need) == len(roles) and max(need) <= GOAL_WK
                    out["goal_%dwK%s" % (GOAL_WK, "" if deploy == "romfs" else "_" + deploy)] = "met" if met else "missed"
                for role in roles:
                    out["world_" + role] = worlds_cost[role]
            # 2.
            worlds = {
                "bin": dict(bin_world(700), adc={"35": 40000}),
                "streetlight": {"i2c": {0x23: {"reads": [bh1750(3)]}, 0x40: {"regs": {2: b"\x60\xe2", 4: b"\x00\x33"}}}},
                "petscan": {},
            }
            extra = {"bin": {"bin": {"rfid": False}}, "streetlight": {"streetlight": {"ina_pv": None}}}
            for role in roles:
                board = MicroPython(work / ("drift-" + role), tools, build)
                d = drift(board, role, worlds[role], good + bad, extra.get(role))
                board.close()
                if "error" in d:
                    log("drift %s failed: %s", role, d["error"])
                    out["drift_" + role] = "error"
                    continue
                log("drift %s: free %d at 100, %d at 10000 (%d frames sealed)", role, d["free100"], d["free10000"], d["frames"])
                out["drift_" + role] = d["drift"]
            drifts = [out.get("drift_" + r) for r in roles]
            out["drift_goal_1KB"] = "met" if all(isinstance(d, int) and d < 1024 for d in drifts) else "missed"
            # 3.
            files_mpy = mpy_sizes(build)
            out["mpy_total"] = sum(files_mpy.values())
            for role in roles:
                board = MicroPython(work / ("mods-" + role), tools, build)
                from node_peer import node_files

                files = node_files(role=role, broker_port=broker.port, report_s=HOUR, **(extra.get(role) or {}))
                mods = loaded_modules(board, files, worlds[role])
                board.close()
                out["mpy_" + role] = bundle(files_mpy, mods) if mods else "error"
            # 4.
            board = MicroPython(work / "awake", tools, build)
            a = awake_ms(board)
            board.close()
            if "error" in a:
                log("awake failed: %s", a["error"])
                out["awake_ms"] = "error"
            else:
                out.update(awake_ms=a["awake_ms"], awake_ms_cpu=a["awake_ms_cpu"])
        finally:
            broker.kill()
    print(" ".join("%s=%s" % kv for kv in out.items()))


if __name__ == "__main__":
    main()
