"""The rules behind :func:`linli.hw.validate`: wiring mistakes caught before anything is soldered.

Modelled on ESPHome's pin validation (``esphome/components/esp32/gpio_esp32.py``): a pin wired
to the module's flash, an input-only pin used as an output, a pin used twice, a pin the board
does not have, an analogue read on ADC2 while Wi-Fi owns it, and a pull-up the pin does not have
are errors; strapping, console and USB pins are warnings that say which level the pin must have
at reset. Every finding names the file, the dotted key and why, plus the fix in one sentence.

Each ``check_*`` function takes the parsed TOML and returns ``(errors, warnings)``, lists of
:class:`Finding`; :func:`linli.hw.validate` raises the errors as one :class:`~linli.errors.HwError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

ROLES = ("bin", "streetlight", "petscan")
CHIPS = ("ESP32", "ESP32-S2", "ESP32-S3", "ESP32-C3", "ESP32-C6", "ESP32-H2")
DIRS = ("in", "out", "bidir", "adc")
RAILS = ("3V3", "5V", "GND", "VBAT", "VIN", "EN")
_OUTPUTS = ("out", "bidir")


@dataclass(frozen=True)
class Finding:
    """One problem in a ``hw/`` file; ``level`` is "error" or "warning".

    >>> print(Finding("hw/boards/b.toml", "roles.bin.pins.trig", "GPIO 5 is a strapping pin", "Keep it high at reset.", "warning"))
    hw/boards/b.toml: roles.bin.pins.trig: GPIO 5 is a strapping pin. Keep it high at reset.
    """

    file: str
    key: str
    why: str
    fix: str
    level: str = "error"

    def __str__(self) -> str:
        return "%s: %s: %s. %s" % (self.file, self.key, self.why, self.fix)


class _Report:
    """Findings of one file."""

    def __init__(self, file: str):
        self.file = file
        self.errors: list[Finding] = []
        self.warnings: list[Finding] = []

    def error(self, key: str, why: str, fix: str) -> None:
        self.errors.append(Finding(self.file, key, why, fix, "error"))

    def warn(self, key: str, why: str, fix: str) -> None:
        self.warnings.append(Finding(self.file, key, why, fix, "warning"))

    def result(self):
        return self.errors, self.warnings


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ints(v: Any) -> bool:
    return isinstance(v, list) and all(_is_int(x) for x in v)


def ranges(nums: Iterable[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``.

    >>> ranges([0, 1, 2, 5, 7, 8])
    '0-2, 5, 7-8'
    """
    out: list[str] = []
    run: list[int] = []
    for n in sorted(set(nums)):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else "%d-%d" % (run[0], run[-1]))
        run = [n]
    if run:
        out.append(str(run[0]) if len(run) == 1 else "%d-%d" % (run[0], run[-1]))
    return ", ".join(out)


# -- the function table (hw/roles.toml) ------------------------------------------------------


def check_functions(raw: dict, rep: _Report) -> dict:
    """hw/roles.toml -> ``{scope: {key: {"dir", "pull", "bus", "does"}}}`` (scope: a role or "node")."""
    table: dict[str, dict] = {}
    for scope in ROLES + ("node",):
        pins = raw.get(scope, {}).get("pins") if isinstance(raw.get(scope), dict) else None
        if not isinstance(pins, dict) or not pins:
            rep.error("%s.pins" % scope, "missing: every role (and node) needs its pin functions", "Add a [%s.pins] table." % scope)
            continue
        table[scope] = {}
        for key, spec in pins.items():
            where = "%s.pins.%s" % (scope, key)
            if not isinstance(spec, dict) or spec.get("dir") not in DIRS:
                rep.error(where, "needs dir = one of %s, got %r" % (", ".join(DIRS), spec), 'Write %s = { dir = "in", does = "..." }.' % key)
                continue
            if spec.get("pull") not in (None, "up", "down"):
                rep.error(where + ".pull", "must be up or down, got %r" % spec["pull"], "Use pull = \"up\" or leave it out.")
                continue
            table[scope][key] = {"dir": spec["dir"], "pull": spec.get("pull"), "bus": spec.get("bus"), "does": str(spec.get("does", ""))}
    values = raw.get("node", {}).get("values", {}) if isinstance(raw.get("node"), dict) else {}
    table["node_values"] = {}
    for key, lohi in values.items():
        if not (_ints(lohi) and len(lohi) == 2):
            rep.error("node.values.%s" % key, "must be [min, max], got %r" % (lohi,), "Write %s = [0, 2]." % key)
            continue
        table["node_values"][key] = tuple(lohi)
    return table


# -- board profiles (hw/boards/*.toml) -------------------------------------------------------


@dataclass
class Gpio:
    """A board's GPIO facts, from its ``[gpio]`` and ``[onboard]`` tables."""

    pins: list[int]
    flash: set[int]
    psram: set[int]
    input_only: set[int]
    no_pull: set[int]
    console: set[int]
    usb: set[int]
    adc1: dict[int, int]
    adc2: dict[int, int]
    strapping: dict[int, dict]
    parts: dict[int, str]
    boot_button: int | None

    def reserved(self) -> set[int]:
        """Pins a new function should not land on (suggestions avoid them)."""
        return self.flash | self.psram | self.console | self.usb | set(self.strapping) | set(self.parts)

    def free(self, used: Iterable[int], direction: str, n: int = 3) -> list[int]:
        """Up to ``n`` GPIOs that would take a pin of ``direction`` without any finding."""
        taken = set(used) | self.reserved()
        out = []
        for p in self.pins:
            if p in taken or (direction in _OUTPUTS and p in self.input_only):
                continue
            if direction == "adc" and p not in self.adc1:
                continue
            out.append(p)
        return out[:n]


def _gpio(raw: dict, rep: _Report) -> Gpio | None:
    g = raw.get("gpio")
    if not isinstance(g, dict):
        rep.error("gpio", "missing: the board's GPIO facts", "Add a [gpio] table (see hw/README.md).")
        return None
    bad = False
    lists = {}
    for k in ("pins", "flash", "psram", "input_only", "no_pull", "console", "usb"):
        v = g.get(k, [])
        if not _ints(v):
            rep.error("gpio.%s" % k, "must be a list of GPIO numbers, got %r" % (v,), "Write %s = [6, 7, 8]." % k)
            bad = True
        lists[k] = v if _ints(v) else []
    if not lists["pins"]:
        rep.error("gpio.pins", "missing or empty: the GPIOs the board breaks out", "List them: pins = [0, 1, 2, ...].")
        bad = True
    adc = {}
    for k in ("adc1", "adc2"):
        v = g.get(k, {})
        try:
            adc[k] = {int(p): int(ch) for p, ch in v.items()}
        except (AttributeError, TypeError, ValueError):
            rep.error("gpio.%s" % k, "must map GPIO -> channel, got %r" % (v,), "Write %s = { 36 = 0, 39 = 3 }." % k)
            bad = True
    strapping = {}
    for p, spec in (g.get("strapping") or {}).items():
        if not (str(p).isdigit() and isinstance(spec, dict) and isinstance(spec.get("boot"), str)):
            rep.error("gpio.strapping.%s" % p, "must be GPIO = { boot = LEVEL, why = ... }", 'Write 0 = { boot = "high", why = "..." }.')
            bad = True
            continue
        strapping[int(p)] = spec
    onboard = raw.get("onboard", {})
    parts = {}
    for p, what in (onboard.get("parts") or {}).items() if isinstance(onboard, dict) else ():
        if str(p).isdigit():
            parts[int(p)] = str(what)
    boot = onboard.get("boot_button") if isinstance(onboard, dict) else None
    if bad:
        return None
    known = set(lists["pins"])
    for k in ("flash", "psram", "input_only", "no_pull", "console", "usb"):
        for p in lists[k]:
            if p not in known:
                rep.error("gpio.%s" % k, "GPIO %d is not in gpio.pins" % p, "Add it to gpio.pins or drop it here.")
    return Gpio(
        pins=sorted(known), flash=set(lists["flash"]), psram=set(lists["psram"]),
        input_only=set(lists["input_only"]), no_pull=set(lists["no_pull"]), console=set(lists["console"]),
        usb=set(lists["usb"]), adc1=adc["adc1"], adc2=adc["adc2"], strapping=strapping, parts=parts,
        boot_button=boot if _is_int(boot) else None,
    )


def _header(raw: dict, stem: str, rep: _Report) -> None:
    if raw.get("id") != stem:
        rep.error("id", "must equal the file name %r, got %r" % (stem, raw.get("id")), "Set id = \"%s\" (the id `linli flash --board` takes)." % stem)
    if not isinstance(raw.get("name"), str) or not raw.get("name"):
        rep.error("name", "missing: a name for people", 'Add name = "ESP32-DevKitC V4".')
    if raw.get("chip") not in CHIPS:
        rep.error("chip", "must be esptool's chip name (%s), got %r" % (", ".join(CHIPS), raw.get("chip")), 'Set chip = "ESP32".')
    if raw.get("flash_mb") not in (1, 2, 4, 8, 16, 32):
        rep.error("flash_mb", "must be the flash size in MB (1, 2, 4, 8, 16 or 32), got %r" % (raw.get("flash_mb"),), "Set flash_mb = 4.")


def _pin_entry(value: Any) -> tuple[int | None, str | None, str]:
    """A board's pin value: ``5`` or ``{ gpio = 5, dir = "in", note = "..." }``."""
    if _is_int(value):
        return value, None, ""
    if isinstance(value, dict) and _is_int(value.get("gpio")):
        return value["gpio"], value.get("dir"), str(value.get("note", ""))
    return None, None, ""


def role_rows(raw_role: dict, functions: dict, role: str, rep: _Report) -> list[dict]:
    """The pins of one role in a board profile, resolved against the function table.

    Each row: ``key`` (dotted, for messages), ``name``, ``scope`` ("pins" or "node"),
    ``gpio``, ``dir``, ``pull``, ``bus``, ``does``, ``note``.
    """
    rows = []
    for scope, table in (("pins", functions.get(role, {})), ("node", functions.get("node", {}))):
        given = raw_role.get(scope, {})
        if not isinstance(given, dict):
            rep.error("roles.%s.%s" % (role, scope), "must be a table, got %r" % (given,), "Write [roles.%s.%s]." % (role, scope))
            continue
        for name, value in given.items():
            key = "roles.%s.%s.%s" % (role, scope, name)
            if scope == "node" and name in functions.get("node_values", {}):
                lo, hi = functions["node_values"][name]
                if not (_is_int(value) and lo <= value <= hi):
                    rep.error(key, "must be an int from %d to %d, got %r" % (lo, hi, value), "Set %s to a number in that range." % name)
                continue
            if name not in table:
                known = sorted(table) + (sorted(functions.get("node_values", {})) if scope == "node" else [])
                rep.error(key, "the firmware has no %s %s named %r" % (role if scope == "pins" else "config", "pin" if scope == "pins" else "key", name),
                          "Use one of: %s (hw/roles.toml)." % ", ".join(known))
                continue
            gpio, d, note = _pin_entry(value)
            if gpio is None:
                rep.error(key, "must be a GPIO number or { gpio = N, dir = ..., note = ... }, got %r" % (value,),
                          "Write %s = 5 (leave a pin that is not fitted out)." % name)
                continue
            if d is not None and d not in DIRS:
                rep.error(key + ".dir", "must be one of %s, got %r" % (", ".join(DIRS), d), "Fix the dir or leave it out (hw/roles.toml gives one).")
                continue
            f = table[name]
            rows.append({"key": key, "name": name, "scope": scope, "gpio": gpio, "dir": d or f["dir"], "pull": f["pull"],
                         "bus": f["bus"], "does": f["does"], "note": note})
    return rows


def check_role(rows: list[dict], gpio: Gpio, role: str, wifi: bool, board_id: str, rep: _Report) -> None:
    """The ESPHome-style pin rules for one role's rows."""
    used: dict[int, str] = {}
    allp = [r["gpio"] for r in rows]
    for r in rows:
        n, key, name, d = r["gpio"], r["key"], r["name"], r["dir"]

        def free(direction=d, _used=allp):
            got = gpio.free(_used, direction)
            return ", ".join("GPIO %d" % p for p in got) if got else "a free GPIO"

        if n not in gpio.pins:
            rep.error(key, "GPIO %d does not exist on %s (it breaks out GPIO %s)" % (n, board_id, ranges(gpio.pins)),
                      "Move %s to a free GPIO such as %s." % (name, free()))
            continue
        if n in gpio.flash:
            rep.error(key, "GPIO %d is wired to the module's SPI flash (flash pins %s): driving it crashes the board" % (n, ranges(gpio.flash)),
                      "Move %s to a free GPIO such as %s." % (name, free()))
            continue
        if n in gpio.psram:
            rep.error(key, "GPIO %d is wired to the module's PSRAM (pins %s)" % (n, ranges(gpio.psram)),
                      "Move %s to a free GPIO such as %s." % (name, free()))
            continue
        if n in used:
            rep.error(key, "GPIO %d is already used by %s: one pin used twice" % (n, used[n]),
                      "Give %s its own GPIO such as %s (parts that share a bus share its pins in hw/wiring/%s.toml)." % (name, free(), role))
            continue
        used[n] = key
        if d in _OUTPUTS and n in gpio.input_only:
            rep.error(key, "GPIO %d is input-only (GPIO %s have no output driver) but %s is an %s (%s)"
                      % (n, ranges(gpio.input_only), name, "output" if d == "out" else "input/output", r["does"]),
                      "Move %s to an output-capable GPIO such as %s." % (name, free()))
        if r["pull"] and n in gpio.no_pull:
            rep.error(key, "GPIO %d has no internal pull-%s but the firmware turns one on for %s" % (n, r["pull"], name),
                      "Move %s to a GPIO such as %s, or fit a 10k resistor to %s and keep it here." % (name, free(), "3V3" if r["pull"] == "up" else "GND"))
        if d == "adc":
            if n in gpio.adc2 and wifi:
                rep.error(key, "GPIO %d is ADC2_CH%d, which the Wi-Fi driver owns: analogue reads fail while Wi-Fi is on" % (n, gpio.adc2[n]),
                          "Move %s to an ADC1 pin such as %s." % (name, free("adc")))
            elif n not in gpio.adc1 and n not in gpio.adc2:
                rep.error(key, "GPIO %d has no ADC channel but %s is an analogue read" % (n, name),
                          "Move %s to an ADC1 pin such as %s." % (name, free("adc")))
        if n in gpio.strapping:
            s = gpio.strapping[n]
            rep.warn(key, "GPIO %d is a strapping pin: it must be %s at reset (%s)" % (n, s["boot"], s.get("why", "")),
                     "Make sure what %s connects to leaves it %s while the board resets, or move it to %s." % (name, s["boot"], free()))
        if n in gpio.console:
            rep.warn(key, "GPIO %d is UART0 to the USB bridge: the REPL and flashing share it" % n,
                     "Move %s to %s unless nothing else drives the line while flashing." % (name, free()))
        if n in gpio.usb:
            rep.warn(key, "GPIO %d is a native USB data line: using it disables the USB port" % n,
                     "Move %s to %s, or flash and log over the UART port only." % (name, free()))
        if n in gpio.parts:
            rep.warn(key, "GPIO %d also drives %s" % (n, gpio.parts[n]), "Move %s to %s, or expect that part to react." % (name, free()))
    names = {r["name"] for r in rows if r["scope"] == "node"}
    if ("uart_tx" in names) != ("uart_rx" in names):
        rep.error("roles.%s.node" % role, "uart_tx and uart_rx go together, got only one",
                  "Set both (or neither: the UART's default pins, which are flash pins 9/10 on the ESP32's UART1).")


def check_board(raw: dict, stem: str, functions: dict, rep: _Report) -> tuple[Gpio | None, dict]:
    """A whole board profile; returns its GPIO facts and ``{role: rows}``."""
    _header(raw, stem, rep)
    gpio = _gpio(raw, rep)
    roles = raw.get("roles", {})
    out: dict[str, list] = {}
    if not isinstance(roles, dict) or not roles:
        rep.error("roles", "missing: no role pin maps", "Add [roles.bin.pins] (and the other roles the board serves).")
        return gpio, out
    for role, spec in roles.items():
        if role not in ROLES:
            rep.error("roles.%s" % role, "unknown role %r" % role, "Use one of: %s." % ", ".join(ROLES))
            continue
        if not isinstance(spec, dict):
            rep.error("roles.%s" % role, "must be a table", "Write [roles.%s.pins]." % role)
            continue
        for k in spec:
            if k not in ("pins", "node", "wifi"):
                rep.error("roles.%s.%s" % (role, k), "unknown key", "Use pins, node or wifi.")
        wifi = spec.get("wifi", True)
        if not isinstance(wifi, bool):
            rep.error("roles.%s.wifi" % role, "must be true or false, got %r" % (wifi,), "Set wifi = false only for nodes on a serial line.")
            wifi = True
        rows = role_rows(spec, functions, role, rep)
        if gpio is not None:
            check_role(rows, gpio, role, wifi, stem, rep)
        out[role] = rows
    return gpio, out


# -- the gateway's own pins (hw/gateways/*.toml) ---------------------------------------------

GATEWAY_PARTS = ("status_led", "buzzer", "button")


def check_gateway(raw: dict, stem: str, rep: _Report) -> None:
    if raw.get("id") != stem:
        rep.error("id", "must equal the file name %r, got %r" % (stem, raw.get("id")), 'Set id = "%s".' % stem)
    lohi = raw.get("pins_valid", [2, 27])
    if not (_ints(lohi) and len(lohi) == 2):
        rep.error("pins_valid", "must be [first, last] BCM GPIO, got %r" % (lohi,), "Write pins_valid = [2, 27].")
        lohi = [2, 27]
    reserved = {int(k): str(v) for k, v in (raw.get("reserved") or {}).items() if str(k).isdigit()}
    used: dict[int, str] = {}
    for part in GATEWAY_PARTS:
        spec = raw.get(part)
        if not isinstance(spec, dict):
            rep.error(part, "missing: the %s's pin" % part.replace("_", " "), "Add [%s] with pin = N (BCM)." % part)
            continue
        n = spec.get("pin")
        key = part + ".pin"
        if not _is_int(n) or not lohi[0] <= n <= lohi[1]:
            rep.error(key, "must be a BCM GPIO from %d to %d, got %r" % (lohi[0], lohi[1], n), "Set pin to the BCM number (not the header pin number).")
            continue
        if n in reserved:
            rep.error(key, "BCM %d is reserved: %s" % (n, reserved[n]), "Move the %s to a free BCM pin." % part.replace("_", " "))
        if n in used:
            rep.error(key, "BCM %d is already used by %s.pin: one pin used twice" % (n, used[n]), "Give the %s its own pin." % part.replace("_", " "))
        used.setdefault(n, part)
        flag = "pull_up" if part == "button" else "active_high"
        if not isinstance(spec.get(flag, True), bool):
            rep.error("%s.%s" % (part, flag), "must be true or false, got %r" % (spec[flag],), "Set %s = true or false." % flag)
        if part == "button":
            hold = spec.get("hold_s", 3.0)
            if isinstance(hold, bool) or not isinstance(hold, (int, float)) or not 0.2 <= hold <= 30:
                rep.error("button.hold_s", "must be seconds from 0.2 to 30, got %r" % (hold,), "Set hold_s = 3.0.")


# -- wiring tables (hw/wiring/ROLE.toml) and bills of materials (hw/bom/ROLE.toml) -----------


def check_bom(raw: dict, stem: str, rep: _Report) -> list[dict]:
    _role_header(raw, stem, rep)
    items = raw.get("item")
    if not isinstance(items, list) or not items:
        rep.error("item", "missing: no parts", "Add [[item]] tables (part, model, qty, unit_cny, supplier, datasheet).")
        return []
    seen: dict[str, int] = {}
    good = []
    for i, it in enumerate(items):
        at = "item[%d]" % i
        if not isinstance(it, dict):
            rep.error(at, "must be a table", "Write [[item]].")
            continue
        ok = True
        for k in ("part", "model", "supplier", "datasheet"):
            if not isinstance(it.get(k), str) or not it.get(k):
                rep.error("%s.%s" % (at, k), "missing or not a string", "Add %s = \"...\"." % k)
                ok = False
        if not (_is_int(it.get("qty")) and it["qty"] >= 1):
            rep.error(at + ".qty", "must be a whole number >= 1, got %r" % (it.get("qty"),), "Set qty = 1.")
            ok = False
        price = it.get("unit_cny")
        if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
            rep.error(at + ".unit_cny", "must be a price in CNY >= 0, got %r" % (price,), "Set unit_cny = 12.5.")
            ok = False
        if isinstance(it.get("datasheet"), str) and not it["datasheet"].startswith(("https://", "http://")):
            rep.error(at + ".datasheet", "must be a URL, got %r" % it["datasheet"], "Link the maker's datasheet (https://...).")
            ok = False
        part = it.get("part")
        if isinstance(part, str) and part in seen:
            rep.error(at + ".part", "%r is already item[%d]" % (part, seen[part]), "Give each part one line and use qty.")
            ok = False
        if isinstance(part, str):
            seen.setdefault(part, i)
        if ok:
            good.append(it)
    return good


def _role_header(raw: dict, stem: str, rep: _Report) -> None:
    if raw.get("role") != stem or stem not in ROLES:
        rep.error("role", "must be the role the file is named after (%s), got %r" % (", ".join(ROLES), raw.get("role")),
                  'Name the file after its role and set role = "%s".' % stem)


def check_wiring(raw: dict, stem: str, functions: dict, parts: set[str] | None, rep: _Report) -> list[dict]:
    """A role's wiring table: every wire's pin is a firmware pin (or a rail), every part is in
    the BOM, and only bus pins carry more than one part."""
    _role_header(raw, stem, rep)
    wires = raw.get("wire")
    if not isinstance(wires, list) or not wires:
        rep.error("wire", "missing: no wires", "Add [[wire]] tables (pin, part, part_pin, colour, note).")
        return []
    table = dict(functions.get("node", {}), **functions.get(stem, {}))
    first: dict[str, tuple[int, str]] = {}
    good = []
    for i, w in enumerate(wires):
        at = "wire[%d]" % i
        if not isinstance(w, dict):
            rep.error(at, "must be a table", "Write [[wire]].")
            continue
        pin, part, part_pin = w.get("pin"), w.get("part"), w.get("part_pin")
        if not isinstance(part, str) or not isinstance(part_pin, str):
            rep.error(at, "needs part and part_pin (strings)", 'Add part = "sonar", part_pin = "TX".')
            continue
        if parts is not None and part not in parts:
            rep.error(at + ".part", "%r is not in hw/bom/%s.toml" % (part, stem), "Add it to the bill of materials or use its part name there.")
        if pin in RAILS:
            good.append(w)
            continue
        if pin not in table:
            rep.error(at + ".pin", "%r is neither a %s pin nor a rail" % (pin, stem),
                      "Use one of: %s." % ", ".join(sorted(table) + list(RAILS)))
            continue
        end = "%s.%s" % (part, part_pin)
        if pin in first and not table[pin]["bus"]:
            rep.error(at + ".pin", "%s is already wired to %s by wire[%d]: one pin used twice (it is not a bus pin)" % (pin, first[pin][1], first[pin][0]),
                      "Give %s its own pin; only bus pins (`bus` in hw/roles.toml) may carry several parts." % end)
        first.setdefault(pin, (i, end))
        good.append(w)
    return good
