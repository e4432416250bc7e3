"""Rules: node frames in, events of the one contract out (docs/protocol.md section 8 for payloads).

The gateway applies its own, configurable thresholds (per site, overridable per node) to the
readings, and also accepts the node's own events; both go through the same small state
machines, so a bin that reports ``full`` and a fill of 91 % yields one ``bin.full``, not two.
Resident card UIDs are replaced by a keyed pseudonym here, before anything is stored in the
outbox (PIPL: minimum necessary).

>>> from linli.config import Config
>>> cfg = Config.from_text('[gateway]\\nsite="s"\\nid="g"\\n[privacy]\\nsite_secret="0123456789abcdef"')
>>> r = Rules(cfg)
>>> st = NodeState("bin-1", "bin")
>>> [e.type for e in r.telemetry(st, {"fill": 90}, 1000.0)]
['node.telemetry', 'bin.full']
>>> [e.type for e in r.telemetry(st, {"fill": 92}, 1060.0)]   # still full: no second event
['node.telemetry']
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Optional

from linli.config import Config
from linli.events import Event, new_event
from linli.registry import NodeState

HEALTH_KEYS = ("heap", "up", "q", "drop", "rssi")
_HEALTH = frozenset(HEALTH_KEYS)
_CATEGORIES = ("kitchen", "recyclable", "hazardous", "other")


class PayloadError(ValueError):
    """An authenticated frame whose payload breaks the role contract (counted as ``malformed``)."""


def _num(body: dict, key: str, *, required: bool = False) -> Optional[float]:
    v = body.get(key)
    if v is None:
        if required:
            raise PayloadError("missing %r" % key)
        return None
    t = v.__class__
    if t is float:
        return v
    if t is int:
        return float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise PayloadError("%r must be a number, got %r" % (key, v))
    return float(v)


class Rules:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._secret = cfg.site_secret.encode()

    # -- helpers -----------------------------------------------------------------------------
    def pseudonym(self, card_uid_hex: str) -> str:
        """Keyed, stable, not reversible without the site secret (which never leaves the gateway)."""
        return hmac.new(self._secret, b"resident:" + card_uid_hex.lower().encode(), hashlib.sha256).hexdigest()[:32]

    @staticmethod
    def _ev(type_: str, st: NodeState, data: dict, at: float) -> Event:
        return new_event(type_, node=st.node, data=data, at=at)

    def _latch(self, st: NodeState, name: str, on: bool, off: bool) -> Optional[bool]:
        """Hysteresis: returns True when the latch sets, False when it clears, None otherwise."""
        cur = st.rule_state.get(name, False)
        if not cur and on:
            st.rule_state[name] = True
            return True
        if cur and off:
            st.rule_state[name] = False
            return False
        return None

    # -- frames ------------------------------------------------------------------------------
    def hello(self, st: NodeState, body: dict, at: float) -> list[Event]:
        fw, rc = body.get("fw"), body.get("rc")
        if not isinstance(fw, str) or (rc is not None and not isinstance(rc, str)):
            raise PayloadError("hello needs fw (string) and rc (string)")
        st.fw, st.reset_cause = fw, rc
        st.boot_count = int(_num(body, "bc") or 0)
        sm = int(_num(body, "sm") or 0)
        # A timer wake from deep sleep is a bin's normal day, not news; any other boot is.
        out = [] if rc == "deepsleep" and not sm else [self._ev("node.rebooted", st, {"fw": fw, "reset_cause": rc, "boot_count": st.boot_count, "safe_mode": bool(sm)}, at)]
        if sm and not st.safe_mode:
            out.append(self._ev("node.safe_mode", st, {"fw": fw, "reset_cause": rc, "boot_count": st.boot_count}, at))
        st.safe_mode = sm
        st.asleep_until = None
        return out

    def status(self, st: NodeState, body: dict, at: float) -> list[Event]:
        s = body.get("st")
        if s == "asleep":
            until = _num(body, "until") or 0
            for_s = _num(body, "for")
            if for_s is not None and (until <= 0 or abs(until - (at + for_s)) > 3600):
                until = at + for_s  # the node's clock is unset or off: trust the duration
            if until <= 0:
                raise PayloadError("status asleep needs until (Unix s) or for (s)")
            st.asleep_until = until
        elif s == "online":
            st.asleep_until = None
        else:
            raise PayloadError("status st must be 'online' or 'asleep', got %r" % s)
        return []

    def telemetry(self, st: NodeState, body: dict, at: float) -> list[Event]:
        # One pass: check the values and split readings from health keys (body order kept).
        readings, health = {}, {}
        for k, v in body.items():
            t = v.__class__
            if t is not int and t is not float and t is not str and (not isinstance(v, (int, float, str)) or isinstance(v, bool)):
                raise PayloadError("telemetry value %r must be a number or string, got %r" % (k, v))
            if k in _HEALTH:
                health[k] = v
            elif k != "hb":
                readings[k] = v
        st.readings.update(body)
        if "bat" in body:
            st.bat = _num(body, "bat")
        if "rssi" in body:
            st.rssi = _num(body, "rssi")
        if "q" in body:
            st.queue = int(_num(body, "q"))
        if "hb" in body:
            st.heartbeat_s = _num(body, "hb")
        out = []
        if readings:
            out.append(self._ev("node.telemetry", st, {"role": st.role, "readings": readings}, at))
        if "heap" in health or "up" in health:
            out.append(self._ev("node.health", st, health, at))
        out += self._thresholds(st, body, at)
        return out

    def _thresholds(self, st: NodeState, body: dict, at: float) -> list[Event]:
        r = self.cfg.rules_for(st.node)
        out: list[Event] = []
        bat = _num(body, "bat")
        if bat is not None and st.role in ("bin", "streetlight"):
            low = r.bin_battery_low_v if st.role == "bin" else r.streetlight_battery_low_v
            if self._latch(st, "battery_low", bat < low, bat >= low + r.battery_hysteresis_v):
                out.append(self._ev("%s.battery_low" % st.role, st, {"bat_v": bat, "threshold_v": low}, at))
        if st.role != "bin":
            return out
        fill = _num(body, "fill")
        if fill is not None:
            out += self._fill(st, fill, at)
        temp = _num(body, "temp")
        if temp is not None:
            prev = st.rule_state.get("temp")
            rise = 0.0
            if prev and at > prev[1]:
                rise = (temp - prev[0]) / ((at - prev[1]) / 60.0)
            st.rule_state["temp"] = [temp, at]
            hot = temp >= r.fire_temp_c or (rise >= r.fire_rise_c_per_min and temp >= 35.0)
            if self._latch(st, "fire_risk", hot, temp < r.fire_temp_c - 5 and rise < r.fire_rise_c_per_min / 2):
                out.append(self._ev("bin.fire_risk", st, {"temp_c": temp, "rise_c_per_min": round(rise, 2), "threshold_c": r.fire_temp_c}, at))
        tilt = _num(body, "tilt")
        if tilt is not None and self._latch(st, "tipped", tilt >= r.tilt_deg, tilt < r.tilt_deg / 2):
            out.append(self._ev("bin.tipped", st, {"tilt_deg": tilt}, at))
        return out

    def _fill(self, st: NodeState, fill: float, at: float) -> list[Event]:
        r = self.cfg.rules_for(st.node)
        out = []
        depth = st.readings.get("depth")
        change = self._latch(st, "full", fill >= r.bin_full_pct, fill <= r.bin_empty_pct)
        if change is True:
            out.append(self._ev("bin.full", st, {"fill_pct": fill, "threshold_pct": r.bin_full_pct, "depth_cm": depth}, at))
        elif change is False:
            out.append(self._ev("bin.emptied", st, {"fill_pct": fill, "threshold_pct": r.bin_empty_pct}, at))
        if self._latch(st, "overflow", fill >= r.bin_overflow_pct, fill < r.bin_full_pct):
            out.append(self._ev("bin.overflow", st, {"fill_pct": fill, "source": "sensor"}, at))
        return out

    def event(self, st: NodeState, body: dict, at: float, pet_answer: Any = None) -> list[Event]:
        ev = body.get("ev")
        if not isinstance(ev, str):
            raise PayloadError("event needs ev (string)")
        handler = getattr(self, "_ev_%s_%s" % (st.role, ev), None)
        if handler is None:
            raise PayloadError("role %s has no event %r" % (st.role, ev))
        return handler(st, body, at) if pet_answer is None else handler(st, body, at, pet_answer)

    # bin events: the node's view goes through the same latches as the readings.
    def _ev_bin_full(self, st, b, at):
        return self._fill(st, _num(b, "fill", required=True), at)

    _ev_bin_emptied = _ev_bin_full
    _ev_bin_overflow = _ev_bin_full

    def _ev_bin_fire_risk(self, st, b, at):
        temp = _num(b, "temp", required=True)
        if self._latch(st, "fire_risk", True, False):
            return [self._ev("bin.fire_risk", st, {"temp_c": temp, "rise_c_per_min": _num(b, "rise"), "threshold_c": self.cfg.rules_for(st.node).fire_temp_c}, at)]
        return []

    def _ev_bin_tipped(self, st, b, at):
        tilt = _num(b, "tilt", required=True)
        return [self._ev("bin.tipped", st, {"tilt_deg": tilt}, at)] if self._latch(st, "tipped", True, False) else []

    def _ev_bin_battery_low(self, st, b, at):
        return self._thresholds(st, {"bat": _num(b, "bat", required=True)}, at)

    def _ev_bin_deposit(self, st, b, at):
        card = b.get("card")
        if not isinstance(card, str) or not card or any(c not in "0123456789abcdefABCDEF" for c in card):
            raise PayloadError("deposit needs card (UID hex)")
        w_g = _num(b, "w_g", required=True)
        cat = b.get("cat", "other")
        if cat not in _CATEGORIES:
            raise PayloadError("deposit cat must be one of %s" % ", ".join(_CATEGORIES))
        points = round(max(w_g, 0) / 1000.0 * self.cfg.rules_for(st.node).deposit_points_per_kg, 1) if cat != "other" else 0
        # The raw UID stops here: only the pseudonym goes into the event.
        return [self._ev("bin.deposit", st, {"resident": self.pseudonym(card), "weight_g": w_g, "category": cat, "points": points}, at)]

    def _ev_streetlight_lamp_fault(self, st, b, at):
        fault = b.get("fault")
        if fault not in ("open", "short", "low", "high"):
            raise PayloadError("lamp_fault needs fault open/short/low/high")
        return [self._ev("streetlight.lamp_fault", st, {"fault": fault, "current_ma": _num(b, "ma"), "level_pct": _num(b, "lamp")}, at)]

    def _ev_streetlight_battery_low(self, st, b, at):
        st.rule_state["battery_low"] = True
        return [self._ev("streetlight.battery_low", st, {"bat_v": _num(b, "bat", required=True), "action": b.get("act", "dim")}, at)]

    def _ev_streetlight_energy_daily(self, st, b, at):
        day = b.get("day")
        if not isinstance(day, str):
            raise PayloadError("energy_daily needs day (YYYY-MM-DD)")
        return [self._ev("streetlight.energy_daily", st, {"day": day, "wh_pv": _num(b, "wh_pv"), "wh_lamp": _num(b, "wh_lamp"), "hours_lit": _num(b, "h_lit")}, at)]

    def _ev_petscan_scan(self, st, b, at, answer=None):
        if not isinstance(b.get("tag"), str):
            raise PayloadError("scan needs tag (string)")
        status, pet_id, reason = answer if answer else ("unknown", None, "no registry")
        return [self._ev("petscan.scan", st, {"tag": pet_id, "status": status, "reason": reason}, at)]

    def _ev_petscan_fouling(self, st, b, at):
        return [self._ev("petscan.fouling", st, {"location": st.node, "tag_reported": isinstance(b.get("tag"), str)}, at)]

    # -- availability ------------------------------------------------------------------------
    def availability_change(self, st: NodeState, old: str, new: str, now: float) -> list[Event]:
        if new == "offline" and old != "offline":
            expected = (st.asleep_until or 0) + self.cfg.availability.grace_s if st.asleep_until else None
            return [self._ev("node.offline", st, {"last_seen": st.last_seen, "expected_by": expected, "reason": "asleep past its wake time" if st.asleep_until else "missed heartbeats"}, now)]
        if old == "offline" and new in ("online", "asleep"):
            return [self._ev("node.online", st, {"last_seen": st.last_seen}, now)]
        return []
