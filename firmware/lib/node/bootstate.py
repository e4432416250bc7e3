"""What a node remembers from one boot to the next: boot count, crash-boot count (safe mode),
when the next health report and time sync are due, and why it last crashed.

Kept in the HAL's non-volatile RAM (ESP32 RTC slow memory: it survives deep sleep, resets and
the watchdog, not power loss; so a technician's power cycle also clears safe mode)::

    st = BootState(hal)
    safe = st.begin(3)     # at boot: counts this boot; True on the 3rd boot in a row that
                           # never reached healthy()
    st.healthy()           # this boot works (ran long enough, or went to sleep on purpose)

Layout: ``b"LNS1" | boots | fails | health_at | sync_at`` (little-endian u32 each), the last
crash's text (a length byte and up to 60 bytes), and a CRC-32 of all that; anything else reads
as a fresh state.
"""

import struct
from binascii import crc32

_FMT = "<4sIIII"
_MAGIC = b"LNS1"
_ERR_MAX = 60


class BootState:
    """See the module docstring. Attributes: ``boots`` (this one included), ``fails`` (boots
    in a row before this one that never got healthy), ``safe``, ``health_at`` and ``sync_at``
    (RTC seconds when the next health report / time sync is due; 0 = now), ``err`` (what the
    last crash said, "" if none)."""

    def __init__(self, hal):
        self._hal = hal
        self.boots = 0
        self.fails = 0
        self.safe = False
        self.health_at = 0
        self.sync_at = 0
        self.err = ""
        self._ok = False
        self._buf = bytearray(struct.calcsize(_FMT) + 1 + _ERR_MAX + 4)  # save()'s, made now

    def _load(self):
        b = self._hal.nvram()
        n = struct.calcsize(_FMT)
        if len(b) < n + 5 or b[0:4] != _MAGIC:
            return
        e = n + 1 + b[n]
        if len(b) < e + 4 or crc32(b[0:e]) != struct.unpack_from("<I", b, e)[0]:
            return
        _, self.boots, self.fails, self.health_at, self.sync_at = struct.unpack_from(_FMT, b, 0)
        try:
            self.err = str(b[n + 1 : e], "utf-8")
        except UnicodeError:  # cut inside a character
            self.err = "?"

    def save(self):
        # Into the buffer made at boot: this runs in the crash handler, maybe with the heap
        # full (a MemoryError is what crashed), so it allocates next to nothing.
        buf = self._buf
        n = struct.calcsize(_FMT)
        struct.pack_into(_FMT, buf, 0, _MAGIC, self.boots, self.fails, self.health_at, self.sync_at)
        err = self.err.encode()  # a few bytes (the crash handler frees its reserve first)
        k = min(len(err), _ERR_MAX)
        buf[n] = k
        buf[n + 1 : n + 1 + k] = memoryview(err)[0:k]
        e = n + 1 + k
        mv = memoryview(buf)
        struct.pack_into("<I", buf, e, crc32(mv[0:e]))
        self._hal.set_nvram(mv[0 : e + 4])

    def begin(self, safe_boots):
        """Count this boot; return True when it must run in safe mode."""
        self._load()
        self.boots += 1
        self.safe = self.fails >= safe_boots - 1
        self.fails += 1  # until healthy() says otherwise, this boot is one more failure
        self.save()
        return self.safe

    def healthy(self):
        """Mark this boot healthy (once): the crash-boot count starts again from 0.

        In safe mode nothing changes: the node stays in safe mode until told otherwise
        (:meth:`clear`, the ``diag.exit`` command) or powered off.
        """
        if self._ok or self.safe:
            return
        self._ok = True
        self.fails = 0
        self.save()

    def crashed(self, err):
        """Remember why this boot is about to reboot (shown by ``node.info``)."""
        self.err = err
        self.save()

    def clear(self):
        """Leave safe mode at the next boot."""
        self.fails = 0
        self.safe = False
        self.save()
