"""The role's firmware bundle for a chip: a given folder, or built once into a cache.

The cache key is the role, the ``.mpy`` architecture and a hash of the firmware sources, so a
changed source tree builds a fresh bundle and an unchanged one is reused (``linli flash`` on a tray
of twenty bins compiles once)::

    path, manifest = get_bundle("bin", "xtensawin")   # ~/.cache/linli/bundles/bin-xtensawin-1a2b3c4d5e6f
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Optional

from linli import fwbuild
from linli.flash.errors import PlanError

# mpy-cross -march per chip family; bytecode-only .mpy files run anywhere, native code does not.
ARCH = {"ESP32": "xtensawin", "ESP32-S2": "xtensawin", "ESP32-S3": "xtensawin",
        "ESP32-C3": "rv32imc", "ESP32-C6": "rv32imc"}


def arch_for(chip: str) -> Optional[str]:
    """``xtensawin`` for an ESP32; None (portable bytecode) for a chip we have no native arch for."""
    return ARCH.get(chip.upper())


def cache_root() -> Path:
    """$LINLI_CACHE, else $XDG_CACHE_HOME/linli, else ~/.cache/linli."""
    if os.environ.get("LINLI_CACHE"):
        return Path(os.environ["LINLI_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "linli"


def source_digest(root: Path = fwbuild.FIRMWARE) -> str:
    """12 hex digits over every firmware source file's path and content."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        if "build" in p.relative_to(root).parts:
            continue
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def cache_path(role: str, arch: Optional[str]) -> Path:
    return cache_root() / "bundles" / ("%s-%s-%s" % (role, arch or "bytecode", source_digest()))


def load_manifest(bundle: Path, role: str) -> dict:
    """The bundle's manifest, checked: the right role, every file matching its hash."""
    mf = bundle / "manifest.json"
    if not mf.is_file():
        raise PlanError(str(bundle), "not a firmware bundle (no manifest.json): build one with "
                                     "`linli firmware build --role %s`" % role)
    try:
        manifest = json.loads(mf.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as exc:
        raise PlanError(str(mf), "unreadable manifest (%s): rebuild the bundle" % exc) from None
    if manifest.get("role") != role:
        raise PlanError(str(bundle), "is a bundle for role %r, not %r: pass the %s bundle"
                                     % (manifest.get("role"), role, role))
    bad = fwbuild.verify(bundle)
    if bad:
        raise PlanError(str(bundle), "%d file(s) do not match the manifest (%s): rebuild the bundle"
                                     % (len(bad), ", ".join(bad[:3])))
    if not files:
        raise PlanError(str(bundle), "the manifest lists no files: rebuild the bundle")
    return manifest


def cached(role: str, arch: Optional[str]) -> Optional[Path]:
    """The cached bundle if one was built from the current sources (for --dry-run)."""
    path = cache_path(role, arch)
    return path if (path / "manifest.json").is_file() else None


def get_bundle(role: str, arch: Optional[str], given: Optional[Path] = None) -> tuple[Path, dict]:
    """(folder, manifest): ``given`` checked, else the cached build (built now if missing)."""
    if given is not None:
        return given, load_manifest(Path(given), role)
    path = cache_path(role, arch)
    if (path / "manifest.json").is_file():
        try:
            return path, load_manifest(path, role)
        except PlanError:
            pass  # a damaged cache entry: build it again
    part = path.with_name(path.name + ".part")
    try:
        fwbuild.build(role, part, arch=arch)
    except fwbuild.FirmwareBuildError as exc:
        raise PlanError(None, "cannot build the %s bundle: %s" % (role, exc)) from None
    if path.exists():
        shutil.rmtree(path)
    os.replace(part, path)
    return path, load_manifest(path, role)
