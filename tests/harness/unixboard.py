"""A board on a USB cable, for ``linli flash``: MicroPython's unix port behind a pty.

The interpreter's stdin/stdout is one pty; the code under test opens a second pty's slave path
(``/dev/pts/N``, as mpremote does for QEMU) and a thread copies bytes between the two masters.
The interpreter runs in the board's flash folder, so the files the raw REPL writes land there.
Its REPL answers Ctrl-A (raw REPL) like a board's, entered without a soft reset.

    board = UnixBoard(tmp_path / "board", micropython).start()
    dev = Device(board.device).open()          # the raw REPL
    board.kill()                               # pull the plug: reads and writes now fail

``shadow`` (module name -> source) puts modules ahead of the built-ins on the board's path: a
``statvfs`` that reports a nearly full filesystem, say. ``running`` is a program the board runs
before its REPL, as a node runs main.py: Ctrl-C stops it, then the REPL answers.

``romfs=131072`` gives the board a ROMFS partition of that many bytes: the file
``<workdir>/sim/romfs.img``, the one :class:`FlashedBoard` (the simulated ESP32) mounts on /rom.
The unix port has ``vfs.VfsRom`` but no ``vfs.rom_ioctl``, so a start-up program puts a ``vfs``
of its own in ``sys.modules`` (a file cannot shadow a built-in module, ``sys.modules`` can): the
real ``vfs`` plus a ``rom_ioctl`` over that file as the ESP32's works over flash (erase to 0xff,
writes that only clear bits, each one written through, so a kill leaves a partial partition);
it mounts a valid image on /rom at start-up and refuses to erase or write while it is mounted.
``rom_block`` is what ``rom_ioctl(6)`` answers (None: -EINVAL, as on the ESP32, so the whole image
is erased at once; a size: ranged erases, as on newer ports).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import tty
from pathlib import Path

from linli.simboard.build import SIM
from linli.simboard.runner import MicroPython

# The board's vfs (MicroPython code; %r: the partition file, its size, the rom_ioctl(6) answer).
ROM_VFS = """
import sys
from vfs import *

_PATH, _SIZE, _BLOCK = %r, %d, %d
_EINVAL = -22
_buf = bytearray(b'\\xff' * _SIZE)
with open(_PATH, 'rb') as f:
    f.readinto(_buf)


def _save(off, n):
    with open(_PATH, 'r+b') as f:
        f.seek(off)
        f.write(memoryview(_buf)[off:off + n])


def rom_ioctl(cmd, *a):
    if cmd == 1:
        return 1
    if not a or a[0] != 0:
        return _EINVAL
    if cmd == 2:
        return memoryview(_buf)
    if cmd == 6:
        return _BLOCK or _EINVAL
    if cmd in (3, 4) and any(p == '/rom' for _, p in mount()):
        return -16  # EBUSY: stricter than a board, so that a deploy must unmount /rom first (as mpremote)
    if cmd == 3:  # (id, length): erase from 0; (id, offset, length): a range of whole blocks
        sector = _BLOCK or 4096
        off, n = (0, a[1]) if len(a) == 2 else (a[1], a[2])
        if len(a) == 3 and (off %% sector or n %% sector):
            return _EINVAL
        end = (off + n + sector - 1) // sector * sector
        if end > _SIZE:
            return _EINVAL
        _buf[off:end] = b'\\xff' * (end - off)
        _save(off, end - off)
        return 4
    if cmd == 4:  # flash: a write only clears bits (write over an unerased byte: AND)
        off, data = a[1], a[2]
        if off %% 4 or len(data) %% 4 or off + len(data) > _SIZE:
            return _EINVAL
        for i in range(len(data)):
            _buf[off + i] &= data[i]
        _save(off, len(data))
        return 0
    if cmd == 5:
        return 0
    return _EINVAL


sys.modules['vfs'] = sys.modules[__name__]
try:
    mount(VfsRom(memoryview(_buf)), '/rom')  # as MicroPython does at start-up, when it holds an image
except OSError:
    pass
"""


class UnixBoard:
    def __init__(self, workdir: Path, micropython: str, *, shadow: dict[str, str] | None = None,
                 running: str | None = None, romfs: int | None = None, rom_block: int | None = None):
        self.workdir = Path(workdir)
        self.flash = self.workdir / "flash"
        self.flash.mkdir(parents=True, exist_ok=True)
        self.micropython = micropython
        self.shadow = shadow or {}
        self.running_code = running  # a program that runs first, as main.py does (Ctrl-C stops it)
        self.rom = self.workdir / "sim" / "romfs.img"  # the ROMFS partition (with romfs=SIZE)
        self.romfs = romfs
        self.rom_block = rom_block
        self.proc: subprocess.Popen | None = None
        self._fds: list[int] = []
        self._thread: threading.Thread | None = None
        self.device: str | None = None

    def start(self) -> "UnixBoard":
        """Power on: a fresh interpreter (the flash folder is kept) behind a fresh pty."""
        self.kill()
        env = dict(os.environ)
        path = [".frozen"]
        modules, startup = dict(self.shadow), self.running_code or ""
        if self.romfs:
            if not self.rom.exists() or self.rom.stat().st_size != self.romfs:  # a new partition: erased
                self.rom.parent.mkdir(parents=True, exist_ok=True)
                self.rom.write_bytes(b"\xff" * self.romfs)
            modules["_romvfs"] = ROM_VFS % (str(self.rom), self.romfs, self.rom_block or 0)
            startup = "import _romvfs\n" + startup
        if modules:
            sd = self.workdir / "shadow"
            sd.mkdir(exist_ok=True)
            for name, src in modules.items():
                (sd / (name + ".py")).write_text(src)
            path.insert(0, str(sd))
        env["MICROPYPATH"] = ":".join(path)
        board_m, board_s = os.openpty()
        host_m, host_s = os.openpty()
        for fd in (board_m, board_s, host_m, host_s):
            tty.setraw(fd)
        cmd = [self.micropython] + (["-i", "-c", startup] if startup else [])
        self.proc = subprocess.Popen(cmd, stdin=board_s, stdout=board_s, stderr=board_s,
                                     cwd=self.flash, env=env, start_new_session=True)
        os.close(board_s)
        # host_s stays open here so host_m never reads EIO before the code under test opens it.
        self._fds = [board_m, host_m, host_s]
        self._program = bool(self.running_code)
        self.device = os.ttyname(host_s)
        self._spoke = threading.Event()
        self._thread = threading.Thread(target=self._bridge, args=(board_m, host_m), daemon=True)
        self._thread.start()
        if self.running_code:  # its first output: the program runs, Ctrl-C now interrupts it
            assert self._spoke.wait(10), "the board's program printed nothing"
        return self

    def _bridge(self, board: int, host: int) -> None:
        while True:
            try:
                ready, _, _ = select.select([board, host], [], [], 0.2)
                if board in ready:
                    data = os.read(board, 4096)  # EIO once the interpreter is gone
                    if not data:
                        break
                    self._spoke.set()
                    os.write(host, data)
                if host in ready:
                    data = os.read(host, 4096)
                    if self._program and b"\x03" in data and self.proc is not None:
                        # An ESP32's UART turns Ctrl-C into KeyboardInterrupt while a program
                        # runs; the unix port needs SIGINT for that (its REPL takes the byte).
                        self._program = False
                        os.kill(self.proc.pid, signal.SIGINT)
                        data = data.replace(b"\x03", b"", 1)
                    os.write(board, data)
            except (OSError, ValueError):
                break
        self._close_fds()  # the cable is out: the host side now fails too

    def _close_fds(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Pull the plug (SIGKILL: nothing is flushed or closed on the board's side)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        self._close_fds()

    close = kill

    def files(self) -> dict[str, bytes]:
        """Every file in the flash folder: relative path -> bytes."""
        return {str(p.relative_to(self.flash)): p.read_bytes() for p in sorted(self.flash.rglob("*")) if p.is_file()}


class FlashedBoard(MicroPython):
    """The simulated ESP32 (``linli.simboard``) booting only what is in its flash folder, as a
    real board would: no firmware tree from the repository on the path."""

    def path(self, compiled: bool = True, extra_path=()) -> list[str]:
        return [str(SIM), *map(str, extra_path), "", ".frozen", str(self.flash / "lib")]
