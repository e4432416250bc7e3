"""The pet scanner's decisions, without hardware: scans, answers and a button in; events and
what the LED and the buzzer show out.

Times are ``time.ticks_ms()`` values (compared with ``ticks_diff``)::

    core = PetscanCore(settings.load("petscan", cfg.get("petscan")))
    ev = core.scan("LP1-7Q2M9XKD-ABCDEF-W", now, online=True)   # {"ev": "scan", ...} or None
    core.answer({"tag": "7Q2M9XKD", "status": "green", "buzz": "ok"}, now)  # pet.status
    core.tick(now)                       # the 500 ms answer deadline, indications ending
    ev = core.button(pin_level, now)     # {"ev": "fouling", ...} on a debounced press, or None
    colour, pattern = core.led           # e.g. ("green", None): what the RGB LED shows now
    buzz = core.take_buzz()              # a pattern name to play once ("ok"), or None

The settings (keys and defaults) are in :mod:`roles.settings`.

**Scans.** A text that is not a well-formed pet tag (:mod:`pettag`: layout and check
character) is refused here: red fast blink and the ``error`` buzz, nothing is sent. The same
tag again within ``repeat_ms`` is ignored (scanners read a code held in front of them many
times). A good tag is sent as ``{"ev": "scan", "tag": TEXT}`` and the LED shows white while
the gateway's answer is awaited.

**Answers.** The gateway answers a scan with ``pet.status`` (``tag`` pet id or null,
``status`` green/yellow/red, ``buzz`` ok/warn/alarm): the LED shows the status colour for
``show_ms`` and the buzzer plays the pattern. When the node is offline at the scan, or no
answer came within ``answer_ms`` (500), the scan is queued (the runtime sends it later): blue
double blink and the ``queued`` buzz. An answer that arrives later, but within ``late_ms``,
still replaces the queued indication.

**Fouling.** The "report fouling" button (active low unless ``button_active`` is 1) counts
once it held ``debounce_ms``; a press sends ``{"ev": "fouling"}`` with the ``tag`` of the
last good scan if that was within ``fouling_tag_s``; presses within ``fouling_gap_s`` of the
last report are ignored. Offline, it shows the queued indication; online, a short white
flash and the ``ok`` buzz.
"""

from time import ticks_add, ticks_diff

from micropython import const

from pettag import TagError, check_format

STATUSES = ("green", "yellow", "red")
_BUZZ = ("ok", "warn", "alarm")  # by status, as linli.pets.BUZZ
_CONFIRM_MS = const(300)

class Debounce:
    """A contact read now and then: the level counts once it held for ``ms`` milliseconds.

        sw = Debounce(50, level=1)
        if sw.update(pin.value(), time.ticks_ms()) and sw.level == 0:   # a press (active low)
            ...
    """

    def __init__(self, ms=50, level=None):
        self.ms = ms
        self.level = level  # the debounced level (None until first seen stable)
        self._raw = level
        self._since = None

    def update(self, raw, now):
        """Feed the raw level at time ``now`` (ms, ticks); True when the debounced level changed."""
        if raw != self._raw:
            self._raw = raw
            self._since = now
            return False
        if raw == self.level:
            return False
        if self._since is None or ticks_diff(now, self._since) >= self.ms:
            self.level = raw
            return True
        return False


class PetscanCore:
    def __init__(self, cfg):
        self.cfg = cfg
        self.led = ("off", None)  # (colour, pattern): pattern None steady, "fast", "double"
        self._buzz = None
        self._until = None  # when the current indication ends (back to off)
        self._pending = None  # [pet id, tag text, sent at, queued shown]
        self._last_tag = None  # [text, at] of the last good scan
        self._fouling_at = None
        self._btn = Debounce(cfg["debounce_ms"], 1 - cfg["button_active"])
        self.rejected = 0

    def _show(self, colour, pattern, buzz, now, ms):
        self.led = (colour, pattern)
        if buzz:
            self._buzz = buzz
        self._until = ticks_add(now, ms) if ms else None

    def take_buzz(self):
        """The buzz pattern to play (once), or None."""
        b = self._buzz
        self._buzz = None
        return b

    def scan(self, text, now, online=True):
        """A code the scanner read at ``now``; the ``scan`` event to send, or None."""
        c = self.cfg
        try:
            pid = check_format(text)
        except TagError:
            self.rejected += 1
            self._show("red", "fast", "error", now, 1500)
            return None
        tag = text.strip().upper() if isinstance(text, str) else str(text, "utf-8").strip().upper()
        last = self._last_tag
        if last is not None and last[0] == tag and ticks_diff(now, last[1]) < c["repeat_ms"]:
            last[1] = now  # held in front of the scanner: still the same scan
            return None
        self._last_tag = [tag, now]
        if online:
            self._pending = [pid, tag, now, False]
            self._show("white", None, None, now, c["answer_ms"] + c["late_ms"])
        else:
            self._pending = [pid, tag, now, True]
            self._show("blue", "double", "queued", now, c["show_ms"])
        return {"ev": "scan", "tag": tag}

    def answer(self, a, now):
        """The gateway's ``pet.status`` arguments; True when shown (it matched the last scan)."""
        p = self._pending
        if p is None or not isinstance(a, dict):
            return False
        status = a.get("status")
        tag = a.get("tag")
        if status not in STATUSES or (tag is not None and tag != p[0]):
            return False
        if ticks_diff(now, p[2]) > self.cfg["answer_ms"] + self.cfg["late_ms"]:
            self._pending = None
            return False
        self._pending = None
        buzz = a.get("buzz")
        if not isinstance(buzz, str):
            buzz = _BUZZ[STATUSES.index(status)]
        self._show(status, None, buzz, now, self.cfg["show_ms"])
        return True

    def tick(self, now):
        """Deadlines: the answer's 500 ms, the end of an indication."""
        p = self._pending
        if p is not None:
            age = ticks_diff(now, p[2])
            if not p[3] and age >= self.cfg["answer_ms"]:
                p[3] = True
                self._show("blue", "double", "queued", now, self.cfg["show_ms"])
            elif age > self.cfg["answer_ms"] + self.cfg["late_ms"]:
                self._pending = None
        if self._until is not None and ticks_diff(now, self._until) >= 0:
            self._until = None
            self.led = ("off", None)

    def button(self, level, now, online=True):
        """The fouling button's raw level at ``now``; the ``fouling`` event on a press, or None."""
        b = self._btn
        if not b.update(level, now) or b.level != self.cfg["button_active"]:
            return None
        c = self.cfg
        f = self._fouling_at
        if f is not None and ticks_diff(now, f) < c["fouling_gap_s"] * 1000:
            return None
        self._fouling_at = now
        ev = {"ev": "fouling"}
        last = self._last_tag
        if last is not None and ticks_diff(now, last[1]) < c["fouling_tag_s"] * 1000:
            ev["tag"] = last[0]
        if online:
            self._show("white", "fast", "ok", now, _CONFIRM_MS)
        else:
            self._show("blue", "double", "queued", now, c["show_ms"])
        return ev
