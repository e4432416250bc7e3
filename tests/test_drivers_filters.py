"""firmware/lib/filters.py on the MicroPython unix port (as .mpy, 64 KiB heap), against
straightforward CPython references (``statistics.median``, a textbook Hampel filter)."""

from __future__ import annotations

import json
import random
import statistics
import textwrap
from pathlib import Path

import pytest

from drivers_run import MP_DRIVERS, run  # noqa: F401
pytestmark = pytest.mark.micropython


def ref_hampel(xs, n, k, floor):
    win, out, rejected = [], [], 0
    for x in xs:
        y = x
        if len(win) >= 3:
            med = statistics.median(win)
            mad = statistics.median([abs(w - med) for w in win])
            if abs(x - med) > max(k * 1.4826 * mad, floor):
                y, rejected = med, rejected + 1
        out.append(y)
        win = (win + [x])[-n:]
    return out, rejected


def test_spike_is_rejected_and_a_real_step_gets_through(mpy):
    steady = [1000, 1002, 999, 1001, 998, 1000, 1003]
    spike = steady + [3000] + [1001, 999]
    step = steady + [500] * 6
    _, res = run(mpy, """
        from filters import Hampel
        from drvtest import out
        h = Hampel(7, k=3, floor=5)
        out("spike", [h.add(x) for x in %r])
        out("spike_rejected", h.rejected)
        h = Hampel(7, k=3, floor=5)
        got = []
        for x in %r:
            got.append([h.add(x), h.last_rejected])
        out("step", got)
        """ % (spike, step))
    assert res["spike"][7] == 1000  # the 3000 mm echo is replaced by the window's median
    assert res["spike"][:7] == steady and res["spike"][8:] == [1001, 999]
    assert res["spike_rejected"] == 1
    # A bin emptied: 1000 -> 500. Held at the old level while the new one is a minority of the
    # 7-reading window it is compared with, accepted from the 5th reading on.
    assert [r for _, r in res["step"][7:]] == [True, True, True, True, False, False]
    assert all(998 <= v <= 1000 for v, _ in res["step"][7:11])
    assert [v for v, _ in res["step"][11:]] == [500, 500]


def test_median_of_n_and_hampel_match_references_on_noisy_data(mpy):
    rnd = random.Random(20240601)
    seqs = []
    for _ in range(25):
        base = rnd.randint(300, 4000)
        xs = [base + rnd.randint(-15, 15) for _ in range(40)]
        for _ in range(4):  # spikes: multipath echoes, a hand over the sensor
            xs[rnd.randrange(40)] = rnd.choice([0, 4500, base * 3])
        seqs.append(xs)
    _, res = run(mpy, """
        import gc, json
        from filters import Hampel, Median, median
        from drvtest import out
        seqs = json.loads(%r)
        for i, xs in enumerate(seqs):
            m = Median(5)
            h = Hampel(7, k=3, floor=10)
            out("median%%d" %% i, [m.add(x) for x in xs])
            out("hampel%%d" %% i, [h.add(x) for x in xs])
            out("rejected%%d" %% i, h.rejected)
            out("lists%%d" %% i, [median(xs[:5]), median(xs[:6])])
            gc.collect()
        """ % json.dumps(seqs))
    for i, xs in enumerate(seqs):
        want = [statistics.median(xs[max(0, j - 4) : j + 1]) for j in range(len(xs))]
        assert res["median%d" % i] == pytest.approx(want)
        ham, rejected = ref_hampel(xs, 7, 3, 10)
        assert res["hampel%d" % i] == pytest.approx(ham)
        assert res["rejected%d" % i] == rejected
        assert res["lists%d" % i] == pytest.approx([statistics.median(xs[:5]), statistics.median(xs[:6])])
        # No spike survives: after the first window every output sits in the noise band.
        level = statistics.median(xs)
        assert all(abs(v - level) <= 30 for v in res["hampel%d" % i][7:])


def test_ema_and_window_arguments(mpy):
    _, res = run(mpy, """
        from filters import EMA, Hampel, Median
        from drvtest import catch, out
        e = EMA(0.25)
        out("ema", [e.add(x) for x in (0, 100, 100, 100)])
        e.reset()
        out("ema_reset", e.add(7))
        out("bad", [catch(EMA, 0), catch(EMA, 1.5), catch(Median, 0), catch(Hampel, 2)])
        m = Median(3)
        out("median_even_start", [m.add(4), m.add(8), m.add(1), m.add(9)])
        """)
    assert res["ema"] == [0, 25.0, 43.75, 57.8125]
    assert res["ema_reset"] == 7
    assert all(b.startswith("ValueError: ") for b in res["bad"])
    assert res["median_even_start"] == [4, 6.0, 4, 8]


@pytest.mark.parametrize("t_c", [-10, 0, 20, 31.5, 40])
def test_ultrasound_temperature_compensation(mpy, t_c):
    c = 331.3 + 0.606 * t_c
    _, res = run(mpy, """
        from filters import compensate_mm, echo_mm, speed_of_sound
        from drvtest import out
        out("c", speed_of_sound(%r))
        out("mm", [echo_mm(us, %r) for us in (175, 5831, 23300)])
        out("comp", compensate_mm(1000, %r))
        """ % (t_c, t_c, t_c))
    assert res["c"] == pytest.approx(c)
    assert res["mm"] == [int(us * c / 2000 + 0.5) for us in (175, 5831, 23300)]
    assert res["comp"] == int(1000 * c / 343.42 + 0.5)
    if t_c == 20:
        assert res["mm"][1] == 1001  # 5831 us at 343.42 m/s: 1001.25 mm
