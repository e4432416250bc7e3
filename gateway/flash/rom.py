"""The board's ROMFS partition, through MicroPython's ``vfs.rom_ioctl`` as mpremote's ``romfs deploy``.

MicroPython 1.25+ mounts a ROMFS partition on ``/rom`` at boot (``/rom`` and ``/rom/lib`` on
``sys.path``); modules imported from it run in place (:mod:`linli.romfs`). On an ESP32 it is a
``romfs`` data partition in the partition table (``ports/esp32/partitions-4MiB-romfs.csv``).
:class:`~linli.flash.device.Device` has these methods, each a snippet in the raw REPL:

    dev.rom_partition()          # (131072, 131072, True): size, erase block, holds an image; or None
    dev.rom_hash(57592)          # SHA-256 (hex) of the partition's first 57592 bytes
    dev.write_rom(image)         # unmount /rom, erase, write, check the hash
    dev.erase_rom()              # its first sector: no image mounted at the next boot

Failures are :class:`~linli.flash.errors.WriteFailed` (re-running repairs: a partition whose
hash does not match the image is written again).
"""

from __future__ import annotations

import binascii
import hashlib
from typing import Optional

from linli.flash.errors import WriteFailed

ROM_CHUNK = 1024  # bytes per write snippet: a 1.4 KiB base64 literal
ROMFS_MAGIC = b"\xd2\xcd\x31"  # a ROMFS image's first bytes (extmod/vfs_rom.c)

# MicroPython's ROMFS partitions, through vfs.rom_ioctl as mpremote's `romfs deploy` uses it:
# 1 count, 2 the partition (a memoryview on an ESP32), 6 its erase block (<= 0: erase by length
# from 0), 3 prepare/erase -> the minimum write size, 4 write, 5 finish; a negative int is -errno.
# Partition 0 only, as mpremote's default; a port that gives a block device instead of a memoryview
# counts as none (the ESP32 maps the partition).
_ROM_QUERY = """
try:
    import vfs
    _r = vfs.rom_ioctl
except (ImportError, AttributeError):
    _r = None
d = _r(2, 0) if _r and _r(1) > 0 else -1
if isinstance(d, int) or hasattr(d, 'ioctl'):
    print(0, 0, 0)
else:
    print(len(d), _r(6, 0), int(bytes(d[:3]) == %r))
""" % ROMFS_MAGIC

_ROM_ERASE = """
import vfs
def _rc(r):
    if isinstance(r, int) and r < 0:
        raise OSError(-r)
    return r
try:
    vfs.umount('/rom')
except OSError:
    pass
n, b, s = %d, %d, %d
if b < s:
    o = 0
    while o < n:
        k = (min(n - o, 32768) + b - 1) // b * b
        w = _rc(vfs.rom_ioctl(3, 0, o, k))
        o += k
        _f()
else:
    w = _rc(vfs.rom_ioctl(3, 0, n))
print(w)
"""

_ROM_HASH = """
m = vfs.rom_ioctl(2, 0)
h = hashlib.sha256()
for i in range(0, %d, 4096):
    h.update(m[i:min(i + 4096, %d)])
    _f()
print(binascii.hexlify(h.digest()).decode())
"""


class RomPartition:
    """ROMFS partition 0 of the board (a mixin of Device: it needs ``_exec``, ``feed``, ``port``
    and ``on_chunk``)."""

    def _rom_query(self) -> tuple[int, int, bool]:
        out = self._exec(_ROM_QUERY, "look for a ROMFS partition").split()
        if len(out) != 3:
            raise WriteFailed(self.port, "could not read the ROMFS partition (got %r): run again" % " ".join(out)[:200])
        size, block = int(out[0]), int(out[1])
        return size, (block if 0 < block < size else size), out[2] == "1"

    def rom_partition(self) -> Optional[tuple[int, int, bool]]:
        """(size, erase block, whether it starts with a ROMFS image, which MicroPython mounts at
        boot) of the board's ROMFS partition; None when it has none (a MicroPython before 1.25 or
        built without ROMFS, or a partition table without a romfs partition)."""
        size, block, image = self._rom_query()
        return (size, block, image) if size > 0 else None

    def rom_hash(self, n: int) -> str:
        """SHA-256 (hex) of the partition's first ``n`` bytes, computed on the board 4 KiB at a time."""
        out = self._exec("import vfs\n" + _ROM_HASH % (n, n), "hash the ROMFS partition").strip()
        if len(out) != 64:
            raise WriteFailed(self.port, "could not hash the ROMFS partition (got %r): run again" % out[:200])
        return out

    def _rom_erase(self, n: int) -> int:
        """Unmount /rom and erase the partition's first ``n`` bytes; the minimum write size."""
        size, block, _ = self._rom_query()
        if not 0 < n <= size:
            raise WriteFailed(self.port, "the ROMFS partition holds %d bytes, not %d" % (size, n))
        w = int(self._exec(_ROM_ERASE % (n, block, size), "erase the ROMFS partition").strip() or 0)
        if w <= 0:
            raise WriteFailed(self.port, "the board's ROMFS partition gave no write size (%d): run again" % w)
        return w

    def write_rom(self, image: bytes) -> None:
        """Write ``image`` into the ROMFS partition, then check its hash on the board.

        As mpremote's ``romfs deploy``: /rom is unmounted (its modules must not run while their
        flash changes), the image's length erased, then written in ``ROM_CHUNK`` pieces (whole
        minimum write units, the last one padded with zeros). A cut leaves a partition whose hash
        does not match, which the next run writes again.
        """
        unit = self._rom_erase(len(image))
        chunk = -(-max(ROM_CHUNK, unit) // unit) * unit
        for off in range(0, len(image), chunk):
            piece = image[off:off + chunk]
            data = binascii.b2a_base64(piece + bytes(-len(piece) % unit), newline=False)
            self._exec("_rc(vfs.rom_ioctl(4, 0, %d, binascii.a2b_base64(%r)))" % (off, data), "write the ROMFS image")
            if self.on_chunk:
                self.on_chunk(len(piece))
            self.feed()
        self._exec("_rc(vfs.rom_ioctl(5, 0))", "finish the ROMFS image")
        if self.rom_hash(len(image)) != hashlib.sha256(image).hexdigest():
            raise WriteFailed(self.port, "the ROMFS partition read back with a different hash: run again; if it "
                                         "repeats the flash may be worn (erase it with --firmware IMAGE --erase)")

    def erase_rom(self) -> None:
        """Erase the start of the ROMFS partition (one 4 KiB sector), so no image is mounted at boot."""
        self._rom_erase(4096)
        self._exec("_rc(vfs.rom_ioctl(5, 0))", "finish erasing the ROMFS partition")
