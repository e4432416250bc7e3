# Helpers for the role scenario scripts (tests/mp/roles/*.py), MicroPython side.
#
# Scripts print one JSON object a line; tests/test_role_*.py parse them. A pseudo-random
# generator with a fixed seed keeps the noise the same on every run and port.
import gc
import json


class Rand:
    """xorshift32: the same sequence on every port (MicroPython's random may be absent)."""

    def __init__(self, seed=2463534242):
        self.x = seed

    def next(self):
        x = self.x
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.x = x
        return x

    def uniform(self, lo, hi):
        return lo + (hi - lo) * (self.next() / 4294967296)

    def chance(self, p):
        return self.next() < p * 4294967296


def out(kind, **kw):
    kw["k"] = kind
    print(json.dumps(kw))


def heap(tag):
    """Print the heap in use now (after a collection): what the role keeps between steps."""
    gc.collect()
    out("heap", tag=tag, alloc=gc.mem_alloc(), free=gc.mem_free())
