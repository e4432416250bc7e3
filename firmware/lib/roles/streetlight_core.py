"""The solar streetlight's decisions, without hardware: readings and the time in, lamp level out.

The glue calls :meth:`StreetlightCore.tick` about once a second with what the sensors say;
the core returns what to report and keeps ``level``, the lamp level to set::

    core = StreetlightCore(settings.load("streetlight", cfg.get("streetlight")), report_s=300)
    tele, events = core.tick(now, t, {"lux": 3.5, "motion": False, "bat": 12.6,
                                      "ma": 412, "lv": 12.5, "pv": 0.4, "pv_ma": 0})
    dimmer.set(core.level)

``now`` is monotonic seconds (never jumps), ``t`` Unix seconds or None while the clock is not
synced. Any reading may be None (sensor failed or absent).

The settings (keys and defaults) are in :mod:`roles.settings`.

**Dusk and dawn.** The median of the last 5 lux readings must stay under ``on_lux`` (dusk) or
over ``off_lux`` (dawn) for ``dwell_s`` without a break before the lamp follows: headlights or
a shadow do not switch it. After ``lux_fail_n`` failed reads in a row the astronomical
schedule from ``lat``/``lon`` (:mod:`sun`) decides instead; without a synced clock or a
position the lamp keeps its state (and lights when it has none: a dark street is worse).

**Level.** ``mode`` ``auto`` follows ``profile``, a list of ``[minutes after dusk, level]``
(the last entry at or before now applies); ``on`` holds ``level``; ``off`` is off. In auto
mode, motion (PIR) at night raises the lamp to at least ``boost`` for ``hold_s`` after the last
motion. ``lamp.level`` in auto mode overrides the profile until the next dusk or dawn.
``lamp.test`` runs the lamp at 100 % for ``s`` seconds (mode ``test``) and goes back.

**Battery.** Under ``dim_v`` the lamp is capped at ``dim_level``, under ``off_v`` it is off;
it recovers ``bat_hyst_v`` above each, and every change must hold ``bat_dwell_s`` (the voltage
sags under load). Entering dim or off sends ``battery_low`` with ``act``. ``lamp.test`` is the
one thing the protection lets through.

**Lamp faults.** With the lamp on and its level steady for ``settle_s``, the current is
compared with ``rated_ma`` times the PWM duty of the level: under ``open_ma`` is ``open``,
over ``short_pct`` % of ``rated_ma`` is ``short``, under ``low_pct`` % of the expected current
``low``, over ``high_pct`` % ``high``. A fault must persist ``fault_s`` to send one
``lamp_fault``; the next one is sent only after the lamp was seen healthy for ``fault_s``.

**Energy.** Panel and lamp energy and hours lit are summed per local day (``tz_min``, minutes
east of UTC); at local midnight ``energy_daily`` reports the day that ended. Without a synced
clock the sums wait for the first sync. :meth:`StreetlightCore.energy` gives the day's sums so
far and the constructor's ``energy`` takes them back, so the glue can keep them across a
reboot (a day that ended meanwhile is reported at the first synced tick).

**Telemetry.** ``lamp``, ``mode`` and ``motion`` are reported when they change; ``lux``,
``ma``, ``pv``, ``bat`` when they moved past their deadband, at most every ``report_min_s``;
everything every ``report_s`` (the heartbeat, with ``hb``).
"""

from micropython import const

from roles.common import put, round1, round2

_NORMAL = const(0)
_DIM = const(1)
_OFF = const(2)
_ACTS = (None, "dim", "off")
_MAX_GAP_S = const(120)  # a longer gap between ticks is not integrated (the node was busy/off)
_WIN = const(5)


def _linear(level):
    return level / 100


def day_text(days):
    """``"YYYY-MM-DD"`` of ``days`` since 1970-01-01 (any port epoch: 1970 or 2000)."""
    from time import gmtime

    t = days * 86400
    if gmtime(0)[0] == 2000:
        t -= 946684800
    return "%04d-%02d-%02d" % gmtime(t)[0:3]


class StreetlightCore:
    def __init__(self, cfg, report_s=300, duty=None, settings=None, energy=None):
        self.cfg = cfg
        self.report_s = report_s
        self.duty = duty or _linear  # level -> fraction of full current the lamp draws
        s = settings or {}
        self.mode = s.get("mode", cfg["mode"])
        self.manual = s.get("level", cfg["level"])
        self.profile = s.get("profile", cfg["profile"])
        self.level = 0
        self.dark = None  # None until the first decision
        self.astro = False  # True while the schedule stands in for the light sensor
        self.dusk = None  # monotonic time the night began
        self.night_level = None
        self.motion_at = None
        self.batst = _NORMAL
        self.fault = None
        self.last = {}  # telemetry as last reported
        self._win = [0.0] * _WIN  # the last lux readings, for their median
        self._tmp = [0.0] * _WIN
        self._wn = 0
        self._fails = 0
        self._cand = None  # when the light first said "switch" (dwell timer)
        self._bat_cand = None
        self._bat_since = 0
        self._level_at = 0
        self._fcand = None
        self._fsince = 0
        self._ok_since = None
        self._test_until = None
        self._test_prev = None
        self._prev_now = None
        self._tele_at = None
        self._hb_at = None
        self.day = None  # local day (days since 1970) the energy sums belong to
        self.j_pv = 0.0  # joules not yet whole watt-hours
        self.j_lamp = 0.0
        self.wh_pv = 0
        self.wh_lamp = 0
        self.lit_s = 0
        if energy:
            self._restore(energy)

    def energy(self):
        """The local day's energy sums so far (``d`` day number, ``pv``/``lamp`` joules, ``lit``
        seconds), or None before the clock was synced: for the glue to keep in flash."""
        if self.day is None:
            return None
        return {"d": self.day, "pv": self.wh_pv * 3600 + self.j_pv, "lamp": self.wh_lamp * 3600 + self.j_lamp,
                "lit": self.lit_s}

    def _restore(self, e):
        try:
            d, pv, lamp, lit = int(e["d"]), float(e["pv"]), float(e["lamp"]), float(e["lit"])
        except (KeyError, TypeError, ValueError):
            return  # a file from another version, or damaged: start the day's sums from zero
        self.day = d
        self.wh_pv = int(pv // 3600)
        self.j_pv = pv - self.wh_pv * 3600
        self.wh_lamp = int(lamp // 3600)
        self.j_lamp = lamp - self.wh_lamp * 3600
        self.lit_s = lit

    def settings(self):
        """What commands changed, for the glue to keep in flash."""
        return {"mode": self._test_prev or self.mode, "level": self.manual, "profile": self.profile}

    # -- the tick ----------------------------------------------------------------------------

    def tick(self, now, t, r):
        """One step at monotonic ``now`` s and Unix ``t`` (None: not synced) with readings ``r``
        (``lux``, ``motion``, ``bat``, ``ma``, ``lv``, ``pv``, ``pv_ma``); returns
        ``(telemetry or None, events)``. ``self.level`` is then the level to set."""
        evs = []
        self._daylight(now, t, r.get("lux"))
        if r.get("motion"):
            self.motion_at = now
        self._battery(now, r.get("bat"), evs)
        self._faults(now, r.get("ma"), evs)
        self._energy(now, t, r, evs)
        lv = self._level(now)
        if lv != self.level:
            self.level = lv
            self._level_at = now
        return self._telemetry(now, r), evs

    def _median(self, x):
        """Add a lux reading; the median of the last 5 (of fewer at first). Allocates nothing."""
        win = self._win
        n = self._wn
        win[n % _WIN] = x
        n += 1
        self._wn = n if n < 2 * _WIN else n - _WIN  # keep the count small, the slot order right
        k = n if n < _WIN else _WIN
        tmp = self._tmp
        for i in range(k):  # insertion sort into tmp
            v = win[i]
            j = i
            while j and tmp[j - 1] > v:
                tmp[j] = tmp[j - 1]
                j -= 1
            tmp[j] = v
        if k & 1:
            return tmp[k >> 1]
        return (tmp[(k >> 1) - 1] + tmp[k >> 1]) / 2

    def _set_dark(self, dark, now, t):
        if dark == self.dark:
            return
        first = self.dark is None
        self.dark = dark
        self.night_level = None
        if not dark:
            self.dusk = None
            return
        self.dusk = now
        c = self.cfg
        if first and t is not None and c["lat"] is not None:
            # Booted at night: the profile runs from the real sunset, not from the boot.
            from sun import last_sunset

            since = t - last_sunset(c["lat"], c["lon"], t)
            if 0 <= since < 86400:
                self.dusk = now - since

    def _daylight(self, now, t, lux):
        c = self.cfg
        if lux is not None:
            self._fails = 0
            self.astro = False
            m = self._median(lux)
            if self.dark is None:
                self._set_dark(m < (c["on_lux"] + c["off_lux"]) / 2, now, t)
                return
            if (m > c["off_lux"]) if self.dark else (m < c["on_lux"]):
                if self._cand is None:
                    self._cand = now
                if now - self._cand >= c["dwell_s"]:
                    self._cand = None
                    self._set_dark(not self.dark, now, t)
            else:
                self._cand = None
            return
        self._fails += 1
        if self._fails < c["lux_fail_n"]:
            return
        self._wn = 0
        self._cand = None
        if t is not None and c["lat"] is not None:
            from sun import is_night

            self.astro = True
            self._set_dark(is_night(c["lat"], c["lon"], t), now, t)
        elif self.dark is None:
            self._set_dark(True, now, t)

    def _level(self, now):
        c = self.cfg
        if self._test_until is not None:
            if now < self._test_until:
                return 100
            self.mode = self._test_prev
            self._test_until = self._test_prev = None
        mode = self.mode
        if mode == "off":
            lv = 0
        elif mode == "on":
            lv = self.manual
        elif not self.dark:
            lv = 0
        else:
            lv = self.night_level
            if lv is None:
                minutes = (now - self.dusk) // 60 if self.dusk is not None else 0
                lv = 0
                for m, level in self.profile:
                    if m > minutes:
                        break
                    lv = level
            if self.motion_at is not None and now - self.motion_at < c["hold_s"] and c["boost"] > lv:
                lv = c["boost"]
        if self.batst == _OFF:
            return 0
        if self.batst == _DIM and lv > c["dim_level"]:
            return c["dim_level"]
        return lv

    def _battery(self, now, bat, evs):
        if bat is None:
            return
        c = self.cfg
        s = self.batst
        off_v = c["off_v"]
        if s == _OFF:
            off_v += c["bat_hyst_v"]
        if bat < off_v:
            want = _OFF
        elif bat >= c["dim_v"] + c["bat_hyst_v"] or (s == _NORMAL and bat >= c["dim_v"]):
            want = _NORMAL
        else:
            want = _DIM
        if want == s:
            self._bat_cand = None
            return
        if self._bat_cand != want:
            self._bat_cand = want
            self._bat_since = now
        if now - self._bat_since >= c["bat_dwell_s"]:
            self.batst = want
            self._bat_cand = None
            if want > s:
                evs.append({"ev": "battery_low", "bat": round2(bat), "act": _ACTS[want]})

    def _faults(self, now, ma, evs):
        c = self.cfg
        lv = self.level
        if ma is None or lv <= 0 or now - self._level_at < c["settle_s"]:
            return
        exp = c["rated_ma"] * self.duty(lv)
        if ma < c["open_ma"]:
            f = "open"
        elif ma > c["rated_ma"] * c["short_pct"] / 100:
            f = "short"
        elif ma < exp * c["low_pct"] / 100:
            f = "low"
        elif ma > exp * c["high_pct"] / 100:
            f = "high"
        else:
            self._fcand = None
            if self.fault is not None:
                if self._ok_since is None:
                    self._ok_since = now
                if now - self._ok_since >= c["fault_s"]:
                    self.fault = self._ok_since = None
            return
        self._ok_since = None
        if f != self._fcand:
            self._fcand = f
            self._fsince = now
        if self.fault is None and now - self._fsince >= c["fault_s"]:
            self.fault = f
            evs.append({"ev": "lamp_fault", "fault": f, "ma": int(ma), "lamp": lv})

    def _energy(self, now, t, r, evs):
        p = self._prev_now
        self._prev_now = now
        if p is not None and 0 < now - p <= _MAX_GAP_S:
            dt = now - p
            pv, pv_ma = r.get("pv"), r.get("pv_ma")
            if pv is not None and pv_ma is not None and pv_ma > 0:
                self.j_pv += pv * pv_ma * dt / 1000
                if self.j_pv >= 3600:
                    n = int(self.j_pv // 3600)
                    self.wh_pv += n
                    self.j_pv -= n * 3600
            ma = r.get("ma")
            v = r.get("lv")
            if v is None:
                v = r.get("bat")
            if ma is not None and v is not None and ma > 0:
                self.j_lamp += v * ma * dt / 1000
                if self.j_lamp >= 3600:
                    n = int(self.j_lamp // 3600)
                    self.wh_lamp += n
                    self.j_lamp -= n * 3600
            if self.level > 0:
                self.lit_s += dt
        if t is None:
            return
        d = (t + self.cfg["tz_min"] * 60) // 86400
        if self.day is None:
            self.day = d
        elif d != self.day:
            evs.append({
                "ev": "energy_daily", "day": day_text(self.day),
                "wh_pv": round1(self.wh_pv + self.j_pv / 3600), "wh_lamp": round1(self.wh_lamp + self.j_lamp / 3600),
                "h_lit": round2(self.lit_s / 3600),
            })
            self.day = d
            self.j_pv = self.j_lamp = 0.0
            self.wh_pv = self.wh_lamp = self.lit_s = 0

    def _telemetry(self, now, r):
        c = self.cfg
        last = self.last
        tele = {}
        hb = self._hb_at is None or now - self._hb_at >= self.report_s
        if hb:
            self._hb_at = now
            last.clear()
        put(tele, last, "lamp", self.level, -1)
        put(tele, last, "mode", self.mode, -1)
        m = self.motion_at is not None and now - self.motion_at < c["hold_s"]
        put(tele, last, "motion", 1 if m else 0, -1)
        if hb or self._tele_at is None or now - self._tele_at >= c["report_min_s"]:
            lux = r.get("lux")
            if lux is not None:
                old = last.get("lux") or 0
                put(tele, last, "lux", int(lux + 0.5), max(5, old * c["db_lux_pct"] / 100))
            ma = r.get("ma")
            if ma is not None:
                put(tele, last, "ma", int(ma + 0.5), c["db_ma"])
            put(tele, last, "pv", round1(r.get("pv")), c["db_pv"])
            put(tele, last, "bat", round2(r.get("bat")), c["db_bat"])
        if not tele:
            return None
        self._tele_at = now
        tele["hb"] = int(self.report_s - (now - self._hb_at))
        return tele

    # -- commands ----------------------------------------------------------------------------

    def command(self, op, a, now):
        """Apply a command (docs/protocol.md section 8); returns None when done, else an error
        code for ``command_result`` (``"op"`` unknown here, ``"arg"``, ``"range"``). The code
        lives in :mod:`roles.lampcmd`, loaded for the command and dropped after it."""
        from roles import common, lampcmd

        try:
            return lampcmd.apply(self, op, a, now)
        finally:
            del lampcmd
            common.unload("roles.lampcmd")
