"""The pet scanner role on the node: QR scans in, the gateway's answer on the LED and buzzer.

The decisions are :class:`roles.petscan_core.PetscanCore`'s; this module polls the GM65 and
the "report fouling" button every 20 ms, drives the RGB LED and the buzzer, and hands the
gateway's ``pet.status`` command to the core (shown at once, from the command handler)::

    "petscan": {"answer_ms": 500, "pins": {"button": 33, "buzzer": 32}}

A tag that fails the local check (:mod:`pettag`) only buzzes ``error``; a good one is sent as
a ``scan`` event; "online" is the runtime's link state (``node.link.up``). Buzz patterns:
``ok``, ``error`` and ``queued`` are the buzzer driver's, ``warn`` (two mid beeps) and
``alarm`` (three long low tones) are defined here for the gateway's yellow and red answers.

The settings (keys, defaults, pins) are in :mod:`roles.settings`.
"""

import asyncio
from time import ticks_ms

from micropython import const

from node.role import Role
from roles import petscan_core

_LOOP_MS = const(20)
# The gateway's yellow/red answers (linli.pets.BUZZ: green ok, yellow warn, red alarm).
WARN = ((2000, 120), (0, 80), (2000, 120))
ALARM = ((900, 300), (0, 100), (900, 300), (0, 100), (900, 300))
# Colour names by their RGB bit mask (red 1, green 2, blue 4), as drivers.statusled takes them.
_COLOURS = ("off", "red", "green", "yellow", "blue", "magenta", "cyan", "white")


class Petscan(Role):
    name = "petscan"

    def __init__(self, node, hal, cfg):
        super().__init__(node, hal, cfg)
        from roles import settings

        c = self.c = settings.load("petscan", self.section())
        settings.release()
        del settings  # the last reference: its code and tables can go now
        p = c["pins"]
        from drivers import buzzer, statusled
        from drivers.gm65 import GM65

        self.qr = GM65(hal.uart(c["qr_uart"], c["qr_baud"], p["qr_tx"], p["qr_rx"]))
        self.led = statusled.StatusLed(hal.pin(p["r"], "out", value=0), hal.pin(p["g"], "out", value=0),
                                       hal.pin(p["b"], "out", value=0), invert=c["led_invert"])
        self.buzzer = buzzer.Buzzer(hal.pwm(p["buzzer"], 2700, 0), c["volume"])
        self._buzz = {"ok": buzzer.OK, "error": buzzer.ERROR, "queued": buzzer.QUEUED, "warn": WARN, "alarm": ALARM}
        self._patterns = {None: None, "fast": statusled.FAST, "double": statusled.DOUBLE, "blink": statusled.BLINK}
        pull = "down" if c["button_active"] else "up"
        self.button = hal.pin(p["button"], "in", pull) if p["button"] is not None else None
        self.core = petscan_core.PetscanCore(c)
        self._shown = None
        self.errors = 0

    def online(self):
        link = getattr(self.node, "link", None)
        return bool(getattr(link, "up", False))

    def show(self, now):
        """Put the core's indication on the LED and start its buzz pattern."""
        led = self.core.led
        if led != self._shown:
            self._shown = led
            self.led.show(_COLOURS.index(led[0]) if led[0] in _COLOURS else 0, self._patterns.get(led[1]), now)
        b = self.core.take_buzz()
        if b is not None:
            pat = self._buzz.get(b)
            if pat is None:
                pat = self._buzz["ok"]  # a pattern name this firmware does not know
            self.buzzer.start(pat, now)

    def step(self, now):
        """One pass: the scanner, the button, the deadlines, the LED and the buzzer."""
        core = self.core
        node = self.node
        try:
            text = self.qr.poll()
        except OSError as e:  # not UTF-8: a misread, or not a QR code for us
            self.errors += 1
            node.log("scanner: %s", e)
            text = None
        if text is not None:
            ev = core.scan(text, now, self.online())
            if ev is not None:
                node.event(ev)
        if self.button is not None:
            ev = core.button(self.button.value(), now, self.online())
            if ev is not None:
                node.event(ev)
        core.tick(now)
        self.show(now)
        self.led.step(now)
        self.buzzer.step(now)

    async def run(self):
        while True:
            self.step(ticks_ms())
            await asyncio.sleep_ms(_LOOP_MS)

    def on_command(self, op, args):
        if op == "pet.status":
            now = ticks_ms()
            shown = self.core.answer(args, now)
            self.show(now)  # now, not at the next pass of the loop
            if not shown:
                self.node.log("pet.status for another or an expired scan: not shown")
            return None
        return Role.on_command(self, op, args)
