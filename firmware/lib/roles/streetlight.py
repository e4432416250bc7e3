"""The streetlight role on the node: always on, one tick a second (sooner on motion).

The decisions are :class:`roles.streetlight_core.StreetlightCore`'s; this module reads the
BH1750, the PIR and the INA219(s), sets the dimmer and sends what the core says::

    "streetlight": {"lat": 31.23, "lon": 121.47, "rated_ma": 1400,
                    "profile": [[0, 100], [300, 50]], "pins": {"lamp": 25}}

Each tick: measure the light (one-time high-resolution mode, 180 ms), take the PIR's edge
flag (its interrupt only sets a flag), read lamp current and battery voltage from the lamp's
INA219 (it sits on the battery rail: its bus voltage is the battery's), and the panel's INA219
when there is one; then ``core.tick``, the dimmer, the reports. A motion edge ends the wait
for the next tick at once, so the boost comes within a fraction of a second (one light
measurement, 180 ms).

The settings (keys, defaults, pins) are in :mod:`roles.settings`.

Commands: ``lamp.mode``, ``lamp.level``, ``lamp.schedule``, ``lamp.test`` (what they change,
except the test, is kept in flash and survives a reboot); ``node.info`` is the runtime's.

The day's energy sums (``energy_daily``) are kept in flash (``streetlight.en``, written
atomically at the first synced tick, then every ``_ENERGY_SAVE_S`` of uptime and at each
local midnight), so a reboot loses at most that much of the day's energy, not the day.
"""

import asyncio
from time import ticks_diff, ticks_ms

from micropython import const

from node.role import Role
from roles import streetlight_core as core_mod
from roles.common import ALARMS, load_json, save_json

SETTINGS_FILE = "streetlight.cfg"
ENERGY_FILE = "streetlight.en"
_ENERGY_SAVE_S = const(600)  # flash writes: 144 a day, each a few dozen bytes


class Streetlight(Role):
    name = "streetlight"

    def __init__(self, node, hal, cfg):
        super().__init__(node, hal, cfg)
        from roles import settings

        self.c = c = settings.load("streetlight", self.section())
        settings.release()
        del settings  # the last reference: its code and tables can go now
        p = c["pins"]
        from drivers.dimmer import Dimmer

        self.lamp = Dimmer(hal.pwm(p["lamp"], c["pwm_hz"], 0), min_level=c["min_level"])
        self.errors = {"lux": 0, "ina": 0}
        self._i2c = hal.i2c(c["i2c_bus"], p["scl"], p["sda"]) if p["scl"] is not None else hal.i2c(c["i2c_bus"])
        self.light = None
        if c["bh1750"] is not None:
            from drivers.bh1750 import BH1750

            self.light = BH1750(self._i2c, c["bh1750"])
        self.ina = self._ina(c["ina_lamp"])
        self.ina_pv = self._ina(c["ina_pv"])
        self.pir = None
        if p["pir"] is not None:
            from drivers.pir import PIR

            self.pir = PIR(hal.pin(p["pir"], "in"))
        lamp = self.lamp
        self.core = core_mod.StreetlightCore(c, cfg["report_s"], lambda lv: lamp.duty(lv) / 65535 if lv else 0,
                                             load_json(SETTINGS_FILE), load_json(ENERGY_FILE))
        self._en_at = None  # self.now() of the last energy save
        self._now_ms = 0  # monotonic ms since boot, summed from tick differences (no wrap)
        self._t_ms = ticks_ms()
        self._kick = False  # a command wants the next tick now
        self._motion = False  # a PIR edge taken while waiting for the tick

    def _ina(self, addr):
        if addr is None:
            return None
        from drivers.ina219 import INA219

        try:
            return INA219(self._i2c, addr, self.c["shunt_ohms"], self.c["max_amps"])
        except OSError as e:
            self.node.log("INA219 at 0x%02x: %s", addr, e)
            self.errors["ina"] += 1
            return None

    def now(self):
        """Monotonic seconds (float) since boot."""
        t = ticks_ms()
        self._now_ms += ticks_diff(t, self._t_ms)
        self._t_ms = t
        return self._now_ms / 1000

    async def read(self):
        """One set of readings for ``core.tick``."""
        r = {}
        if self.light is not None:
            try:
                self.light.start()
                await asyncio.sleep_ms(self.light.wait_ms)
                r["lux"] = self.light.read()
            except OSError as e:
                self.errors["lux"] += 1
                r["lux"] = None
                if self.errors["lux"] < 4 or not self.errors["lux"] % 100:
                    self.node.log("light sensor: %s", e)
        return self._more(r)

    def _more(self, r):
        """The readings after the light (no waiting: out of read()'s coroutine, whose frame
        lives through the light measurement)."""
        if self.pir is not None:
            r["motion"] = self._motion or self.pir.pending() or self.pir.active()
            self._motion = False
        for ina, v, a in ((self.ina, "lv", "ma"), (self.ina_pv, "pv", "pv_ma")):
            if ina is None:
                continue
            try:
                r[v] = ina.bus_voltage()
                r[a] = ina.current()
            except OSError as e:
                self.errors["ina"] += 1
                if self.errors["ina"] < 4:
                    self.node.log("INA219: %s", e)
        if "lv" in r:
            r["bat"] = r["lv"]
        else:
            r["bat"] = self.hal.battery(self.cfg.get("bat_pin"), self.cfg.get("bat_div_pct", 200))
        return r

    def step(self, r):
        """Tick the core with readings ``r``; set the lamp; send reports."""
        node = self.node
        t = node.time() or None
        now = self.now()
        core = self.core
        day = core.day
        tele, evs = core.tick(now, t, r)
        if core.day is not None and (day != core.day or self._en_at is None or now - self._en_at >= _ENERGY_SAVE_S):
            self._en_at = now
            try:
                save_json(ENERGY_FILE, core.energy())
            except OSError as e:  # a full or failing flash must not stop the lamp
                node.log("energy: %s", e)
        lv = core.level
        if lv != self.lamp.level:
            self.lamp.set(lv)
        for e in evs:
            node.event(e, alarm=e["ev"] in ALARMS)
        if tele:
            node.telemetry(tele)

    async def run(self):
        tick = self.c["tick_ms"]
        pir = self.pir
        while True:
            t0 = ticks_ms()
            self._kick = False
            self.step(await self.read())
            # Until the next tick; a PIR edge (its IRQ sets a flag) or a command ends the wait
            # at once, so the boost or the command acts within one light measurement.
            while ticks_diff(ticks_ms(), t0) < tick and not self._kick:
                if pir is not None and pir.pending():
                    self._motion = True
                    break
                await asyncio.sleep_ms(20)

    def on_command(self, op, args):
        if not op.startswith("lamp."):
            return Role.on_command(self, op, args)
        err = self.core.command(op, args, self.now())
        if err:
            raise ValueError("unknown_op" if err == "op" else err)
        if op != "lamp.test":
            save_json(SETTINGS_FILE, self.core.settings())
        self._kick = True
        return None
