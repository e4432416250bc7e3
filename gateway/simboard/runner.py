"""Run firmware on the real MicroPython unix port, on a simulated ESP32, under a heap limit.

The ``mpy`` fixture gives each test a :class:`MicroPython` with its own flash folder (the run's
working directory, kept across runs of the test) and sim state (RTC time and memory, the next
reset cause). A run starts ``micropython -X heapsize=...`` on ``gateway/simboard/board/_run.py`` with
MICROPYPATH = ``gateway/simboard/board`` (so its ``machine.py`` and ``time.py`` shadow the built-ins), any
``extra_path``, the flash root, the compiled ``firmware/lib`` and ``firmware/``, ``.frozen`` and
the flash's ``lib``. Firmware does not know it is under test: it imports ``machine`` as on an ESP32.

    def test_led_blinks(mpy):
        r = mpy.run("from machine import Pin\\np = Pin(2, Pin.OUT)\\np.on()\\np.off()")
        assert r.pin_values(2) == [1, 0]

Shadowing, as found on MicroPython 1.29: a ``machine.py`` ahead on the path replaces the unix
port's built-in ``machine`` (a stub with little more than ``mem32`` and ``time_pulse_us``), and a
``time.py`` replaces the built-in ``time`` while ``from utime import *`` inside it still reaches the
real one (since 1.21 the ``u``-names always mean the built-ins). So ``time.time()``/``gmtime()``
follow the sim RTC (deep sleep moves them on) and ``ticks_ms()``/``sleep_ms()`` stay the port's, so
asyncio is unchanged. Firmware that imports ``utime`` gets the host's wall clock instead.

The heap: ``heap="64wK"`` means 64 K words, so 64 KiB as on a 32-bit ESP32 (``w`` scales to the
host's word size). The heap the sim needs for itself is measured once and added on top, because
on an ESP32 ``machine`` costs no heap.

A ROMFS partition: ``mpy.write_romfs(image)`` gives the board one (``sim/romfs.img``, kept like the
flash). Its runs then mount it on ``/rom`` as MicroPython does at start-up, with ``/rom`` and
``/rom/lib`` on the path instead of the compiled tree, so the firmware's modules run in place from
it. An ESP32 maps the partition from flash; the sim holds it in one bytearray, whose heap
(:func:`rom_heap`) is added on top like the sim's own.

The world (what the firmware's hardware sees; bytes may be ``bytes``, ``str`` or lists of ints;
a *schedule* is a list of ``(at_ms, value)`` pairs, in ms since the start of the run)::

    {
      "pins":   {4: 1, 5: [(0, 1), (100, 0), (150, 1)]},   # input levels: constant or schedule;
                                                           # a schedule fires Pin.irq handlers
      "adc":    {34: 30000, 35: [(0, 1000), (500, 2000)]}, # read_u16() scale
      "pulses": {18: 580, 19: [580, 600, -1]},             # time_pulse_us(): value, or one per call
      "i2c":    {0x23: {"reads": [b"\\x12\\x34"]},          # register-less: readfrom() in turn
                 0x76: {"regs": {0xD0: b"\\x60"},           # readfrom_mem / writeto+readfrom
                        "bus": 0, "error": 5}},            # optional: only on bus 0; OSError(5)
      "spi":    {"reads": [b"\\x92"], "fill": 0,          # read()/readinto() in turn, then fill
                 "model": "sim_rc522"},                   # or a module on the path (extra_path)
                                                           # with transfer(bus, tx) -> rx bytes
      "uart":   {1: {"rx": b"AT\\r\\n", "schedule": [(200, b"OK\\r\\n")]},
                 2: {"device": "/dev/pts/7"},             # a real tty (serial_pty.device), or
                 3: {"fd": 9},                            # an fd handed to the child (pty master)
                 4: b"$GPGGA,...\\r\\n"},                   # short for {"rx": ...}
      "rtc":    (2024, 5, 1, 2, 12, 0, 0, 0),             # or "time": epoch seconds
      "reset_cause": "HARD_RESET", "wake_reason": "EXT0",  # override what follows from the last run
                                                           # (names as in machine, or ints)
      "unique_id": b"\\x24\\x0a\\xc4\\x00\\x00\\x01",
      "wdt":    {"reset": False},                         # record an expiry without ending the run
      "onewire": {4: {"ds18b20": [                        # onewire.OneWire(Pin(4)): the devices
                   {"rom": "28ff4c5c62160304",            # 8 bytes, hex (7: the CRC is added)
                    "temp": 21.5},                        # degC, or a list: one per CONVERT T
                   {"rom": "28a1b2c3d4e5f6", "pad": "50054b467fff0c101c"}]}},  # raw scratchpad
    }

A DS18B20 of the world shows its power-on scratchpad (85 degC) until its first CONVERT T, then
each conversion takes the next ``temp`` (the last one repeats); its scratchpad carries the CRC-8
a real one does. ``esp32.wake_on_ext0/ext1`` are recorded and act on the next run: after a
deep sleep, an armed pin that the next world holds at the armed level from its start (EXT1: all
its pins low, or any high) makes the wake reason EXT0/EXT1, else it is the timer's; the world's
``wake_reason`` overrides that.

Between runs: the flash folder persists; deepsleep(ms) makes the next run wake with
DEEPSLEEP_RESET/TIMER_WAKE, RTC moved on by ms and RTC memory kept; machine.reset() gives
SOFT_RESET; an expired WDT gives WDT_RESET; any other end is taken as a power cycle
(PWRON_RESET, RTC back to 2000-01-01, RTC memory cleared).

What the firmware did comes back in :class:`RunResult` (``record`` documents its keys).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from linli.simboard.build import FIRMWARE, RUNNER, SIM, FirmwareBuild, Tools

RESETS = {1: "PWRON_RESET", 2: "HARD_RESET", 3: "WDT_RESET", 4: "DEEPSLEEP_RESET", 5: "SOFT_RESET"}
_STOP_GRACE = 3.0


def heap_bytes(heap: str | int) -> int:
    """``"64wK"`` -> bytes on this host (the unix port's -X heapsize syntax)."""
    if isinstance(heap, int):
        return heap
    s = heap.strip()
    mult = {"K": 1024, "M": 1024 * 1024}.get(s[-1:].upper(), 1)
    s = s[:-1] if mult > 1 else s
    words = s.endswith("w")
    n = int(s[:-1] if words else s) * mult
    return n * struct.calcsize("P") // 4 if words else n


def rom_heap(size: int) -> int:
    """Heap (bytes, this host) a ``bytearray(size)`` takes with the GC's tables for it: what the
    sim adds for a ROMFS partition it holds in the heap (a board maps it from flash instead)."""
    block = 4 * struct.calcsize("P")  # MICROPY_BYTES_PER_GC_BLOCK
    used = (-(-size // block) + 1) * block  # the buffer, and the bytearray object
    # Each 4 blocks of pool cost 1 byte of allocation table and half a byte of finaliser table.
    return -(-used * (8 * block + 3) // (8 * block)) + block


def _jsonable(v: Any, fds: list[int]) -> Any:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"hex": bytes(v).hex()}
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if k == "fd":
                fds.append(int(x))
            out[str(k)] = _jsonable(x, fds)
        return out
    if isinstance(v, (list, tuple)):
        return [_jsonable(x, fds) for x in v]
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return v


@dataclass
class RunResult:
    """What one run did. ``record`` has the keys below; the properties are shortcuts.

    ``end`` ("exit", "exception", "deepsleep", "reset", "wdt", "stopped"; None if killed),
    ``exit_code``, ``end_ms``, ``reset_cause`` (int, this run's), ``wake_reason``,
    ``pins`` {id: [(ms, level)]}, ``pwm`` {id: [(ms, freq, duty_u16 or None)]},
    ``uart_tx`` {id: [(ms, bytes)]}, ``i2c_writes`` [(bus, addr, reg or None, bytes, ms)],
    ``spi_writes`` [(bus, bytes, ms)], ``wdt`` {"timeout", "feeds", "expired_ms"},
    ``deepsleep_ms``, ``wake`` {"ext0"/"ext1"/"touch"/"ulp": {"pins": [ids] or None,
    "level": 0/1, "ms"}} (the wake sources last set through ``esp32``), ``lightsleeps`` [(ms, duration)], ``reset`` ("soft", "wdt" or None),
    ``rtc_sets`` [(ms, epoch_ms)], ``freq`` [(ms, hz)], ``exception`` {"type", "message",
    "traceback"} or None, ``irq_exceptions`` [the same, raised in IRQ/Timer handlers: the
    port prints them and carries on], ``stopped_at`` (the same for a run the harness stopped),
    ``heap`` {"total", "alloc_end", "peak", "sim"} (bytes, this host).
    """

    returncode: int | None
    stdout: str
    stderr: str
    record: dict
    events: list = field(repr=False)
    flash: Path = field(repr=False)
    timed_out: bool = False
    stopped: bool = False

    @property
    def end(self) -> str | None:
        return self.record["end"]

    @property
    def deepsleep_ms(self) -> int | None:
        return self.record["deepsleep_ms"]

    @property
    def reset(self) -> str | None:
        return self.record["reset"]

    @property
    def exception(self) -> dict | None:
        return self.record["exception"]

    @property
    def reset_cause(self) -> str:
        return RESETS.get(self.record["reset_cause"], str(self.record["reset_cause"]))

    def pin(self, pin: int) -> list[tuple[int, int]]:
        """(ms, level) of every change the firmware made on an output."""
        return self.record["pins"].get(pin, [])

    def pin_values(self, pin: int) -> list[int]:
        return [v for _, v in self.pin(pin)]

    def pwm(self, pin: int) -> list[tuple]:
        return self.record["pwm"].get(pin, [])

    def uart_tx(self, uart: int) -> bytes:
        """Everything the firmware wrote to a UART."""
        return b"".join(b for _, b in self.record["uart_tx"].get(uart, []))

    def i2c_writes(self, addr: int | None = None) -> list[tuple[int | None, bytes]]:
        """(reg, data) written to a device (reg None for plain writeto)."""
        return [(reg, b) for _, a, reg, b, _ in self.record["i2c_writes"] if addr in (None, a)]

    def describe(self) -> str:
        """A summary for assertion messages."""
        exc = self.exception["traceback"] if self.exception else ""
        return "end=%s rc=%s timed_out=%s\n--- stdout\n%s\n--- stderr\n%s\n%s" % (
            self.end, self.returncode, self.timed_out, self.stdout[-3000:], self.stderr[-3000:], exc,
        )

    def expect_ok(self) -> RunResult:
        """Raise AssertionError unless the run ended cleanly (exit, deepsleep, reset, stop)."""
        ok = (
            not self.timed_out
            and self.end in ("exit", "deepsleep", "reset", "stopped")
            and self.record["exit_code"] in (0, None)
        )
        assert ok, "MicroPython run failed: " + self.describe()
        return self


def summarize(events: list) -> dict:
    """Fold the event lines of a run into the record documented on RunResult."""
    rec: dict[str, Any] = {
        "end": None, "exit_code": None, "end_ms": None, "reset_cause": None, "wake_reason": None,
        "pins": {}, "pwm": {}, "uart_tx": {}, "i2c_writes": [], "spi_writes": [],
        "wdt": {"timeout": None, "feeds": 0, "expired_ms": None}, "deepsleep_ms": None, "wake": {},
        "lightsleeps": [], "reset": None, "rtc_sets": [], "freq": [], "exception": None,
        "irq_exceptions": [], "stopped_at": None, "heap": None,
    }
    for ev in events:
        kind, a = ev[0], ev[1:]
        if kind == "boot":
            rec["reset_cause"], rec["wake_reason"] = a
        elif kind == "pin":
            rec["pins"].setdefault(a[0], []).append((a[1], a[2]))
        elif kind == "pwm":
            rec["pwm"].setdefault(a[0], []).append(tuple(a[1:]))
        elif kind == "uart":
            rec["uart_tx"].setdefault(a[0], []).append((a[1], bytes.fromhex(a[2])))
        elif kind == "i2c":
            rec["i2c_writes"].append((a[0], a[1], a[2], bytes.fromhex(a[3]), a[4]))
        elif kind == "spi":
            rec["spi_writes"].append((a[0], bytes.fromhex(a[1]), a[2]))
        elif kind == "wdt":
            rec["wdt"]["timeout"] = a[1]
        elif kind == "wdt_feed":
            rec["wdt"]["feeds"] += 1
        elif kind == "wdt_expired":
            rec["wdt"]["expired_ms"] = a[0]
        elif kind == "deepsleep":
            rec["deepsleep_ms"] = a[1]
        elif kind == "wake":
            rec["wake"][a[0]] = {"pins": a[1], "level": a[2], "ms": a[3]}
        elif kind == "lightsleep":
            rec["lightsleeps"].append(tuple(a))
        elif kind == "reset":
            rec["reset"] = a[1]
        elif kind == "rtc":
            rec["rtc_sets"].append(tuple(a))
        elif kind == "freq":
            rec["freq"].append(tuple(a))
        elif kind == "exc":
            rec["exception"] = {"type": a[0], "message": a[1], "traceback": a[2]}
        elif kind == "irq_exc":
            rec["irq_exceptions"].append({"type": a[0], "message": a[1], "traceback": a[2]})
        elif kind == "end":
            rec["end"], info, rec["end_ms"], heap = a
            if rec["end"] == "exit":
                rec["exit_code"] = info
            elif rec["end"] == "wdt":
                rec["reset"] = "wdt"
            rec["heap"] = dict(zip(("total", "alloc_end", "peak", "sim"), heap))
    if rec["end"] == "stopped":  # Ctrl-C from the harness: where it was, not a crash
        rec["stopped_at"], rec["exception"] = rec["exception"], None
    return rec


def read_events(path: Path) -> list:
    events = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass  # a line cut short by a kill
    return events


class MicroPythonProcess:
    """A run in progress (from :meth:`MicroPython.start`); ``wait()`` gives its RunResult."""

    def __init__(self, proc: subprocess.Popen, state: Path, flash: Path):
        self.proc = proc
        self.state = state
        self.flash = flash

    def wait(self, timeout: float = 30, stop_after: float | None = None) -> RunResult:
        """Wait for the end; at ``stop_after`` s (a normal stop) or ``timeout`` s (a failure) send
        Ctrl-C (the record then shows where the firmware was), and kill it if that does not end it."""
        limit = timeout if stop_after is None else min(stop_after, timeout)
        timed_out = stopped = False
        try:
            out, err = self.proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            stopped = stop_after is not None and stop_after <= timeout
            timed_out = not stopped
            self.proc.send_signal(signal.SIGINT)
            try:
                out, err = self.proc.communicate(timeout=_STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, err = self.proc.communicate()
        events = read_events(self.state / "events.jsonl")
        return RunResult(
            self.proc.returncode, (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace"),
            summarize(events), events, self.flash, timed_out, stopped,
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


class MicroPython:
    """The firmware's interpreter for one test: a flash folder, sim state and runs (fixture ``mpy``)."""

    def __init__(self, root: Path, tools: Tools, build: FirmwareBuild | None):
        self.tools = tools
        self.build = build
        self.flash = root / "flash"
        self.state = root / "sim"
        self.flash.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        self._procs: list[MicroPythonProcess] = []

    def path(self, compiled: bool = True, extra_path=()) -> list[str]:
        """The MICROPYPATH entries of a run."""
        if self.rom.exists():
            fw = []  # the board's code is in its ROMFS partition (mounted by the sim)
        elif compiled:
            if self.build is None:
                raise RuntimeError("compiled=True needs the firmware_build fixture")
            fw = [str(self.build.lib), str(self.build.out)]
        else:
            src = self.build.source if self.build else FIRMWARE
            fw = [str(src / "lib"), str(src)]
        return [str(SIM), *map(str, extra_path), "", *fw, ".frozen", str(self.flash / "lib")]

    @property
    def rom(self) -> Path:
        """The board's ROMFS partition (absent: the board has none)."""
        return self.state / "romfs.img"

    def write_romfs(self, image: bytes | None) -> None:
        """Give the board a ROMFS partition holding ``image`` (``None``: no partition)."""
        if image is None:
            self.rom.unlink(missing_ok=True)
        else:
            self.rom.write_bytes(image)

    def flash_romfs(self, image: bytes) -> None:
        """Leave the board as ``linli flash`` leaves one with a ROMFS partition: the modules in
        ``image``, and boot.py and main.py (source: MicroPython runs them by name) in the flash."""
        self.write_romfs(image)
        src = self.build.source if self.build else FIRMWARE
        for script in ("boot.py", "main.py"):
            shutil.copyfile(src / script, self.flash / script)

    def start(
        self, code: str | None = None, *, main: str | None = None, world: dict | None = None,
        heap: str | int = "64wK", compiled: bool = True, extra_path=(), files: dict | None = None,
        output=None,
    ) -> MicroPythonProcess:
        """Start a run without waiting (for firmware that talks to the test while it runs).

        ``code`` runs as a main script; ``main`` imports a module ("roles.bin") or calls a
        function in it ("roles.bin:run"; a coroutine is run with asyncio); with neither, the
        board boots: boot.py then main.py. ``files`` (name -> bytes/str/Path) go to the flash first.
        ``output`` (an open file) takes stdout and stderr instead of pipes, for long runs whose
        output would fill a pipe (``linli demo``); the result's stdout/stderr are then empty.
        """
        if any(h.proc.poll() is None for h in self._procs):
            raise RuntimeError("a run of this board is still going: wait() for it first")
        for name, content in (files or {}).items():
            dest = self.flash / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, os.PathLike):
                shutil.copyfile(content, dest)
            else:
                dest.write_bytes(content.encode() if isinstance(content, str) else bytes(content))
        fds: list[int] = []
        (self.state / "world.json").write_text(json.dumps(_jsonable(world or {}, fds)))
        (self.state / "events.jsonl").unlink(missing_ok=True)
        if code is not None:
            (self.state / "code.py").write_text(code)
            args = ["code"]
        elif main is not None:
            args = ["module", main]
        else:
            args = ["board"]
        env = dict(os.environ, MICROPYPATH=":".join(self.path(compiled, extra_path)), TZ="UTC")
        size = heap_bytes(heap) + self.tools.sim_heap + (rom_heap(self.rom.stat().st_size) if self.rom.exists() else 0)
        proc = subprocess.Popen(
            [self.tools.micropython, "-X", "heapsize=%d" % size, str(RUNNER), str(self.state), *args],
            cwd=self.flash, env=env, stdin=subprocess.DEVNULL, stdout=output or subprocess.PIPE,
            stderr=subprocess.STDOUT if output else subprocess.PIPE, pass_fds=fds,
        )
        handle = MicroPythonProcess(proc, self.state, self.flash)
        self._procs.append(handle)
        return handle

    def run(
        self, code: str | None = None, *, main: str | None = None, world: dict | None = None,
        heap: str | int = "64wK", timeout: float = 30, stop_after: float | None = None,
        compiled: bool = True, extra_path=(), files: dict | None = None,
    ) -> RunResult:
        """Run to the end (or ``stop_after`` seconds for firmware that loops forever).

            r = mpy.run(main="main", world={"pins": {0: 0}}, stop_after=1.0)
            assert r.stopped and r.end == "stopped" and r.exception is None
        """
        handle = self.start(
            code, main=main, world=world, heap=heap, compiled=compiled, extra_path=extra_path, files=files,
        )
        return handle.wait(timeout=timeout, stop_after=stop_after)

    def run_vectors(self, vectors: str | os.PathLike, code: str, **kw) -> list:
        """Feed each JSON line of ``vectors`` to ``check(vector)`` defined by ``code``; return
        the results in order (bytes become hex; an exception becomes {"error": name, "message"}).

            got = mpy.run_vectors(VECTORS / "frames.jsonl", '''
            from link import frame
            def check(v):
                return frame.crc16(bytes.fromhex(v["frame"]))
            ''')
        """
        out = self.state / "results.jsonl"
        out.unlink(missing_ok=True)
        driver = _VECTOR_DRIVER % (os.fspath(Path(vectors).resolve()), os.fspath(out))
        result = self.run(_dedent(code) + driver, **kw)
        assert result.end == "exit" and result.returncode == 0, "vector run failed: " + result.describe()
        return [json.loads(line) for line in out.read_text().splitlines()]

    def close(self) -> None:
        for handle in self._procs:
            handle.kill()


def _dedent(code: str) -> str:
    import textwrap

    return textwrap.dedent(code).strip("\n") + "\n"


# Streams the file a line at a time, so large vector files fit the heap.
_VECTOR_DRIVER = """
import gc as _gc, json as _json
from binascii import hexlify as _hexlify


def _plain(r):
    if isinstance(r, (bytes, bytearray, memoryview)):
        return _hexlify(r).decode()
    if isinstance(r, dict):
        return {k: _plain(x) for k, x in r.items()}
    if isinstance(r, (list, tuple)):
        return [_plain(x) for x in r]
    return r


with open(%r) as _src, open(%r, "w") as _out:
    for _line in _src:
        if not _line.strip():
            continue
        try:
            _r = _plain(check(_json.loads(_line)))
        except Exception as _e:
            _r = {"error": type(_e).__name__, "message": str(_e)}
        _out.write(_json.dumps(_r))
        _out.write("\\n")
        _gc.collect()
"""
