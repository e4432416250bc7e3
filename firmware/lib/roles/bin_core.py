"""The smart bin's decisions, without hardware: readings and the time in, reports out.

One :class:`BinCore` lives for one wake of the (deep-sleeping) bin; what it must remember
between wakes comes in and goes out as a small dict (:meth:`BinCore.state`, ~200 bytes of
JSON), which the glue keeps in a flash file (RTC memory is the runtime's boot state's)::

    core = BinCore(settings.load("bin", cfg.get("bin")), report_s=300, state=saved)
    tele, events = core.update(t, {"mm": [812, 808, 2900, 810, 809], "temp": 24.5,
                                   "w_g": 5230, "lid": 0, "tilt": 0, "bat": 3.92}, wake=True)
    # tele   {"fill": 21, "dist": 80.9, "depth": 100, "w": 5.2, "lid": 0, "temp": 24.5, ...}
    # events [{"ev": "full", "fill": 88}, ...]
    core.card(t, "04a1b2c3", w_g)          # a card was read: a deposit may follow
    ev = core.poll(t, lid, w_g)            # call while core.busy: the deposit event, or None
                                           # (w_g may be None unless core.need_weight(t))
    saved = core.state(); sleep(core.sleep_s())

**Fill.** The sonar looks down from the lid: ``depth`` cm to the bottom, ``rim`` cm to the
rim. Of the ``pings`` distances the ones outside the sensor's range are dropped, then those
more than 10 % (at least 3 cm) from their median; the median of the rest is scaled from the
module's assumed air temperature (``sonar_ref_c``) to the measured one (the speed of sound
changes 9 % from -10 to +40 degC). ``fill`` = (depth - dist) / (depth - rim), clamped to
0..100 %. No fill is measured while the lid is open (the sonar then looks elsewhere).

The settings (keys and defaults) are in :mod:`roles.settings`.

**Events** (docs/protocol.md section 8), each with hysteresis held in ``state``:

* ``full`` at fill >= ``full_pct``; ``emptied`` once fill <= ``empty_pct`` (re-arms ``full``),
  the same latch as the gateway's rules;
* ``overflow`` when the echo comes from above the rim (refuse stands out); re-arms below
  ``full_pct``;
* ``fire_risk`` at ``fire_c`` or when the temperature rose by ``rise_c_min`` degC/min or more
  since the last wake (at least 30 s before) and is above ``rise_min_c``; re-arms when 5 degC
  under ``fire_c`` and rising at under half the rate. While it is set the bin wakes every
  ``alarm_s`` instead of every ``report_s``;
* ``tipped`` at ``tilt_deg``, re-armed under half of it. ``tilt`` is in degrees, so an
  accelerometer could feed it; the firmware reads a tilt switch only (the glue maps it to 0,
  upright, or 90, tipped: any ``tilt_deg`` up to 90 means "the switch closed"; there is no
  accelerometer driver);
* ``battery_low`` under ``bat_low_v``, re-armed at ``bat_low_v + bat_hyst_v``;
* ``deposit``: a card read, the lid opens (within ``lid_wait_s``), the lid closes (within
  ``open_max_s``), the weight settles for ``settle_s``: ``{"card": UID hex, "w_g": grams
  added, "cat": the bin's category}``. The UID travels only inside the encrypted payload.

**Telemetry** carries readings that moved by more than their deadband (``db_*``) since last
reported, and everything on a heartbeat: every ``hb_wakes`` wakes or ``hb_s`` seconds,
whichever comes first. Every telemetry report has ``hb``, the seconds until the next
heartbeat at the latest.
"""

from micropython import const

from roles.common import latch, put, round1, round2

# Latch bits kept in state["b"].
_FULL = const(1)
_OVER = const(2)
_FIRE = const(4)
_TIP = const(8)
_BAT = const(16)

# Deposit phases.
_WAIT_OPEN = const(1)
_OPEN = const(2)
_SETTLE = const(3)

_MIN_MM = const(30)  # A02YYUW / HC-SR04 blind zone and range
_MAX_MM = const(4500)
_MIN_RISE_DT = const(30)  # s between temperature samples for a rate of rise

def distance_mm(pings, temp=None, ref_c=20.0):
    """Robust distance in mm from raw sonar pings (mm at ``ref_c``; None = no echo), or None.

    Needs 3 pings in range that agree within 10 % (at least 30 mm) of their median.
    """
    valid = [p for p in pings if p is not None and _MIN_MM <= p <= _MAX_MM]
    if len(valid) < 3:
        return None
    valid.sort()
    med = valid[len(valid) // 2]
    tol = med // 10
    if tol < 30:
        tol = 30
    kept = [p for p in valid if -tol <= p - med <= tol]
    n = len(kept)
    if n < 3 or 2 * n <= len(valid):
        return None  # no majority agrees: an echo off the walls, a bird, rain on the sensor
    mm = kept[n // 2] if n & 1 else (kept[n // 2 - 1] + kept[n // 2]) // 2
    if temp is None:
        return mm
    # Speed of sound in air 331.3 + 0.606 * T m/s (filters.speed_of_sound; not imported: heap).
    return int(mm * (331.3 + 0.606 * temp) / (331.3 + 0.606 * ref_c) + 0.5)


class BinCore:
    def __init__(self, cfg, report_s=300, state=None, overrides=None):
        self.cfg = cfg
        self.report_s = report_s
        self.overrides = {}
        if overrides:
            for k in overrides:
                self.configure({k: overrides[k]})
        st = state or {}
        self.last = st.get("r") or {}  # readings as last reported
        self.bits = st.get("b", 0)
        self.prev = st.get("tt")  # [temp, t] of the last temperature sample
        self.wakes = st.get("n", 0)  # wakes since the last heartbeat
        self.hb_at = st.get("h")  # time of the last heartbeat
        self.fill = None  # this wake's readings
        self.dist = None
        self._dep = None  # [phase, uid, w0, t_phase]

    def state(self):
        """What the next wake needs (a small dict of plain values: JSON in RTC memory)."""
        return {"r": self.last, "b": self.bits, "tt": self.prev, "n": self.wakes, "h": self.hb_at}

    def sleep_s(self):
        """Seconds until the next timer wake."""
        if self.bits & _FIRE:
            return min(self.cfg["alarm_s"], self.report_s)
        return self.report_s

    def _hb_in(self, t):
        c = self.cfg
        left = c["hb_s"] - (t - self.hb_at)
        by_wakes = (c["hb_wakes"] - self.wakes) * self.report_s
        return max(0, min(left, by_wakes))

    # -- readings --------------------------------------------------------------------------

    def update(self, t, r, wake=False):
        """Handle readings ``r`` at Unix time ``t``; returns ``(telemetry or None, events)``.

        ``r`` may hold any of ``mm`` (list of raw pings), ``temp`` degC, ``w_g`` grams, ``lid``
        0/1, ``tilt`` degrees, ``bat`` volts; a missing or None reading is skipped. ``wake``
        True once per wake: it counts towards the heartbeat.
        """
        c = self.cfg
        last = self.last
        tele = {}
        evs = []
        hb = False
        if wake:
            self.wakes += 1
            h = self.hb_at
            if h is None or t < h or t - h >= c["hb_s"] or self.wakes >= c["hb_wakes"]:
                hb = True
                self.hb_at = t
                self.wakes = 0
                last.clear()  # report everything
        bits = self.bits
        temp = r.get("temp")
        lid = r.get("lid")
        mm = r.get("mm")
        if mm and lid != 1:
            d = distance_mm(mm, temp, c["sonar_ref_c"])
            if d is not None:
                depth = c["depth"] * 10
                rim = c["rim"] * 10
                fill = (depth - d) * 100 // (depth - rim)
                fill = 0 if fill < 0 else 100 if fill > 100 else fill
                self.fill = fill
                self.dist = round1(d / 10)
                if put(tele, last, "fill", fill, c["db_fill"]):
                    tele["dist"] = last["dist"] = self.dist
                bits, ch = latch(bits, _FULL, fill >= c["full_pct"], fill <= c["empty_pct"])
                if ch:
                    evs.append({"ev": "full" if ch > 0 else "emptied", "fill": fill})
                bits, ch = latch(bits, _OVER, d < rim, fill < c["full_pct"])
                if ch > 0:
                    evs.append({"ev": "overflow", "fill": fill})
        put(tele, last, "depth", c["depth"], -1)
        if temp is not None:
            rise = 0.0
            p = self.prev
            if p and t - p[1] >= _MIN_RISE_DT:
                rise = (temp - p[0]) * 60 / (t - p[1])
            if not p or t - p[1] >= _MIN_RISE_DT or t < p[1]:
                self.prev = [temp, t]
            hot = temp >= c["fire_c"] or (rise >= c["rise_c_min"] and temp >= c["rise_min_c"])
            cool = temp < c["fire_c"] - 5 and rise < c["rise_c_min"] / 2
            bits, ch = latch(bits, _FIRE, hot, cool)
            if ch > 0:
                evs.append({"ev": "fire_risk", "temp": round1(temp), "rise": round1(rise)})
            put(tele, last, "temp", round1(temp), c["db_temp"])
        tilt = r.get("tilt")
        if tilt is not None:
            tilt = int(tilt)
            bits, ch = latch(bits, _TIP, tilt >= c["tilt_deg"], tilt * 2 < c["tilt_deg"])
            if ch > 0:
                evs.append({"ev": "tipped", "tilt": tilt})
            put(tele, last, "tilt", tilt, c["db_tilt"])
        w = r.get("w_g")
        if w is not None:
            put(tele, last, "w", round1(w / 1000), c["db_w"])
        if lid is not None:
            put(tele, last, "lid", 1 if lid else 0, -1)
        bat = r.get("bat")
        if bat is not None:
            low = c["bat_low_v"]
            bits, ch = latch(bits, _BAT, bat < low, bat >= low + c["bat_hyst_v"])
            if ch > 0:
                evs.append({"ev": "battery_low", "bat": round2(bat)})
            put(tele, last, "bat", round2(bat), c["db_bat"])
        self.bits = bits
        if not tele and not hb:
            return None, evs
        tele["hb"] = self._hb_in(t) if self.hb_at is not None else c["hb_s"]
        return tele, evs

    # -- deposits --------------------------------------------------------------------------

    @property
    def busy(self):
        """True while a deposit is in progress: keep polling, do not sleep yet."""
        return self._dep is not None

    def need_weight(self, t):
        """True when :meth:`poll` wants the weight now (the lid is shut and has settled)."""
        d = self._dep
        return d is not None and d[0] == _SETTLE and t - d[3] >= self.cfg["settle_s"]

    def card(self, t, uid, w_g, lid=0):
        """A resident's card ``uid`` (hex str) was read at ``t`` with ``w_g`` grams in the bin."""
        if self._dep is None:
            self._dep = [_OPEN if lid else _WAIT_OPEN, uid, w_g, t]

    def poll(self, t, lid, w_g):
        """Advance the deposit with the lid switch and the weight now; the ``deposit`` event
        when it is complete, else None."""
        d = self._dep
        if d is None:
            return None
        c = self.cfg
        phase = d[0]
        if phase == _WAIT_OPEN:
            if lid:
                d[0], d[3] = _OPEN, t
            elif t - d[3] > c["lid_wait_s"]:
                self._dep = None  # the card was shown, nothing was thrown in
        elif phase == _OPEN:
            if not lid:
                d[0], d[3] = _SETTLE, t
            elif t - d[3] > c["open_max_s"]:
                self._dep = None  # lid jammed or propped open: no weighing possible
        elif lid:
            d[0], d[3] = _OPEN, t  # opened again before the weight settled
        elif t - d[3] >= c["settle_s"]:
            # w_g None here means there is no scale: the deposit counts with 0 g.
            self._dep = None
            g = 0
            if w_g is not None and d[2] is not None:
                g = int(w_g - d[2] + 0.5)
                if g < 0:
                    g = 0
            return {"ev": "deposit", "card": d[1], "w_g": g, "cat": c["cat"]}
        return None

    # -- commands ----------------------------------------------------------------------------

    def configure(self, a):
        """``bin.config``: any of ``depth`` cm, ``report_s``, ``full_pct``. Returns None, or an
        error code (``"range"``, ``"arg"``) and changes nothing."""
        if not isinstance(a, dict) or not a:
            return "arg"
        c = self.cfg
        for k in a:
            v = a[k]
            if not isinstance(v, int) or isinstance(v, bool):
                return "range"
            if k == "depth":
                ok = 10 <= v <= 300 and v > c["rim"]
            elif k == "report_s":
                ok = 60 <= v <= 86400
            elif k == "full_pct":
                ok = 50 <= v <= 100 and v > c["empty_pct"]
            else:
                return "arg"
            if not ok:
                return "range"
        for k in a:
            if k == "report_s":
                self.report_s = a[k]
            else:
                c[k] = a[k]
            self.overrides[k] = a[k]
        return None
