# Bin logic (roles.bin_core) over simulated time, on MicroPython. Prints JSON lines:
# {"k": "<scenario>", ...}. Run by tests/test_role_bin.py.
import gc
import json

from rolesim import Rand, heap, out

from roles import settings
from roles.bin_core import BinCore, distance_mm

T0 = 1718900000  # 2024-06-20 16:13 UTC
heap("imported")


def cfg(**kw):
    return settings.load("bin", kw)


def c_air(t_c):
    return 331.3 + 0.606 * t_c


def pings(rnd, dist_cm, air_c, n=5, outliers=0.1):
    """What the sonar reports: mm computed for 20 degC air, noise, spikes and lost echoes."""
    true_mm = dist_cm * 10
    ps = []
    for _ in range(n):
        if rnd.chance(outliers):
            ps.append(None if rnd.chance(0.5) else int(rnd.uniform(100, 4000)))
        else:
            ps.append(int(true_mm * c_air(20) / c_air(air_c) + rnd.uniform(-8, 8)))
    return ps


def wake(saved, c, t, r, report_s=300):
    """One wake: a fresh core from the state in 'RTC memory' (JSON), as after a deep sleep."""
    core = BinCore(c, report_s, json.loads(saved) if saved else None)
    tele, evs = core.update(t, r, wake=True)
    return core, tele, evs, json.dumps(core.state())


def week():
    rnd = Rand(12345)
    c = cfg(depth=100, rim=8, full_pct=85, empty_pct=40)
    saved = None
    events = []
    n_tele = n_hb = 0
    max_state = 0
    fills = []
    worst_err = 0
    t = T0
    for i in range(7 * 288):  # a wake every 5 minutes for a week
        day = i / 288
        if day < 5:
            true_fill = 5 + 18 * day  # 5 % .. 95 %
            if 3.9 < day < 4.6:
                true_fill = 85 + rnd.uniform(-4, 4)  # hovering at the threshold
        elif day < 5.5:
            true_fill = 95
        else:
            true_fill = 5 + 40 * (day - 5.5)  # emptied, fills to 65 %
        true_fill = min(true_fill, 95)
        dist = 100 - true_fill * 0.92
        air = 25 + 10 * ((i % 288) - 144) / 144  # 15..35 degC over the day
        r = {"mm": pings(rnd, dist, air), "temp": air, "w_g": int(true_fill * 150), "lid": 0, "tilt": 0, "bat": 3.9}
        core, tele, evs, saved = wake(saved, c, t, r)
        if core.fill is not None:
            worst_err = max(worst_err, abs(core.fill - true_fill))
        if tele:
            n_tele += 1
            if "fill" in tele:
                fills.append(tele["fill"])
            if tele.get("hb") and "depth" in tele:
                n_hb += 1
        for e in evs:
            e["day"] = round(day * 100) / 100
            events.append(e)
        max_state = max(max_state, len(saved))
        t += core.sleep_s()
        if i % 200 == 0:
            gc.collect()
    out("week", events=events, n_tele=n_tele, n_hb=n_hb, max_state=max_state, n_fill=len(fills), worst_err=worst_err, wakes=7 * 288)


def fire():
    c = cfg()
    saved = None
    t = T0
    temps = [25, 26, 25, 45, 50, 55, 40, 30, 28, 61, 65, 54, 50]
    res = []
    for temp in temps:
        core, tele, evs, saved = wake(saved, c, t, {"temp": temp})
        res.append({"temp": temp, "ev": evs, "sleep": core.sleep_s()})
        t += core.sleep_s()
    out("fire", steps=res)
    # A slow rise (1 degC/min) to 58 degC never alarms; an absolute 60 does.
    saved = None
    t = T0
    evs_all = []
    temp = 30
    while temp <= 58:
        core, tele, evs, saved = wake(saved, c, t, {"temp": temp})
        evs_all += evs
        t += 300
        temp += 5
    out("fire_slow", events=evs_all)


def deposit():
    c = cfg(cat="recyclable", settle_s=3, lid_wait_s=30)
    core = BinCore(c, 300, None)
    core.update(T0, {"w_g": 5000, "lid": 0}, wake=True)
    core.card(T0, "04a1b2c3d4e5f6", 5000)
    timeline = []
    evs = []
    # lid closed 5 s, open 7 s (weight wobbles while things drop in), closed, settles
    for s in range(0, 30):
        t = T0 + s
        lid = 1 if 5 <= s < 12 else 0
        w = 5000 if s < 5 else (5000 + (s * 97) % 600 if s < 12 else (5390 if s < 13 else 5350))
        e = core.poll(t, lid, w)
        timeline.append(core.busy)
        if e:
            e["at"] = s
            evs.append(e)
    out("deposit", events=evs, busy_after=core.busy, busy_at_0=timeline[0])
    # A card but the lid never opens: given up after lid_wait_s, no event.
    core = BinCore(c, 300, None)
    core.card(T0, "deadbeef", 5000)
    evs = []
    last_busy = 0
    for s in range(0, 40):
        e = core.poll(T0 + s, 0, 5000)
        if e:
            evs.append(e)
        if core.busy:
            last_busy = s
    out("deposit_abandoned", events=evs, busy_until=last_busy)
    # Lid re-opened while settling; weight taken only after the final close.
    core = BinCore(c, 300, None)
    core.card(T0, "a1b2", 1000, lid=1)
    evs = []
    for s, lid, w in ((0, 1, 1000), (2, 0, 1100), (3, 1, 1100), (6, 0, 1400), (8, 0, 1400), (9, 0, 1400), (10, 0, 1400)):
        e = core.poll(T0 + s, lid, w)
        if e:
            e["at"] = s
            evs.append(e)
    out("deposit_reopen", events=evs)


def misc():
    c = cfg(tilt_deg=45, bat_low_v=3.45, bat_hyst_v=0.15)
    saved = None
    t = T0
    seq = []
    for tilt, bat in ((0, 3.9), (90, 3.9), (90, 3.5), (0, 3.44), (0, 3.40), (0, 3.55), (0, 3.61), (90, 3.3), (0, 3.3)):
        core, tele, evs, saved = wake(saved, c, t, {"tilt": tilt, "bat": bat})
        seq.append([e["ev"] for e in evs])
        t += 300
    out("tip_bat", seq=seq)
    # Deadband and heartbeat: 12 wakes a heartbeat (or an hour).
    c = cfg(hb_wakes=12, db_fill=5)
    saved = None
    t = T0
    rows = []
    for i, fill_cm in enumerate((50, 49, 48, 46, 44, 44, 44, 44, 44, 44, 44, 44, 44, 30)):
        mm = [fill_cm * 10] * 5
        core, tele, evs, saved = wake(saved, c, t, {"mm": mm, "temp": 20})
        rows.append(tele)
        t += 300
    out("deadband", rows=rows)
    # Overflow: the echo from above the rim.
    c = cfg(depth=100, rim=10)
    saved = None
    seq = []
    for d in (50, 12, 9, 5, 9, 30, 40, 7):
        core, tele, evs, saved = wake(saved, c, t, {"mm": [d * 10] * 5, "temp": 20})
        seq.append([[e["ev"], e["fill"]] for e in evs])
        t += 300
    out("overflow", seq=seq)
    # Lid open: no fill measured (the sonar looks at the sky).
    core = BinCore(cfg(), 300, None)
    tele, evs = core.update(T0, {"mm": [100] * 5, "lid": 1, "temp": 20}, wake=True)
    out("lid_open", tele=tele, events=evs)
    # Robust distance.
    out("distance", a=distance_mm([800, 802, 798, 2500, None]), b=distance_mm([800, None, None, None, 810]),
        c=distance_mm([800, 1600, 2400, 3200, 4000]), d=distance_mm([1000] * 5, 40.0), e=distance_mm([1000] * 5, -10.0))
    # bin.config
    core = BinCore(cfg(), 300, None)
    r = [core.configure({"depth": 120}), core.configure({"full_pct": 30}), core.configure({"report_s": 600}),
         core.configure({"colour": 1}), core.configure({"depth": "x"}), core.configure({})]
    core2 = BinCore(cfg(), 300, None, overrides=core.overrides)
    out("config", results=r, depth=core.cfg["depth"], report_s=core.report_s, sleep=core2.sleep_s(), depth2=core2.cfg["depth"])
    try:
        cfg(full_pct=40, empty_pct=50)
        bad = None
    except ValueError as e:
        bad = str(e)
    try:
        cfg(cat="food")
        bad2 = None
    except ValueError as e:
        bad2 = str(e)
    out("config_errors", empty=bad, cat=bad2)


week()
fire()
deposit()
misc()
heap("end")
