"""The bin role on the node: reads the sensors once per wake, reports, handles a deposit, sleeps.

The decisions are :class:`roles.bin_core.BinCore`'s; this module only reads the drivers the
HAL's pins and buses feed, sends what the core says and deep-sleeps::

    "bin": {"depth": 110, "rim": 10, "cat": "recyclable", "sonar": "a02yyuw",
            "hx_scale": 21.5, "hx_offset": -81234, "pins": {"lid": 27, "tilt": null}}

One wake (``run()``): start the DS18B20 conversion, take ``pings`` sonar distances, weigh,
read the lid, tilt switch (a ball switch on ``pins.tilt`` with the pull-up, closed when
tipped: tilt 90, else 0; there is no accelerometer) and battery, read the temperature, report
(telemetry of changed values + events); if a card is on the reader, follow the deposit (lid
open, lid closed, weight settled) and report it; keep the core's state in flash; drop the
drivers and the core (their code too); wait for the acks (commands such as ``bin.config``
arrive then: the core is rebuilt from flash for them); deep sleep ``report_s`` (``alarm_s``
during a fire risk). The role sets ``link_later``: the node brings its link up only when the
role first waits for it, so the sensor work and the link never share the heap (Wi-Fi
associates meanwhile all the same).

The settings (keys, defaults, pins) are in :mod:`roles.settings`. The card's UID goes into
the ``deposit`` event only (inside the encrypted payload); it is never logged. Wake sources
other than the timer (the lid pin on EXT0, a card-reader wake pin on EXT1) are armed through
the HAL's ``wake_on_pin(pin, level)`` and the DS18B20's bus made with its ``onewire(pin)``
(a HAL without them: timer wakes only, no temperature); the wake reason is
``hal.wake_reason()``.
"""

import asyncio
from time import ticks_add, ticks_diff, ticks_ms

from micropython import const

from node.role import Role
from roles.common import ALARMS, load_json, save_json, unload

STATE_FILE = "bin.st"  # the core's memory between wakes
CONFIG_FILE = "bin.cfg"  # what bin.config commands changed
_POLL_MS = const(200)
_A02_FRAME_MS = const(110)
_HCSR04_GAP_MS = const(60)


class Bin(Role):
    name = "bin"
    link_later = True  # the link comes up once the wake's work is queued: see run()

    def __init__(self, node, hal, cfg):
        super().__init__(node, hal, cfg)
        from roles import settings

        self.c = c = settings.load("bin", self.section())
        settings.release()
        del settings  # the last reference: its code and tables can go now
        self.errors = 0  # sensor reads that failed this wake
        p = c["pins"]
        self._lid = hal.pin(p["lid"], "in") if p["lid"] is not None else None
        self._tilt = hal.pin(p["tilt"], "in", "up") if c["tilt_switch"] and p["tilt"] is not None else None
        self._sonar = None
        if c["sonar"] == "a02yyuw":
            from drivers.a02yyuw import A02YYUW

            self._sonar = A02YYUW(hal.uart(c["sonar_uart"], 9600, p["sonar_tx"], p["sonar_rx"]))
        elif c["sonar"] == "hcsr04":
            from drivers.hcsr04 import HCSR04

            self._sonar = HCSR04(hal.pin(p["trig"], "out", value=0), hal.pin(p["echo"], "in"), hal.time_pulse_us)
        self._hx = None
        if c["hx_scale"]:
            from drivers.hx711 import HX711

            self._hx = HX711(hal.pin(p["hx_sck"], "out", value=0), hal.pin(p["hx_dout"], "in"))
            self._hx.offset = c["hx_offset"]
            self._hx.scale = c["hx_scale"]
        self._ds = None
        if p["ow"] is not None and hasattr(hal, "onewire"):
            from drivers.ds18b20 import DS18B20

            self._ds = DS18B20(hal.onewire(p["ow"]))
        self._rfid = None
        if c["rfid"] and p["rfid_cs"] is not None:
            from drivers.mfrc522 import MFRC522

            try:
                spi = hal.spi(1, baudrate=1000000, sck=hal.pin(p["spi_sck"]), mosi=hal.pin(p["spi_mosi"]),
                              miso=hal.pin(p["spi_miso"]))
                self._rfid = MFRC522(spi, hal.pin(p["rfid_cs"], "out", value=1))
            except OSError as e:
                node.log("card reader: %s", e)
                self.errors += 1
        self.core = None
        self.sleep_s = None  # this wake's sleep, once its work is done

    # -- sensors ---------------------------------------------------------------------------

    def _fail(self, what, e):
        self.errors += 1
        self.node.log("%s: %s", what, e)

    def lid(self):
        """1 open, 0 closed, None without a lid switch."""
        if self._lid is None:
            return None
        return 1 if self._lid.value() == self.c["lid_open"] else 0

    def tilt(self):
        if self._tilt is None:
            return None
        return 90 if self._tilt.value() == 0 else 0

    async def pings(self):
        """``pings`` raw distances in mm (None for a missed echo), or None without a sonar."""
        s = self._sonar
        if s is None:
            return None
        n = self.c["pings"]
        out = []
        try:
            if self.c["sonar"] == "hcsr04":
                for _ in range(n):
                    out.append(s.distance_mm(self.c["sonar_ref_c"]))
                    await asyncio.sleep_ms(_HCSR04_GAP_MS)
            else:
                # The A02YYUW streams a frame every ~100 ms: take the newest of each period.
                t0 = ticks_ms()
                while len(out) < n and ticks_diff(ticks_ms(), t0) < n * 3 * _A02_FRAME_MS:
                    await asyncio.sleep_ms(_A02_FRAME_MS)
                    mm = s.read()
                    if mm is not None:
                        out.append(mm)
        except OSError as e:
            self._fail("sonar", e)
        return out

    async def weight(self):
        """Grams on the load cell, or None."""
        if self._hx is None:
            return None
        try:
            return await self._hx.aweight(3)
        except OSError as e:
            self._fail("scale", e)
            return None

    def card(self):
        """The UID (hex str) of a card on the reader, or None."""
        if self._rfid is None:
            return None
        try:
            uid = self._rfid.read_uid()
        except OSError as e:
            self._fail("card reader", e)
            return None
        if uid is None:
            return None
        from binascii import hexlify

        return hexlify(uid).decode()

    async def read(self):
        """All readings for the core (see ``BinCore.update``)."""
        ds = self._ds
        ready = None
        if ds is not None:
            try:
                ready = ticks_add(ticks_ms(), ds.convert())  # converts while the sonar and scale work
            except OSError as e:
                self._fail("thermometer", e)
                ds = None
        r = {"lid": self.lid(), "tilt": self.tilt()}
        r["mm"] = await self.pings()
        r["w_g"] = await self.weight()
        r["bat"] = self.hal.battery(self.cfg.get("bat_pin"), self.cfg.get("bat_div_pct", 200))
        if ds is not None:
            left = ticks_diff(ready, ticks_ms())
            if left > 0:
                await asyncio.sleep_ms(left)
            try:
                r["temp"] = ds.read()
            except OSError as e:
                self._fail("thermometer", e)
        return r

    # -- the wake --------------------------------------------------------------------------

    def _send(self, tele, evs):
        node = self.node
        for e in evs:
            node.event(e, alarm=e["ev"] in ALARMS)
        if tele:
            node.telemetry(tele)

    async def run(self):
        node = self.node
        hal = self.hal
        c = self.c
        core = self.core = self._core()
        # "timer"; "pin" (EXT0: the lid) or "pins" (EXT1: the card reader's wake line); None
        # after a power-on or reset.
        reason = hal.wake_reason()
        t = hal.time()  # the RTC: runs on through deep sleep, synced or not
        r = await self.read()
        tele, evs = core.update(t, r, wake=True)
        self._send(tele, evs)
        # A card: on the reader now, or (after a card wake) within card_s.
        uid = self.card()
        if uid is None and reason in ("pin", "pins") and self._rfid is not None:
            t0 = ticks_ms()
            while uid is None and ticks_diff(ticks_ms(), t0) < c["card_s"] * 1000:
                await asyncio.sleep_ms(_POLL_MS)
                uid = self.card()
        if uid is not None:
            core.card(hal.time(), uid, r.get("w_g"), self.lid() or 0)
        lid_was_open = r.get("lid") == 1
        t0 = hal.time()
        while core.busy or (self.lid() == 1 and hal.time() - t0 < c["lid_wait_s"]):
            await asyncio.sleep_ms(_POLL_MS)
            if not core.busy:
                continue
            lid = self.lid() or 0
            w = await self.weight() if core.need_weight(hal.time()) else None
            ev = core.poll(hal.time(), lid, w)
            if ev is not None:
                node.event(ev)
                lid_was_open = True
        if lid_was_open and self.lid() != 1:
            # The lid is shut again: the fill can be measured now.
            tele, evs = core.update(hal.time(), await self.read())
            self._send(tele, evs)
        save_json(STATE_FILE, core.state())
        if self._hx is not None:
            self._hx.power_down()  # ~1 uA instead of 1.5 mA (if the HAL holds the pin in sleep)
        self.sleep_s = core.sleep_s()
        self._release()
        # The link comes up now (link_later): the queued reports go out, commands come in.
        await node.idle(self.cfg.get("sleep_flush_s", 10))
        self._arm_wakes()
        await node.sleep(lambda: self.sleep_s)  # asked after the flush: a bin.config may come

    def _core(self):
        from roles import bin_core

        return bin_core.BinCore(self.c, self.cfg["report_s"], load_json(STATE_FILE), load_json(CONFIG_FILE))

    def _release(self):
        """The wake's work is done and queued: drop the drivers and the core, and their code,
        before the node brings the link up (on a bin, the two never share the heap)."""
        self._sonar = self._hx = self._ds = self._rfid = self.core = None
        for m in ("roles.bin_core", "drivers.a02yyuw", "drivers.hcsr04", "drivers.hx711", "drivers.ds18b20",
                  "drivers.mfrc522", "filters", "drivers.errors", "drivers", "hal_extra"):
            unload(m)

    def _arm_wakes(self):
        f = getattr(self.hal, "wake_on_pin", None)
        if f is None:
            return
        p = self.c["pins"]
        if self._lid is not None:
            # Wake when the lid changes from how it is now (so an open lid does not wake us at once).
            f(p["lid"], self.c["lid_open"] if self.lid() != 1 else 1 - self.c["lid_open"])
        if p["wake"] is not None:
            f(p["wake"], 0)  # the card reader's wake line, active low

    def on_command(self, op, args):
        if op == "bin.config":
            # After the wake's work (run(): _release) the core is rebuilt from flash for it.
            core = self.core or self._core()
            err = core.configure(args)
            if err:
                raise ValueError(err)
            save_json(CONFIG_FILE, core.overrides)
            self.sleep_s = core.sleep_s()  # a new report_s counts for this sleep already
            return None
        return Role.on_command(self, op, args)
