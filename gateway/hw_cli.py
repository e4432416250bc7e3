"""`linli hw`: the board profiles in ``hw/`` for people at a bench.

    linli hw list                        boards (chip, flash, roles) and gateway profiles
    linli hw show esp32-devkitc --role bin   pin table: GPIO, function, wiring, notes
    linli hw check [PATH...]             validate files (all of hw/ without PATH); exit 1 on errors
    linli hw config esp32-devkitc bin    the pin part of the node's config.json
    linli hw bom bin                     bill of materials with totals

``$LINLI_HW`` points at another ``hw/`` folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from linli import hw
from linli.errors import HwError


def register(sub) -> None:
    p = sub.add_parser("hw", help="board profiles: pin maps, wiring check, generated pin config, BOM")
    hsub = p.add_subparsers(dest="hw_cmd", metavar="ACTION", required=True)
    a = hsub.add_parser("list", help="the boards and gateway profiles in hw/")
    a.set_defaults(handler=_list)
    a = hsub.add_parser("show", help="a board's pin table per role, with wiring and notes")
    a.add_argument("board")
    a.add_argument("--role", choices=hw.ROLES)
    a.set_defaults(handler=_show)
    a = hsub.add_parser("check", help="validate hw/ files (all of them without PATH); exit 1 on errors")
    a.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    a.set_defaults(handler=_check)
    a = hsub.add_parser("config", help="the pin part of a node's config.json, as JSON")
    a.add_argument("board")
    a.add_argument("role", choices=hw.ROLES)
    a.set_defaults(handler=_config)
    a = hsub.add_parser("bom", help="a node type's bill of materials with totals")
    a.add_argument("role", choices=hw.ROLES)
    a.set_defaults(handler=_bom)


def _fail(exc: HwError) -> int:
    print("linli hw: %s" % exc, file=sys.stderr)
    return 1


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _list(args) -> int:
    root = hw.hw_root()
    rows = []
    try:
        for bid in hw.boards(root):
            b = hw.load_board(bid, root)
            rows.append([b.id, b.chip, "%d MB" % b.flash_mb, "%d MB" % b.psram_mb, ", ".join(b.roles), b.name])
    except HwError as exc:
        return _fail(exc)
    print(_table(rows, ["board", "chip", "flash", "psram", "roles", "name"]))
    gws = sorted(p.stem for p in (root / "gateways").glob("*.toml"))
    if gws:
        print("\ngateway profiles: %s" % ", ".join(gws))
    return 0


def _wiring(role: str, root: Path) -> dict[str, list[str]]:
    """pin name -> ["part.part_pin (colour)", ...] from hw/wiring/ROLE.toml, when it exists."""
    out: dict[str, list[str]] = {}
    if not (root / "wiring" / (role + ".toml")).exists():
        return out
    for w in hw.load_wiring(role, root):
        colour = w.get("colour", "-")
        out.setdefault(w["pin"], []).append("%s %s%s" % (w["part"], w["part_pin"], "" if colour in ("", "-") else " [%s]" % colour))
    return out


def _show(args) -> int:
    root = hw.hw_root()
    try:
        b = hw.load_board(args.board, root)
        roles = [args.role] if args.role else list(b.roles)
        print("%s: %s" % (b.id, b.name))
        print("chip %s, %d MB flash, %d MB PSRAM, module %s" % (b.chip, b.flash_mb, b.psram_mb, b.module or "-"))
        for role in roles:
            wires = _wiring(role, root)
            rows = []
            for r in b.rows(role):
                key = r.name if r.scope == "pins" else "(node) " + r.name
                gpio = "-" if r.gpio is None else str(r.gpio)
                wired = "; ".join(wires.get(r.name, [])) if r.gpio is not None else "not fitted"
                notes = "; ".join(x for x in (r.note, _facts(b, r.gpio)) if x)
                rows.append([gpio, key, r.dir + ("/pull-" + r.pull if r.pull else ""), r.does, wired or "-", notes])
            print("\n[%s]" % role)
            print(_table(rows, ["GPIO", "pin", "dir", "function", "wired to", "notes"]))
            for k, v in b.node_keys(role).items():
                if not isinstance(v, int) or k in hw.NODE_PIN_KEYS:
                    continue
                print("%s = %s" % (k, v))
        shown = [w for w in b.warnings if any(w.key.startswith("roles.%s." % r) for r in roles)]
        if shown:
            print("\nwarnings:")
            for w in shown:
                print("  " + str(w))
    except HwError as exc:
        return _fail(exc)
    return 0


def _facts(b: hw.Board, gpio: int | None) -> str:
    """Short GPIO facts for the notes column: strapping level, ADC channel."""
    if gpio is None:
        return ""
    g = b.gpio
    out = []
    if gpio in g.strapping:
        out.append("strapping: %s at reset" % g.strapping[gpio]["boot"])
    if gpio in g.adc1:
        out.append("ADC1_CH%d" % g.adc1[gpio])
    elif gpio in g.adc2:
        out.append("ADC2_CH%d" % g.adc2[gpio])
    if gpio in g.input_only:
        out.append("input only")
    return ", ".join(out)


def _check(args) -> int:
    paths = args.paths or hw.all_files()
    errors = warnings = 0
    for path in paths:
        try:
            found = hw.validate(path)
        except HwError as exc:
            problems = exc.problems or [exc]
            errors += len(problems)
            for p in problems:
                print("error: %s" % p)
            for w in exc.warnings:
                warnings += 1
                print("warning: %s" % w)
            continue
        warnings += len(found)
        for w in found:
            print("warning: %s" % w)
        if not found:
            print("ok: %s" % path)
    print("%d file(s): %d error(s), %d warning(s)" % (len(paths), errors, warnings))
    return 1 if errors else 0


def _config(args) -> int:
    try:
        cfg = hw.node_config(args.board, args.role)
    except HwError as exc:
        return _fail(exc)
    print(json.dumps(cfg, indent=2))
    return 0


def _bom(args) -> int:
    try:
        items = hw.load_bom(args.role)
    except HwError as exc:
        return _fail(exc)
    rows = []
    total = 0.0
    for it in items:
        line = it["qty"] * it["unit_cny"]
        total += line
        rows.append([it["part"], it["model"], str(it["qty"]), "%.2f" % it["unit_cny"], "%.2f" % line])
    print(_table(rows, ["part", "model", "qty", "unit CNY", "total CNY"]))
    print("%d parts, %d pieces, total %.2f CNY" % (len(items), sum(it["qty"] for it in items), total))
    return 0
