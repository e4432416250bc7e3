"""ROMFS images: a node's compiled modules as one read-only filesystem that runs in place.

MicroPython (1.25+) mounts a ROMFS partition at ``/rom`` and puts ``/rom`` and ``/rom/lib`` on
``sys.path``. An ``.mpy`` imported from there is executed where it lies (memory-mapped flash on an
ESP32): its bytecode and its string/bytes constants are not copied into the heap, as they are
when the same file is imported from the LittleFS filesystem. For our roles that is a third of the
heap a node needs (``bench/firmware.py`` prints both figures).

The image format is MicroPython's (``extmod/vfs_rom.c``); it is written with mpremote's
``VfsRomWriter``, the code behind ``mpremote romfs build``.

>>> img = build_image({"lib/a.mpy": b"M", "lib/pkg/b.mpy": b"MM", "top.txt": b"x"})
>>> img[:3] == MAGIC
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from mpremote.romfs import VfsRomWriter

MAGIC = VfsRomWriter.ROMFS_HEADER


def build_image(files: Mapping[str, bytes]) -> bytes:
    """An image holding ``files`` (posix path relative to the image's root -> content)."""
    tree: dict = {}
    for path, data in files.items():
        parts = path.strip("/").split("/")
        node = tree
        for d in parts[:-1]:
            node = node.setdefault(d, {})
            if not isinstance(node, dict):
                raise ValueError("%s: %s is a file and a folder" % (path, d))
        node[parts[-1]] = bytes(data)
    w = VfsRomWriter()

    def add(node: dict) -> None:
        for name in sorted(node):
            if isinstance(node[name], dict):
                w.opendir(name)
                add(node[name])
                w.closedir()
            else:
                w.mkfile(name, node[name])

    add(tree)
    return bytes(w.finalise())


def image_of(root: Path, paths: Iterable[str]) -> bytes:
    """An image of ``paths`` (relative to ``root``), e.g. a bundle's ``lib/**.mpy``."""
    return build_image({p: (root / p).read_bytes() for p in paths})
