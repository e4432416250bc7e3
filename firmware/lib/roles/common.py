"""Helpers the roles share: deadband reporting, latches, rounding, small JSON files on flash.

Telemetry carries changed values only: :func:`put` adds a reading to the report when it moved
by more than its deadband since it was last *reported* (not last read), so a slow drift is
reported once it adds up. The roles' settings and their checks are in :mod:`roles.settings`.
"""

# Events that set the frame's ALARM flag (docs/protocol.md section 8).
ALARMS = ("fire_risk", "tipped", "overflow", "lamp_fault")


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def unload(name):
    """Forget module ``name`` (``"roles.x"``): once nothing else refers to it, its code and
    tables leave the heap at the next collection. For code used once (settings at boot) or
    rarely (commands)."""
    import sys

    sys.modules.pop(name, None)
    pkg, _, attr = name.rpartition(".")
    p = sys.modules.get(pkg)
    if p is not None:
        try:
            delattr(p, attr)
        except (AttributeError, KeyError, TypeError):  # MicroPython: KeyError when absent
            pass


def load_json(path):
    """A small JSON file from flash (see node.flash), or None when absent or torn."""
    from node.flash import read

    b = read(path)
    if b is None:
        return None
    try:
        import json

        return json.loads(b)
    except ValueError:
        return None


def save_json(path, obj):
    """Write ``obj`` as JSON to flash atomically (a reader sees the old file or the new one)."""
    import json

    from node.flash import write_atomic

    write_atomic(path, json.dumps(obj).encode())


def put(out, last, key, v, db):
    """Add ``key: v`` to the report ``out`` if it moved by more than ``db`` since it was last
    reported (or was never reported), and remember it as reported. ``db`` < 0: any change.
    Returns True when added."""
    if v is None:
        return False
    old = last.get(key)
    if old is not None and (v == old or (db >= 0 and _num(v) and abs(v - old) < db)):
        return False
    out[key] = v
    last[key] = v
    return True


def latch(bits, bit, on, off):
    """Hysteresis on one bit of an int: returns (bits, change) where change is 1 when the bit
    set, -1 when it cleared, 0 otherwise."""
    if not bits & bit:
        if on:
            return bits | bit, 1
        return bits, 0
    if off:
        return bits & ~bit, -1
    return bits, 0


def round1(x):
    """``x`` rounded to 0.1 (a float), None stays None."""
    if x is None:
        return None
    return round(x * 10) / 10


def round2(x):
    if x is None:
        return None
    return round(x * 100) / 100
