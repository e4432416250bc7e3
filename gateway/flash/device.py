"""The board's filesystem through MicroPython's raw REPL, on mpremote's ``SerialTransport``.

:class:`Device` opens the port, gets into the raw REPL without a soft reset (retrying with
Ctrl-C and Ctrl-B, then saying why not: port busy, nothing answers, not MicroPython), and offers
the few file operations a deploy needs, each a small snippet run on the board:

    with Device("/dev/ttyUSB0").open() as dev:
        dev.hashes(["main.py"])                 # {"main.py": ("9f86d0...", 412)} or (None, None)
        dev.write("config.json", b"{...}")     # temp name, hash check, rename
        dev.free_bytes()                        # (free bytes, block size)
        dev.rom_partition()                     # (131072, 131072, True): its ROMFS partition, or None
        dev.write_rom(image)                    # erase, write, hash check (as mpremote romfs deploy)

Hashes are computed on the board (``hashlib.sha256`` over 256-byte reads, so the heap stays
small) and compared with the host's; only a file whose hash checked out gets its real name.
Transport failures become :class:`~linli.flash.errors.WriteFailed` (re-running repairs), a full
filesystem :class:`~linli.flash.errors.FlashFull`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import time
from typing import Callable, Iterable, Optional

from linli.flash.errors import FlashError, FlashFull, NoAnswer, NoMicroPython, PortBusy, PortDenied, PortNotFound, WriteFailed
from linli.flash.rom import RomPartition

CHUNK = 512  # bytes per write snippet: a 2 KiB literal at worst, fine for an ESP32's heap
WDT_MS = 60000
OP_TIMEOUT_S = 10.0
_FEED_S = 5.0

# Defined once per session on the board. A node interrupted by Ctrl-C keeps its hardware
# watchdog armed (an ESP32 cannot stop it), so the session re-arms it with a long timeout and
# feeds it between steps; the reset at the end clears it. (esp32 port: machine_wdt.c calls
# esp_task_wdt_reconfigure, so a second WDT() only changes the timeout.)
_PRELUDE = """
import os, sys, hashlib, binascii
_w = None
if sys.platform == 'esp32':
    try:
        import machine
        _w = machine.WDT(timeout=%d)
    except Exception:
        pass
def _f():
    if _w:
        _w.feed()
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return '- -'
    h = hashlib.sha256()
    b = bytearray(256)
    n = 0
    while True:
        k = f.readinto(b)
        if not k:
            break
        h.update(b if k == 256 else b[:k])
        n += k
    f.close()
    return binascii.hexlify(h.digest()).decode() + ' ' + str(n)
def _md(p):
    try:
        os.mkdir(p)
    except OSError:
        pass
def _rm(p):
    try:
        os.remove(p)
        return 1
    except OSError:
        return 0
""" % WDT_MS

NO_ANSWER = (
    "check the USB cable carries data, the board is powered, it is not held in download mode "
    "(release BOOT, press EN/RST), and the baud rate (MicroPython talks 115200: --baud); then run again"
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _printable(data: bytes) -> float:
    if not data:
        return 1.0
    return sum(32 <= c < 127 or c in (9, 10, 13) for c in data) / len(data)


def diagnose(port: str, heard: bytes) -> FlashError:
    """Why the raw REPL could not be entered, from what the port sent back meanwhile.

    >>> diagnose("/dev/ttyUSB0", b"").__class__.__name__
    'NoAnswer'
    >>> print(diagnose("/dev/ttyUSB0", b"ets Jun  8 2016 00:22:57\\r\\nwaiting for download\\r\\n"))
    /dev/ttyUSB0: the board is in its ROM bootloader (download mode): press EN/RST without holding BOOT and run again, or write MicroPython with --firmware IMAGE
    """
    if not heard.strip(b"\r\n\x00"):
        return NoAnswer(port, NO_ANSWER)
    if b"waiting for download" in heard:
        return NoMicroPython(port, "the board is in its ROM bootloader (download mode): press EN/RST without holding "
                                   "BOOT and run again, or write MicroPython with --firmware IMAGE")
    if _printable(heard) < 0.8:
        return NoMicroPython(port, "answers with unreadable bytes (%r...): a wrong baud rate (--baud; MicroPython "
                                   "talks 115200) or no MicroPython on it: write it with --firmware IMAGE" % heard[-16:])
    said = " ".join(heard.decode("ascii", "replace").split())[-80:]
    if b"MicroPython" in heard or b">>>" in heard or b"raw REPL" in heard:
        return NoAnswer(port, "MicroPython is there but would not enter its raw REPL (it said %r): a program "
                              "that catches Ctrl-C? Press EN/RST and run again, or rewrite it with --firmware IMAGE" % said)
    return NoMicroPython(port, "answers, but not as MicroPython (it said %r): write MicroPython with --firmware IMAGE" % said)


def why_not_open(port: str) -> FlashError:
    """The reason a port does not open, found by opening it once more with pyserial."""
    import serial

    if not os.path.exists(port):
        return PortNotFound(port, "no such port: is the board plugged in? (leave out --port to look for it)")
    try:
        serial.Serial(port, exclusive=True).close()
    except serial.SerialException as exc:
        code = getattr(exc, "errno", None)
        if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
            return PortBusy(port, "in use by another program (a serial monitor, mpremote, screen, another linli flash): "
                                  "close it and run again (`fuser %s` shows who)" % port)
        if code in (errno.EACCES, errno.EPERM):
            return PortDenied(port, "permission denied: add yourself to the dialout group "
                                    "(`sudo usermod -aG dialout $USER`, then log in again)")
        return PortNotFound(port, "cannot open: %s" % exc)
    return PortNotFound(port, "cannot open (it opened on a second try: unplug and replug the board, then run again)")


class Device(RomPartition):
    """One board on a serial port, in the raw REPL (see the module docstring); its ROMFS
    partition's operations come from :class:`~linli.flash.rom.RomPartition`."""

    def __init__(self, port: str, *, baud: int = 115200, tries: int = 3, answer_s: float = 2.0,
                 transport: Optional[Callable] = None):
        self.port = port
        self.baud = baud
        self.tries = tries
        self.answer_s = answer_s
        self._transport_cls = transport
        self.t = None
        self._fed = 0.0
        self.on_chunk: Optional[Callable[[int], None]] = None  # bytes sent, for progress bars

    # -- session ---------------------------------------------------------------------------
    def open(self) -> "Device":
        from mpremote.transport import TransportError

        cls = self._transport_cls
        if cls is None:
            from mpremote.transport_serial import SerialTransport as cls
        try:
            self.t = cls(self.port, baudrate=self.baud)
        except TransportError:
            raise why_not_open(self.port) from None
        try:
            # mpremote reads a pty (/dev/pts/N) with blocking read(1)s: without a timeout a silent
            # port would hang forever. Short while we knock, then long enough for any snippet.
            self.t.serial.timeout = 0.1
            self._enter()
            self.t.serial.timeout = OP_TIMEOUT_S
            self._exec(_PRELUDE, "set up the session")
            self._fed = time.monotonic()
        except BaseException:
            self.close()
            raise
        return self

    def _listen(self, seconds: float, ser=None) -> bytes:
        ser, out = ser or self.t.serial, bytearray()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            n = ser.in_waiting
            if n:
                out += ser.read(n)
            else:
                time.sleep(0.02)
        return bytes(out)

    def _enter(self) -> None:
        from mpremote.transport import TransportError
        from serial import SerialException

        heard = bytearray()
        real = self.t.serial
        for attempt in range(self.tries):
            try:
                real.write(b"\r\x03\x03")  # Ctrl-C twice: stop whatever runs (the node's loop)
                heard += self._listen(0.1 + 0.2 * attempt, real)
                # mpremote's read_until only times out when the line goes quiet: a board that
                # keeps talking (a boot loop, a program ignoring Ctrl-C) would hold it forever.
                self.t.serial = _Bounded(real, self.answer_s + 0.5)
                with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints what it got on failure
                    self.t.enter_raw_repl(soft_reset=False, timeout_overall=self.answer_s)
                return
            except (TransportError, _TooChatty):
                heard += self.t.serial.heard if isinstance(self.t.serial, _Bounded) else b""
                heard += self._listen(0.05, real)
            except (OSError, SerialException) as exc:
                raise NoAnswer(self.port, "the port failed (%s): check the cable and run again" % exc) from None
            finally:
                self.t.serial = real
            try:
                real.write(b"\r\x02")  # Ctrl-B: out of a half-entered raw REPL, then again
            except (OSError, SerialException):
                pass
        raise diagnose(self.port, bytes(heard[-2048:]))

    def close(self) -> None:
        if self.t is None:
            return
        with contextlib.suppress(Exception):
            if self.t.in_raw_repl:
                self.t.exit_raw_repl()
        with contextlib.suppress(Exception):
            self.t.close()
        self.t = None

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- snippets --------------------------------------------------------------------------
    def _exec(self, code: str, what: str) -> str:
        from mpremote.transport import TransportError, TransportExecError
        from serial import SerialException

        try:
            return self.t.exec(code).decode("utf-8", "replace")
        except TransportExecError as exc:
            raise self._board_error(exc.error_output, what) from None
        except (TransportError, SerialException, OSError) as exc:
            raise WriteFailed(self.port, "lost the board while trying to %s (%s): check the cable, then run the "
                                         "same command again (what is written stays)" % (what, exc)) from None

    def _board_error(self, output: str, what: str) -> FlashError:
        last = (output.strip().splitlines() or ["?"])[-1]
        if "ENOSPC" in output or "[Errno 28]" in output or last.endswith("OSError: 28"):
            return FlashFull(self.port, "the filesystem filled up while trying to %s: free space (remove files with "
                                        "mpremote rm) or use a board with more flash, then run again" % what)
        return WriteFailed(self.port, "the board failed to %s (%s): run again; if it repeats, erase the flash "
                                      "with --firmware IMAGE --erase" % (what, last))

    def feed(self) -> None:
        """Feed the board's watchdog if it has been a while (see _PRELUDE)."""
        if time.monotonic() - self._fed > _FEED_S:
            self._exec("_f()", "feed the watchdog")
            self._fed = time.monotonic()

    def hashes(self, paths: Iterable[str]) -> dict[str, tuple[Optional[str], Optional[int]]]:
        """SHA-256 (hex) and size of each file on the board; (None, None) for a missing one."""
        paths = list(paths)
        if not paths:
            return {}
        out = self._exec("for p in %r:\n print(_h(p))\n_f()" % (paths,), "hash the files")
        lines = out.split()
        if len(lines) != 2 * len(paths):
            raise WriteFailed(self.port, "could not read the files' hashes (got %r): run again" % out[:200])
        res = {}
        for i, p in enumerate(paths):
            h, n = lines[2 * i], lines[2 * i + 1]
            res[p] = (None, None) if h == "-" else (h, int(n))
        return res

    def uname(self) -> tuple[str, str]:
        """(sysname, machine) of the running MicroPython: ("esp32", "Generic ESP32 module with ESP32")."""
        # The unix port has no os.uname(): sys.platform ("linux") stands in.
        out = self._exec("u = os.uname() if hasattr(os, 'uname') else (sys.platform, 0, 0, 0, sys.platform)\n"
                         "print(u[0])\nprint(u[4])", "ask which board it is").strip().splitlines()
        return (out[0].strip(), out[-1].strip()) if out else ("", "")

    def free_bytes(self) -> tuple[int, int]:
        """(free bytes, block size) of the filesystem the files go to."""
        out = self._exec("s = os.statvfs(os.getcwd())\nprint(s[0], s[0] * s[4])", "read the free space").split()
        return int(out[1]), int(out[0])

    def makedirs(self, dirs: Iterable[str]) -> None:
        """Create folders (parents first; existing ones are fine)."""
        todo = sorted({"/".join(d.split("/")[: i + 1]) for d in dirs if d for i in range(d.count("/") + 1)})
        if todo:
            self._exec("for d in %r:\n _md(d)" % (todo,), "create folders")

    def remove_empty_dirs(self, dirs: Iterable[str]) -> None:
        """Remove these folders and their parents where they are empty (a LittleFS folder holds
        blocks of its own); folders with anything in them stay."""
        todo = sorted({"/".join(d.split("/")[: i + 1]) for d in dirs if d for i in range(d.count("/") + 1)},
                      key=lambda d: -d.count("/"))
        if todo:
            self._exec("for d in %r:\n try:\n  os.rmdir(d)\n except OSError:\n  pass" % (todo,), "remove empty folders")

    def remove(self, paths: Iterable[str]) -> int:
        """Delete files that exist; returns how many were there."""
        paths = list(paths)
        if not paths:
            return 0
        out = self._exec("n = 0\nfor p in %r:\n n += _rm(p)\nprint(n)" % (paths,), "remove old files")
        return int(out.strip() or 0)

    def rename(self, src: str, dest: str) -> None:
        self._exec("os.rename(%r, %r)" % (src, dest), "rename %s" % src)

    def read(self, path: str) -> Optional[bytes]:
        """A (small) file's content, None when it does not exist."""
        from mpremote.transport import TransportError

        if self.hashes([path])[path][0] is None:
            return None
        try:
            return bytes(self.t.fs_readfile(path, chunk_size=CHUNK))
        except (TransportError, OSError) as exc:
            raise WriteFailed(self.port, "could not read %s (%s): run again" % (path, exc)) from None

    def write(self, path: str, data: bytes) -> None:
        """Write ``path`` so that it is either the old file or ``data``, never half of it.

        The bytes go to ``path + ".tmp"``, whose hash is checked on the board; only then is it
        renamed over ``path`` (os.rename replaces the old file on LittleFS, FAT and the unix port).
        """
        from mpremote.transport import TransportError, TransportExecError
        from serial import SerialException

        tmp = path + ".tmp"
        sent = [0]

        def chunk(done: int, _total: int) -> None:
            if self.on_chunk:
                self.on_chunk(done - sent[0])
            sent[0] = done
            self.feed()

        try:
            self.t.fs_writefile(tmp, data, chunk_size=CHUNK, progress_callback=chunk)
        except TransportExecError as exc:
            self._cleanup(tmp)
            raise self._board_error(exc.error_output, "write " + path) from None
        except (TransportError, SerialException) as exc:  # the line, not the board's filesystem
            raise WriteFailed(self.port, "lost the board while writing %s (%s): check the cable, then run the same "
                                         "command again (what is written stays)" % (path, exc)) from None
        except OSError as exc:  # mpremote turns the board's OSError into ours
            self._cleanup(tmp)
            if exc.errno == errno.ENOSPC:
                raise FlashFull(self.port, "no space left writing %s: free space (remove files with mpremote rm) or "
                                           "use a board with more flash, then run again" % path) from None
            raise WriteFailed(self.port, "the board could not write %s (%s): run again; if it repeats, erase the "
                                         "flash with --firmware IMAGE --erase" % (path, errno.errorcode.get(exc.errno, exc))) from None
        if not data and self.on_chunk:
            self.on_chunk(0)
        got = self.hashes([tmp])[tmp][0]
        if got != sha256(data):
            self._cleanup(tmp)
            raise WriteFailed(self.port, "%s read back with a different hash: run again; if it repeats the flash may "
                                         "be worn (erase it with --firmware IMAGE --erase)" % path)
        self._exec("os.rename(%r, %r)" % (tmp, path), "rename %s into place" % path)

    def _cleanup(self, path: str) -> None:
        with contextlib.suppress(FlashError):
            self.remove([path])

    def reset(self) -> bool:
        """Hard-reset the board so it boots the new files; False where there is no machine.reset()."""
        has = self._exec("try:\n import machine\n print(hasattr(machine, 'reset'))\nexcept ImportError:\n print(False)",
                         "look for machine.reset").strip()
        if has != "True":
            return False
        with contextlib.suppress(Exception):
            self.t.exec_raw_no_follow("import machine\nmachine.reset()")
        self.t.in_raw_repl = False  # the board is rebooting: nothing to leave
        return True


class _TooChatty(Exception):
    """The board kept talking past the deadline without giving the raw REPL prompt."""


class _Bounded:
    """The transport's serial port with a deadline on reads, keeping what it heard."""

    def __init__(self, ser, seconds: float):
        self._ser = ser
        self._end = time.monotonic() + seconds
        self.heard = bytearray()

    def read(self, n: int = 1) -> bytes:
        if time.monotonic() > self._end:
            raise _TooChatty()
        data = self._ser.read(n)
        self.heard += data
        del self.heard[:-4096]
        return data

    def __getattr__(self, name):
        return getattr(self._ser, name)
