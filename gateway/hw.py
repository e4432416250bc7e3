"""Board profiles as data: ``hw/`` read, validated, and turned into a node's pin config.

``hw/`` holds TOML files (see hw/README.md): ``boards/BOARD.toml`` (an ESP32 board's GPIO facts
and one pin map per role), ``roles.toml`` (what each firmware pin does: direction, pull, bus),
``wiring/ROLE.toml`` (pin -> part pin -> wire colour), ``bom/ROLE.toml`` (bill of materials)
and ``gateways/NAME.toml`` (the gateway's status LED, buzzer and service button). Every load
validates (:mod:`linli.hw_check`): errors raise :class:`~linli.errors.HwError` naming the file
and key, warnings ride along on the loaded object::

    >>> b = load_board("esp32-devkitc")
    >>> b.chip, b.flash_mb, b.pins("streetlight")["lamp"]
    ('ESP32', 4, 25)
    >>> node_config("esp32-devkitc", "streetlight")["streetlight"]["pins"]
    {'scl': 22, 'sda': 21, 'pir': 27, 'lamp': 25}
    >>> load_gateway_profile().pins
    {'status_led': 17, 'buzzer': 27, 'button': 22}

``linli hw`` (:mod:`linli.hw_cli`) shows and checks them.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from linli.errors import HwError
from linli.hw_check import ROLES, Finding, Gpio, _Report, check_board, check_bom, check_functions, check_gateway, check_wiring

__all__ = [
    "Board", "Finding", "GatewayProfile", "HwError", "ROLES", "boards", "hw_root", "load_board",
    "load_bom", "load_gateway_profile", "load_wiring", "node_config", "validate",
]

# Keys of a node's config.json a board profile fills in (firmware/lib/node/config.py). The pin
# keys are always written, null when not fitted, so a merge never keeps a stale pin.
NODE_PIN_KEYS = ("uart_tx", "uart_rx", "uart_de", "bat_pin")


def hw_root() -> Path:
    """The ``hw/`` folder: ``$LINLI_HW`` when set, else ``hw/`` next to the package's source
    tree (like the firmware's path in :mod:`linli.fwbuild`)."""
    env = os.environ.get("LINLI_HW")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "hw"


def _display(path: Path, root: Path) -> str:
    """``hw/boards/x.toml`` for a file under a root named hw, else the path as given."""
    try:
        return "%s/%s" % (root.name, path.resolve().relative_to(root.resolve()).as_posix())
    except ValueError:
        return str(path)


def _read(path: Path, shown: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise HwError(shown, "", "no such file") from None
    except OSError as e:
        raise HwError(shown, "", "cannot be read: %s" % e.strerror) from None
    except tomllib.TOMLDecodeError as e:
        raise HwError(shown, "", "not valid TOML: %s" % e) from None


def _raise(errors: list[Finding], warnings: list[Finding] = ()) -> None:
    """Raise the errors as one HwError; the file's warnings ride along as ``.warnings``."""
    if errors:
        e = errors[0]
        exc = HwError(e.file, e.key, "%s. %s" % (e.why, e.fix), errors)
        exc.warnings = list(warnings)
        raise exc


def _functions(root: Path) -> dict:
    path = root / "roles.toml"
    rep = _Report(_display(path, root))
    table = check_functions(_read(path, rep.file), rep)
    _raise(rep.errors)
    return table


@dataclass(frozen=True)
class PinRow:
    """One pin of a role on a board: ``name`` is the firmware's key; ``gpio`` None = not fitted."""

    name: str
    scope: str  # "pins" (the role's section) or "node" (top-level config.json keys)
    gpio: int | None
    dir: str
    does: str
    note: str = ""
    bus: str | None = None
    pull: str | None = None


@dataclass(frozen=True)
class Board:
    """A validated board profile (``hw/boards/ID.toml``).

        >>> b = load_board("esp32-s3-devkitc-1")
        >>> b.name, b.chip, b.roles
        ('ESP32-S3-DevKitC-1 v1.1 (ESP32-S3-WROOM-1-N8R8)', 'ESP32-S3', ('bin', 'streetlight', 'petscan'))
        >>> b.pins("petscan")["button"]
        15
    """

    id: str
    name: str
    chip: str
    flash_mb: int
    psram_mb: int
    module: str
    path: Path
    gpio: Gpio
    warnings: tuple[Finding, ...]
    _rows: dict = field(repr=False)
    _node_values: dict = field(repr=False)

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles this board has pin maps for, in the firmware's order."""
        return tuple(r for r in ROLES if r in self._rows)

    def _role(self, role: str) -> list[PinRow]:
        if role not in self._rows:
            raise HwError(_display(self.path, self.path.parents[1]), "roles.%s" % role,
                          "board %s has no pin map for role %r (it has: %s)" % (self.id, role, ", ".join(self.roles)))
        return self._rows[role]

    def pins(self, role: str) -> dict[str, int | None]:
        """The role's pin section: every firmware pin name -> GPIO, None where not fitted."""
        return {r.name: r.gpio for r in self._role(role) if r.scope == "pins"}

    def rows(self, role: str) -> list[PinRow]:
        """Every pin of the role (its section, then the top-level ones), fitted or not."""
        return list(self._role(role))

    def node_keys(self, role: str) -> dict:
        """The top-level config.json keys for this role: the pins (None when not fitted) and
        values such as ``uart_id`` / ``bat_div_pct`` when the profile sets them."""
        out: dict = {r.name: r.gpio for r in self._role(role) if r.scope == "node"}
        out.update(self._node_values.get(role, {}))
        return out


def boards(root: Path | None = None) -> list[str]:
    """The board ids in ``hw/boards/``, sorted.

    >>> boards()
    ['esp32-devkitc', 'esp32-s3-devkitc-1']
    """
    root = root or hw_root()
    return sorted(p.stem for p in (root / "boards").glob("*.toml"))


def _board(path: Path, root: Path) -> tuple[Board | None, list[Finding], list[Finding]]:
    shown = _display(path, root)
    raw = _read(path, shown)
    functions = _functions(root)
    rep = _Report(shown)
    gpio, rows = check_board(raw, path.stem, functions, rep)
    if rep.errors or gpio is None:
        return None, rep.errors, rep.warnings
    resolved: dict[str, list[PinRow]] = {}
    values: dict[str, dict] = {}
    for role, role_rows in rows.items():
        given = {(r["scope"], r["name"]): r for r in role_rows}
        out = []
        for scope, table in (("pins", functions[role]), ("node", functions["node"])):
            for name, f in table.items():
                r = given.get((scope, name))
                out.append(PinRow(name, scope, r["gpio"] if r else None, r["dir"] if r else f["dir"], f["does"],
                                  r["note"] if r else "", f["bus"], f["pull"]))
        resolved[role] = out
        node = raw["roles"][role].get("node", {})
        values[role] = {k: v for k, v in node.items() if k in functions["node_values"]}
    b = Board(
        id=raw["id"], name=raw["name"], chip=raw["chip"], flash_mb=raw["flash_mb"], psram_mb=int(raw.get("psram_mb", 0)),
        module=str(raw.get("module", "")), path=path, gpio=gpio, warnings=tuple(rep.warnings),
        _rows=resolved, _node_values=values,
    )
    return b, rep.errors, rep.warnings


def load_board(board_id: str, root: Path | None = None) -> Board:
    """The board profile ``hw/boards/BOARD_ID.toml``, validated.

    Raises :class:`~linli.errors.HwError` for an unknown board (listing the known ids) or any
    wiring error; warnings (strapping pins, ...) are in ``Board.warnings``.

        >>> load_board("esp32-devkitc").flash_mb
        4
        >>> load_board("esp32-wrover")
        Traceback (most recent call last):
        ...
        linli.errors.HwError: hw/boards: board: unknown board 'esp32-wrover' (known: esp32-devkitc, esp32-s3-devkitc-1)
    """
    root = root or hw_root()
    known = boards(root)
    if board_id not in known:
        raise HwError("%s/boards" % root.name, "board", "unknown board %r (known: %s)" % (board_id, ", ".join(known) or "none"))
    b, errors, warnings = _board(root / "boards" / (board_id + ".toml"), root)
    _raise(errors, warnings)
    assert b is not None
    return b


def node_config(board_id: str, role: str, root: Path | None = None) -> dict:
    """The pin part of a node's ``config.json``, generated from the board profile.

    ``{role: {"pins": {...}}, "uart_tx": .., "uart_rx": .., "bat_pin": .., ...}`` in the shape
    the firmware's ``node.config.validate()`` and ``roles.settings.load()`` accept; `linli
    flash` merges it with the node's identity, site and intervals.

        >>> cfg = node_config("esp32-devkitc", "bin")
        >>> cfg["bin"]["pins"]["trig"], cfg["bat_pin"], cfg["uart_tx"]
        (5, 35, None)
    """
    if role not in ROLES:
        raise HwError("%s/roles.toml" % (root or hw_root()).name, "role", "unknown role %r (known: %s)" % (role, ", ".join(ROLES)))
    b = load_board(board_id, root)
    out: dict = {role: {"pins": b.pins(role)}}
    out.update(b.node_keys(role))
    return out


@dataclass(frozen=True)
class GatewayProfile:
    """The gateway's own I/O pins (BCM numbers, for gpiozero).

        >>> g = load_gateway_profile()
        >>> g.pins["button"], g.active_high["status_led"], g.pull_up, g.hold_s
        (22, True, True, 3.0)
    """

    id: str
    name: str
    pins: dict[str, int]
    active_high: dict[str, bool]
    pull_up: bool
    hold_s: float
    notes: dict[str, str]


def load_gateway_profile(name: str = "raspberry-pi", root: Path | None = None) -> GatewayProfile:
    """``hw/gateways/NAME.toml``, validated (HwError naming the file and key otherwise)."""
    root = root or hw_root()
    path = root / "gateways" / (name + ".toml")
    if not path.exists():
        known = sorted(p.stem for p in (root / "gateways").glob("*.toml"))
        raise HwError("%s/gateways" % root.name, "gateway", "unknown gateway profile %r (known: %s)" % (name, ", ".join(known) or "none"))
    rep = _Report(_display(path, root))
    raw = _read(path, rep.file)
    check_gateway(raw, path.stem, rep)
    _raise(rep.errors)
    return GatewayProfile(
        id=raw["id"], name=str(raw.get("name", raw["id"])),
        pins={p: raw[p]["pin"] for p in ("status_led", "buzzer", "button")},
        active_high={p: raw[p].get("active_high", True) for p in ("status_led", "buzzer")},
        pull_up=raw["button"].get("pull_up", True), hold_s=float(raw["button"].get("hold_s", 3.0)),
        notes={p: str(raw[p].get("note", "")) for p in ("status_led", "buzzer", "button")},
    )


def load_bom(role: str, root: Path | None = None) -> list[dict]:
    """``hw/bom/ROLE.toml``'s items (part, model, qty, unit_cny, supplier, datasheet), validated."""
    root = root or hw_root()
    path = root / "bom" / (role + ".toml")
    rep = _Report(_display(path, root))
    items = check_bom(_read(path, rep.file), path.stem, rep)
    _raise(rep.errors)
    return items


def load_wiring(role: str, root: Path | None = None) -> list[dict]:
    """``hw/wiring/ROLE.toml``'s wires (pin, part, part_pin, colour, note), validated."""
    root = root or hw_root()
    path = root / "wiring" / (role + ".toml")
    _, items = _check_wiring(path, root)
    return items


def _check_wiring(path: Path, root: Path) -> tuple[list[Finding], list[dict]]:
    rep = _Report(_display(path, root))
    raw = _read(path, rep.file)
    bom = root / "bom" / (path.stem + ".toml")
    parts = None
    if bom.exists():
        parts = {it.get("part") for it in (_read(bom, _display(bom, root)).get("item") or []) if isinstance(it, dict)}
    items = check_wiring(raw, path.stem, _functions(root), parts, rep)
    _raise(rep.errors)
    return rep.warnings, items


def validate(path: str | os.PathLike) -> list[Finding]:
    """Check one ``hw/`` file; return its warnings, raise :class:`~linli.errors.HwError` with
    every error. The kind comes from the folder: boards/, wiring/, bom/, gateways/, or the
    function table roles.toml.

        >>> [w.key for w in validate(hw_root() / "boards" / "esp32-devkitc.toml")]
        ['roles.bin.pins.trig', 'roles.bin.pins.rfid_cs']
    """
    path = Path(path)
    kind = path.parent.name
    root = path.parent if path.name == "roles.toml" else path.parent.parent
    if path.name == "roles.toml":
        _functions(root)
        return []
    if kind == "boards":
        _, errors, warnings = _board(path, root)
        _raise(errors, warnings)
        return warnings
    if kind == "wiring":
        return _check_wiring(path, root)[0]
    if kind == "bom":
        rep = _Report(_display(path, root))
        check_bom(_read(path, rep.file), path.stem, rep)
        _raise(rep.errors)
        return rep.warnings
    if kind == "gateways":
        rep = _Report(_display(path, root))
        check_gateway(_read(path, rep.file), path.stem, rep)
        _raise(rep.errors)
        return rep.warnings
    raise HwError(str(path), "", "not a hw/ file: expected hw/roles.toml or a file in hw/boards, hw/wiring, hw/bom or hw/gateways")


def all_files(root: Path | None = None) -> list[Path]:
    """Every file :func:`validate` knows under ``root``, in a stable order."""
    root = root or hw_root()
    out = [root / "roles.toml"] if (root / "roles.toml").exists() else []
    for sub in ("boards", "gateways", "wiring", "bom"):
        out += sorted((root / sub).glob("*.toml"))
    return out


def register(sub) -> None:
    """``linli hw``: see :mod:`linli.hw_cli`."""
    from linli.hw_cli import register as _register

    _register(sub)
