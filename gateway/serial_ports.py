"""Serial ports (RS-485 adapters, UART radios) read by pyserial, one reader thread per port.

A port that disappears (USB adapter unplugged, ``SerialException``) is closed and reopened with
exponential backoff; the other ports and MQTT keep going. Ports are opened with
``serial.serial_for_url`` so tests can pass a pty path or ``loop://``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Callable, Optional

import serial

from linli.config import SerialSection

log = logging.getLogger("linli.serial")


class SerialPort:
    """``on_bytes(port, chunk, writer)`` is called on the event loop for every chunk read."""

    def __init__(self, cfg: SerialSection, on_bytes: Callable, *, backoff: tuple[float, float] = (0.5, 30.0)):
        self.cfg = cfg
        self.name = cfg.name or cfg.port
        self.on_bytes = on_bytes
        self.backoff = backoff
        self.state = "closed"
        self.last_error: Optional[str] = None
        self.counts = {"opens": 0, "errors": 0, "bytes_in": 0, "bytes_out": 0}
        self._ser: Optional[serial.SerialBase] = None
        self._stop = threading.Event()
        self._wlock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="serial:%s" % self.name, daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 2.0)

    def _run(self) -> None:
        delay = self.backoff[0]
        while not self._stop.is_set():
            try:
                ser = serial.serial_for_url(self.cfg.port, baudrate=self.cfg.baudrate, timeout=0.1)
            except (serial.SerialException, OSError, ValueError) as exc:
                self._fail("cannot open %s: %s" % (self.cfg.port, exc))
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            self._ser, self.state, delay = ser, "open", self.backoff[0]
            self.counts["opens"] += 1
            log.info("serial port %s open at %d baud", self.name, self.cfg.baudrate)
            try:
                while not self._stop.is_set():
                    chunk = ser.read(max(1, ser.in_waiting or 1))
                    if chunk:
                        self.counts["bytes_in"] += len(chunk)
                        try:
                            self._loop.call_soon_threadsafe(self.on_bytes, self.name, chunk, self.write)
                        except RuntimeError:  # the loop is gone: the gateway is shutting down
                            self._stop.set()
            except (serial.SerialException, OSError, TypeError) as exc:
                # pyserial raises TypeError/OSError on some platforms when the device vanishes.
                self._fail("%s went away: %s" % (self.name, exc))
            finally:
                self._ser = None
                try:
                    ser.close()
                except Exception:
                    pass
            self._stop.wait(delay)
        self.state = "closed"

    def _fail(self, msg: str) -> None:
        if self.last_error != msg:
            log.warning("serial: %s (retrying with backoff)", msg)
        self.last_error = msg
        self.state = "down"
        self.counts["errors"] += 1

    async def write(self, data: bytes) -> None:
        ser = self._ser
        if ser is None:
            raise ConnectionError("serial port %s is %s" % (self.name, self.state))

        def _w():
            with self._wlock:
                ser.write(data)
                ser.flush()

        await asyncio.get_running_loop().run_in_executor(None, _w)
        self.counts["bytes_out"] += len(data)
