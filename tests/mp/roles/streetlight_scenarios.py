# Streetlight logic (roles.streetlight_core) over simulated time, on MicroPython. Prints JSON
# lines {"k": "<scenario>", ...}; run by tests/test_role_streetlight.py.
import math

from rolesim import Rand, heap, out

from roles import settings
from roles.streetlight_core import StreetlightCore

heap("imported")
# 2024-06-20 00:00 local (UTC+8) = 2024-06-19 16:00 UTC
MIDNIGHT = 1718812800
LAT, LON = 31.23, 121.47


def cfg(**kw):
    return settings.load("streetlight", kw)


def sky_lux(t):
    """A clear June day in Shanghai: ~sunrise 04:50, sunset 19:01 local, 60000 lx at noon."""
    h = ((t - MIDNIGHT) % 86400) / 3600  # local hours
    x = math.sin(math.pi * (h - 4.6) / 14.7)  # 0 at ~04:36 and ~19:18 (civil-ish twilight)
    return 60000 * x * x * x if x > 0 else 0.2


def dusk_dawn():
    rnd = Rand(7)
    core = StreetlightCore(cfg(dwell_s=120, on_lux=10.0, off_lux=30.0), report_s=300)
    switches = []
    prev = None
    step = 5
    t = MIDNIGHT + 12 * 3600  # local noon
    end = t + 36 * 3600
    now = 0
    while t < end:
        lux = sky_lux(t) * rnd.uniform(0.6, 1.4)  # a noisy sensor
        if rnd.chance(0.03):
            lux = rnd.uniform(200, 800) if rnd.chance(0.5) else 0.0  # headlights / a shadow
        core.tick(now, t, {"lux": lux})
        if core.dark != prev:
            switches.append([core.dark, t])
            prev = core.dark
        t += step
        now += step
    out("dusk_dawn", switches=switches)


def lit_night(core, now, t):
    """Bring a core into the night (sensor dark for long enough)."""
    for _ in range(40):
        core.tick(now, t, {"lux": 0.5})
        now += 5
        t += 5
    return now, t


def motion():
    c = cfg(hold_s=60, boost=100, profile=[[0, 100], [60, 40]], dwell_s=60)
    core = StreetlightCore(c, report_s=300)
    now, t = lit_night(core, 0, MIDNIGHT - 5 * 3600)
    levels = []
    # Two hours into the night: profile says 40.
    now += 7200
    t += 7200
    motion_at = (10, 40, 100)
    tele_motion = []
    for s in range(0, 200, 2):
        tele, evs = core.tick(now + s, t + s, {"lux": 0.5, "motion": s in motion_at})
        levels.append([s, core.level])
        if tele and "motion" in tele:
            tele_motion.append([s, tele["motion"]])
    out("motion", levels=levels, tele_motion=tele_motion)
    # By day motion does nothing.
    core = StreetlightCore(c, report_s=300)
    core.tick(0, MIDNIGHT + 43200, {"lux": 20000, "motion": True})
    core.tick(1, MIDNIGHT + 43201, {"lux": 20000, "motion": True})
    out("motion_day", level=core.level)


def battery():
    c = cfg(dim_v=11.8, off_v=11.4, bat_hyst_v=0.3, bat_dwell_s=60, dim_level=30, profile=[[0, 80]])
    core = StreetlightCore(c, report_s=300)
    now, t = lit_night(core, 0, MIDNIGHT - 5 * 3600)
    rnd = Rand(99)
    plan = [(12.5, 300), (11.78, 300), (11.85, 120), (11.6, 300), (11.3, 300), (11.6, 300), (11.75, 300), (11.95, 300), (12.15, 300), (12.6, 300)]
    rows = []
    events = []
    for v, dur in plan:
        lv = set()
        for s in range(0, dur, 5):
            tele, evs = core.tick(now, t, {"lux": 0.5, "bat": v + rnd.uniform(-0.05, 0.05)})
            lv.add(core.level)
            for e in evs:
                events.append(e)
            now += 5
            t += 5
        rows.append([v, sorted(lv), core.batst])
    out("battery", rows=rows, events=events)


def fault():
    c = cfg(rated_ma=1000, fault_s=30, settle_s=5, profile=[[0, 100], [120, 50]])
    core = StreetlightCore(c, report_s=300)
    now, t = 0, MIDNIGHT - 6 * 3600  # 18:00 local
    rnd = Rand(5)
    events = []
    trace = []
    # Dusk at ~now=200; lamp healthy 3 h (the profile dims at 2 h), fails open at 3 h, stays
    # broken 4 h, is repaired, then draws too much.
    for i in range(0, 12 * 3600, 5):
        lux = 100.0 if i < 200 else 0.5
        lv = core.level
        h = i / 3600
        if h < 3.0:
            ma = 1000 * lv / 100 * rnd.uniform(0.95, 1.05)
        elif h < 7.0:
            ma = rnd.uniform(0, 8)  # open circuit: noise only
        elif h < 9.0:
            ma = 1000 * lv / 100 * rnd.uniform(0.95, 1.05)
        else:
            ma = 1000 * lv / 100 * 1.8  # over-current (a failing driver)
        tele, evs = core.tick(now + i, t + i, {"lux": lux, "ma": ma, "lv": 12.4})
        for e in evs:
            if e["ev"] == "lamp_fault":
                e["h"] = round(h * 100) / 100
                events.append(e)
    out("fault", events=events)


def astro():
    c = cfg(lat=LAT, lon=LON, lux_fail_n=3)
    core = StreetlightCore(c, report_s=300)
    switches = []
    prev = None
    now = 0
    t = MIDNIGHT + 12 * 3600
    for i in range(0, 30 * 3600, 30):
        lux = sky_lux(t + i) if i < 3600 else None  # the sensor dies at 13:00
        core.tick(now + i, t + i, {"lux": lux})
        if core.dark != prev:
            switches.append([core.dark, t + i, core.astro])
            prev = core.dark
    out("astro", switches=switches)
    # No clock and no sensor from boot: light up (a dark street is worse).
    core = StreetlightCore(cfg(), report_s=300)
    for i in range(5):
        core.tick(i, None, {"lux": None})
    out("blind", dark=core.dark, level=core.level)
    # Booted at night with a synced clock: the profile starts from the real sunset.
    c = cfg(lat=LAT, lon=LON, profile=[[0, 100], [240, 50]])
    core = StreetlightCore(c, report_s=300)
    core.tick(1000, MIDNIGHT, {"lux": 0.3})  # local midnight: ~5 h after sunset
    out("boot_night", level=core.level, dusk=core.dusk)


def commands():
    core = StreetlightCore(cfg(profile=[[0, 70]]), report_s=300)
    now, t = lit_night(core, 0, MIDNIGHT - 4 * 3600)
    res = []

    def step(n=1):
        nonlocal now, t
        for _ in range(n):
            core.tick(now, t, {"lux": 0.5})
            now += 1
            t += 1
        return core.level

    res.append(["auto", step()])
    res.append(["level40", core.command("lamp.level", {"level": 40}, now), step()])
    res.append(["mode_off", core.command("lamp.mode", {"mode": "off"}, now), step()])
    res.append(["test", core.command("lamp.test", {"s": 10}, now), step(), core.mode])
    step(9)
    res.append(["after_test", step(2), core.mode])
    res.append(["mode_on", core.command("lamp.mode", {"mode": "on"}, now), step()])
    res.append(["bad_mode", core.command("lamp.mode", {"mode": "disco"}, now)])
    res.append(["bad_level", core.command("lamp.level", {"level": 101}, now)])
    res.append(["bad_profile", core.command("lamp.schedule", {"profile": [[0, 100]] * 9}, now)])
    res.append(["schedule", core.command("lamp.schedule", {"profile": [[30, 20], [0, 90]]}, now)])
    res.append(["mode_auto", core.command("lamp.mode", {"mode": "auto"}, now), step()])
    res.append(["unknown", core.command("lamp.dance", {}, now)])
    res.append(["bad_test", core.command("lamp.test", {"s": 0}, now)])
    out("commands", res=res, settings=core.settings())
    # Settings survive a reboot (the glue keeps them in flash).
    core2 = StreetlightCore(cfg(), report_s=300, settings=core.settings())
    out("settings", mode=core2.mode, profile=core2.profile)


def energy():
    core = StreetlightCore(cfg(tz_min=480), report_s=300)
    # 22:00 local to 02:00 local, lamp 500 mA at 12 V; panel idle. Then 10:00-12:00 charging.
    now = 0
    t = MIDNIGHT - 2 * 3600
    events = []
    for i in range(0, 4 * 3600, 10):
        tele, evs = core.tick(now + i, t + i, {"lux": 0.5, "ma": 500, "lv": 12.0, "pv": 0.5, "pv_ma": 0})
        events += evs
    t2 = MIDNIGHT + 10 * 3600
    now2 = now + 12 * 3600
    for i in range(0, 2 * 3600, 10):
        core.tick(now2 + i, t2 + i, {"lux": 40000, "ma": 0, "pv": 18.0, "pv_ma": 2000})
    # the next local midnight
    evs2 = []
    for i in range(3):
        tele, evs = core.tick(now2 + 14 * 3600 + 20 + i, MIDNIGHT + 86400 + 25 + i, {"lux": 0.5})
        evs2 += evs
    out("energy", first=events, second=evs2)


def telemetry():
    core = StreetlightCore(cfg(report_min_s=60), report_s=300)
    rows = []
    t = MIDNIGHT + 43200
    for s in range(0, 700, 10):
        lux = 20000 if s < 350 else 15000
        tele, evs = core.tick(s, t + s, {"lux": lux, "bat": 12.8, "ma": 0, "pv": 18.2})
        if tele:
            rows.append([s, tele])
    out("telemetry", rows=rows)


dusk_dawn()
motion()
battery()
fault()
astro()
commands()
energy()
telemetry()
heap("end")
