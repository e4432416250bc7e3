# Helpers for the driver tests' MicroPython scripts (tests/test_drivers_*.py put this folder on
# the path): print results as one JSON line each, exceptions as "Type: message".
import json
from binascii import hexlify


def plain(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return hexlify(v).decode()
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


def out(name, v):
    print(json.dumps([name, plain(v)]))


def catch(fn, *args, **kw):
    """fn(*args) or, if it raises, "Type: message" (str) of the exception."""
    try:
        return fn(*args, **kw)
    except Exception as e:  # noqa: B902
        return "%s: %s" % (type(e).__name__, e)


def until(ms):
    """Sleep until the sim's clock (ms since the run started, as world schedules count) reaches ms."""
    import time
    import _sim

    while _sim.ms() < ms:
        time.sleep_ms(1)
