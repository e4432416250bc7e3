"""Shared by the driver tests: run a MicroPython snippet with the driver fakes on the path and
collect what it reported through ``drvtest.out(key, value)`` (one JSON ``[key, value]`` line each)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

MP_DRIVERS = Path(__file__).parent / "mp" / "drivers"


def run(mpy, code, **kw):
    r = mpy.run(textwrap.dedent(code), extra_path=[MP_DRIVERS], **kw).expect_ok()
    res = {}
    for line in r.stdout.splitlines():
        if line.startswith("["):
            k, v = json.loads(line)
            res[k] = v
    return r, res
