"""A pseudo-terminal standing in for a serial port (a USB radio, an RS-485 adapter).

The code under test opens :attr:`SerialPty.device` like ``/dev/ttyUSB0`` (``serial.Serial(path)``
or ``serial.serial_for_url(path)``); the test plays the other end through the pty master with
``write()``/``read()``, and can pull the cable out and put it back.

    def test_gateway_reads_a_frame(serial_pty):
        port = serial.Serial(serial_pty.device, timeout=1)
        serial_pty.write(b"\\x00frame\\x00")
        assert port.read(7) == b"\\x00frame\\x00"

``device`` is a symlink in the test's tmp dir, so it keeps its name across :meth:`replug`, as a
udev ``/dev/serial/by-id`` link does (the pty behind it is new each time).
"""

from __future__ import annotations

import os
import select
import time
import tty
from pathlib import Path


class SerialPty:
    """Both ends of a raw pty; the master side is the test's."""

    def __init__(self, workdir: Path, name: str = "ttyUSB0"):
        self.link = Path(workdir) / name
        self.link.parent.mkdir(parents=True, exist_ok=True)
        self.fd: int | None = None  # master
        self._slave: int | None = None
        self.pts: str | None = None
        self.replug()

    @property
    def device(self) -> str:
        """The path the code under test opens."""
        return str(self.link)

    @property
    def plugged(self) -> bool:
        return self.fd is not None

    def replug(self) -> None:
        """(Re)connect: a fresh pty behind the same device path."""
        if self.plugged:
            self.unplug()
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)  # no echo, no line editing, no CR/LF mangling: bytes pass as they are
        self.fd, self._slave, self.pts = master, slave, os.ttyname(slave)
        # We keep a slave fd open so the master does not see EIO before the code under test opens it.
        tmp = self.link.with_name(self.link.name + ".new")
        tmp.unlink(missing_ok=True)
        os.symlink(self.pts, tmp)
        os.replace(tmp, self.link)

    def unplug(self) -> None:
        """Pull the cable: the code under test's reads and writes now fail (EIO / SerialException)."""
        for fd in (self.fd, self._slave):
            if fd is not None:
                os.close(fd)
        self.fd = self._slave = None

    close = unplug

    def _master(self) -> int:
        if self.fd is None:
            raise OSError("serial pty is unplugged")
        return self.fd

    def write(self, data: bytes) -> int:
        """Send bytes to the code under test."""
        view, fd = memoryview(data), self._master()
        while view:
            select.select([], [fd], [], 1.0)
            view = view[os.write(fd, view):]
        return len(data)

    def read(self, n: int = 1, timeout: float = 1.0) -> bytes:
        """Up to ``n`` bytes the code under test wrote: returns once there are ``n`` or after ``timeout``."""
        fd, out = self._master(), bytearray()
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            try:
                out += os.read(fd, n - len(out))
            except OSError:  # EIO: no slave open any more
                break
        return bytes(out)

    def read_until(self, terminator: bytes = b"\n", timeout: float = 1.0) -> bytes:
        """Bytes up to and including ``terminator`` (or what came before ``timeout``)."""
        out = b""
        deadline = time.monotonic() + timeout
        while not out.endswith(terminator):
            left = deadline - time.monotonic()
            chunk = self.read(1, left) if left > 0 else b""
            if not chunk:
                break
            out += chunk
        return out

    def drain(self, quiet: float = 0.05) -> bytes:
        """Everything pending, until the line has been quiet for ``quiet`` s."""
        out = b""
        while chunk := self.read(4096, quiet):
            out += chunk
        return out

    def __enter__(self) -> SerialPty:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
