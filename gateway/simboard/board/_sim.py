# Core of the simulated board, shared by machine.py and time.py (MicroPython only).
#
# The harness (tests/harness/micropython.py) writes world.json into the state dir before a run;
# this module loads it, streams what the firmware does to events.jsonl (one JSON array a line,
# written at once so a killed run still leaves its events), and keeps state.json across runs
# (RTC time and memory, the next reset cause). Firmware never imports this module.
import gc
import json
import micropython
import sys
import utime
from binascii import hexlify, unhexlify

PWRON, HARD, WDT, DEEPSLEEP, SOFT = 1, 2, 3, 4, 5
# Where the RTC starts after power-on: 2000-01-01 00:00:00 (an ESP32 without NTP).
_EPOCH_2000_MS = 946684800000

world = {}
state = {}
cause = PWRON
ended = None  # set once by finish(); later events are dropped (the chip is asleep / resetting)
_finishing = False
_dir = "."
_log = None
_t0 = utime.ticks_ms()
_rtc0 = _EPOCH_2000_MS  # sim wall time (ms since 1970) at _t0
_lock = None
_timers = []  # [due_ms, period_ms, fn, arg]; period 0 = once
_thread_on = False
wdt = None  # [timeout_ms, deadline_ms] once a WDT exists
_reserve = None  # heap the sim keeps back for ending a run whose firmware filled the heap


class End(SystemExit):
    """Raised by deepsleep()/reset() after the record is written: the run is over."""


def setup(state_dir):
    global world, state, cause, _dir, _log, _t0, _rtc0, _lock, _reserve
    import _thread

    # Part of the sim's own heap (measured at build and added on top of the firmware's): the
    # end of a run (the record, state.json) must not fail when the firmware leaked the rest.
    _reserve = bytearray(4096)

    _lock = _thread.allocate_lock()
    _dir = state_dir
    world = _load("world.json") or {}
    state = _load("state.json") or {}
    cause = world.get("reset_cause") or state.get("next_cause", PWRON)
    cause = _CAUSES.get(cause, cause)
    _t0 = utime.ticks_ms()
    if "rtc" in world:
        _rtc0 = _dt_to_ms(world["rtc"])
    elif "time" in world:
        _rtc0 = int(world["time"] * 1000)
    elif cause != PWRON and "rtc_ms" in state:
        _rtc0 = state["rtc_ms"]
    else:
        _rtc0 = _EPOCH_2000_MS
    if cause == PWRON:
        state["rtc_memory"] = ""
    _log = open(_dir + "/events.jsonl", "w")
    _mount_rom()
    emit("boot", cause, wake_reason())
    gc.collect()


_rom = None  # the ROMFS partition's bytes (kept: mounted code runs from them)


def _mount_rom():
    # The board's ROMFS partition is STATE_DIR/romfs.img. MicroPython mounts one at start-up on
    # /rom and adds /rom and /rom/lib to sys.path; a missing or invalid image is skipped, as there.
    # On an ESP32 it is memory-mapped flash; here it is one bytearray, read before the heap mark
    # (the sim's part, which the harness adds on top: see linli.simboard.runner.rom_heap).
    global _rom
    import os
    import vfs

    try:
        buf = bytearray(os.stat(_dir + "/romfs.img")[6])
        with open(_dir + "/romfs.img", "rb") as f:
            f.readinto(buf)
        vfs.mount(vfs.VfsRom(buf), "/rom")
    except OSError:
        return
    _rom = buf
    i = sys.path.index(".frozen") + 1 if ".frozen" in sys.path else len(sys.path)
    sys.path[i:i] = ["/rom", "/rom/lib"]


_CAUSES = {
    "PWRON_RESET": PWRON, "HARD_RESET": HARD, "WDT_RESET": WDT,
    "DEEPSLEEP_RESET": DEEPSLEEP, "SOFT_RESET": SOFT,
}
_WAKES = {"EXT0_WAKE": 2, "EXT0": 2, "PIN_WAKE": 2, "EXT1_WAKE": 3, "EXT1": 3,
          "TIMER_WAKE": 4, "TIMER": 4, "TOUCHPAD_WAKE": 5, "ULP_WAKE": 6}


def wake_reason():
    w = world.get("wake_reason")
    if w is not None:
        return _WAKES.get(w, w)
    if cause != DEEPSLEEP:
        return 0
    # A wake pin armed before the sleep (esp32.wake_on_ext0/ext1) that this run's world holds
    # at its level from the start woke the chip: EXT0 (2) first, then EXT1 (3), as an ESP32
    # reports one cause. EXT1 wakes on all its pins low, or on any of them high.
    armed = state.get("armed") or {}
    for src, code in (("ext0", 2), ("ext1", 3)):
        a = armed.get(src)
        if a:
            lv = [level_at(get("pins", p), 0) for p in a[0]]
            if (any(v == 1 for v in lv) if a[1] else all(v == 0 for v in lv)):
                return code
    return state.get("next_wake", 4)


armed = {}  # wake source -> [pin ids, level], as esp32 last set it (kept for the next run)


def arm(src, pins, level):
    if pins:
        armed[src] = [pins, level]
    else:
        armed.pop(src, None)


def _load(name):
    try:
        with open(_dir + "/" + name) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ms():
    """Milliseconds since this run started."""
    return utime.ticks_diff(utime.ticks_ms(), _t0)


def now_ms():
    """Sim wall time, ms since 1970: what the RTC shows."""
    return _rtc0 + ms()


def set_now_ms(t):
    global _rtc0
    _rtc0 = t - ms()


def _dt_to_ms(dt):
    # ESP32 RTC tuple: (year, month, day, weekday, hours, minutes, seconds, subseconds in us).
    # Computed here, not with time.mktime: the unix port's mktime follows the TZ variable.
    y, m = dt[0], dt[1]
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + dt[2] - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    secs = days * 86400 + dt[4] * 3600 + dt[5] * 60 + dt[6]
    return secs * 1000 + (dt[7] if len(dt) > 7 else 0) // 1000


def emit(*fields):
    """Append one event line to the log (dropped once the run has ended)."""
    if ended or _log is None:
        return
    line = json.dumps(fields)
    _lock.acquire()
    try:
        _log.write(line)
        _log.write("\n")
    finally:
        _lock.release()


def hx(buf):
    return hexlify(buf).decode()


def data(v):
    """World bytes: {"hex": ...}, a str (UTF-8) or a list of ints."""
    if v is None:
        return b""
    if isinstance(v, dict):
        return unhexlify(v["hex"])
    if isinstance(v, str):
        return v.encode()
    return bytes(v)


def get(section, key, default=None):
    s = world.get(section)
    if not s:
        return default
    return s.get(str(key), default)


def level_at(spec, t, default=None):
    """A world value at run time t: a constant, or a schedule [[at_ms, value], ...]."""
    if not isinstance(spec, list):
        return default if spec is None else spec
    v = default
    for at, val in spec:
        if at > t:
            break
        v = val
    return v


_idx = {}


def next_item(key, seq):
    """Take the next scripted item of a list in the world; the last one repeats."""
    if not seq:
        return None
    i = _idx.get(key, 0)
    _idx[key] = i + 1
    return seq[min(i, len(seq) - 1)]


# -- the clock thread: timed soft IRQs (pin schedules, Timer) and the watchdog ---------------

def add_timer(due, period, fn, arg):
    t = [due, period, fn, arg]
    _lock.acquire()
    _timers.append(t)
    _lock.release()
    _start_clock()
    return t


def cancel_timer(t):
    _lock.acquire()
    if t in _timers:
        _timers.remove(t)
    _lock.release()


def _start_clock():
    global _thread_on
    if not _thread_on:
        import _thread

        _thread_on = True
        _thread.start_new_thread(_clock, ())


def _clock():
    while not ended:
        try:
            _tick()
        except MemoryError:
            pass  # the firmware filled the heap: again next tick (a real watchdog needs no heap)
        utime.sleep_ms(2)


def _tick():
    now = ms()
    due = []
    _lock.acquire()
    try:
        for t in _timers:
            if t[0] <= now:
                due.append(t)
                if t[1]:
                    t[0] += t[1]
        for t in due:
            if not t[1] and t in _timers:
                _timers.remove(t)
    finally:
        _lock.release()
    for t in due:
        _soft_irq(t[2], t[3])
    if wdt and now > wdt[1]:
        release()
        emit("wdt_expired", now)
        if world.get("wdt", {}).get("reset", True):
            finish("wdt")
            hard_exit()  # a real watchdog resets the chip: nothing after this runs
        wdt[1] = 1 << 60


def _soft_irq(fn, arg):
    # Like an ESP32 soft IRQ: the handler runs on the main thread between bytecodes.
    for _ in range(100):
        try:
            micropython.schedule(_irq, (fn, arg))
            return
        except RuntimeError:  # schedule queue full
            utime.sleep_ms(1)


def _irq(call):
    try:
        call[0](call[1])
    except End:
        # deepsleep()/reset() in a handler: the port would only print an exception raised
        # here, so end the process the way the chip would (the record is already written).
        hard_exit()
    except Exception as e:
        # The port prints it and carries on, as an ESP32 does; the test gets to see it too.
        import io

        buf = io.StringIO()
        sys.print_exception(e, buf)
        emit("irq_exc", type(e).__name__, str(e), buf.getvalue())
        raise


def hard_exit():
    """End the process at once: no finally blocks, no atexit (a chip reset)."""
    import os

    os.system("kill -9 $PPID")


# -- the end of a run -----------------------------------------------------------------------

def release():
    """Give back the sim's reserve (a run is ending): what follows may need the heap."""
    global _reserve
    if _reserve is not None:
        _reserve = None
        gc.collect()


def finish(kind, info=None, sleep_ms=0):
    """Write the end record and the state for the next run, once."""
    global ended, _finishing
    if _finishing or _log is None:
        return
    release()
    _finishing = True  # the clock thread (watchdog) and the main thread may both get here
    nxt = {"deepsleep": DEEPSLEEP, "reset": SOFT, "wdt": WDT}.get(kind, PWRON)
    state["next_cause"] = nxt
    state["rtc_ms"] = now_ms() + sleep_ms
    state["armed"] = armed if nxt == DEEPSLEEP else {}
    if nxt == DEEPSLEEP:
        state["next_wake"] = 4 if sleep_ms else 0
    gc.collect()
    peak = micropython.mem_peak() if hasattr(micropython, "mem_peak") else None
    heap = [gc.mem_alloc() + gc.mem_free(), gc.mem_alloc(), peak, _heap0]
    emit("end", kind, info, ms(), heap)
    ended = kind
    with open(_dir + "/state.tmp", "w") as f:
        f.write(json.dumps(state))
    import os

    os.rename(_dir + "/state.tmp", _dir + "/state.json")  # a kill mid-write keeps the old state


def crash(e, kind="exception"):
    """Record an uncaught exception (also after a MemoryError: the first write allocates nothing)."""
    if _log is not None and not ended and isinstance(e, MemoryError):
        _log.write(b'["exc", "MemoryError", "", ""]\n')
    try:
        import io

        buf = io.StringIO()
        sys.print_exception(e, buf)
        emit("exc", type(e).__name__, str(e), buf.getvalue())
    except MemoryError:
        pass
    try:
        finish(kind, type(e).__name__)
    except MemoryError:
        pass


_heap0 = 0


def mark_heap():
    """Remember how much heap the sim itself uses before the firmware starts."""
    global _heap0
    gc.collect()
    _heap0 = gc.mem_alloc()
