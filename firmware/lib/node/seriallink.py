"""The node's link over a UART: RS-485 multi-drop or a transparent UART radio
(docs/protocol.md, section 4.2). Same interface as :class:`node.mqttlink.MQTTLink`::

    link = SerialLink(hal, cfg, on_frame, on_state)
    asyncio.create_task(link.run())
    await link.send(frame_mv)          # wire frame: 0x00 COBS(frame + CRC-16) 0x00

A serial line has no session: the link is up as soon as the UART is open, and what would be
"connection lost" shows up as frames that are never acknowledged (they are resent).
Received wire frames go through :class:`link.serial.Decoder` (resync on garbage, ``bad_crc``
and ``too_large`` counted in :attr:`errors`) and then to ``on_frame(frame, None)``; frames for
other nodes on the bus are dropped by the caller.

The UART is polled with ``any()`` every ``_POLL_MS``: that works alike on every port and in the
simulator, and the UART's receive buffer (1 KiB) holds more than 50 ms of bytes at any baud
rate a radio uses.

**RS-485** is half duplex: with ``uart_de`` set, that GPIO drives the transceiver's DE (tied
to /RE, as on a MAX485 board) high just before a wire frame is written and low again once its
last stop bit is out (``UART.txdone()``), so the bus is free for the gateway's answer and the
node does not hear its own frames. The wait sleeps for most of the frame's time on the wire and
polls ``txdone()`` only for the rest, so the loop is never blocked.
"""

import asyncio
import time

from micropython import const

from link import serial
from node import log
from node.flag import Mutex

_POLL_MS = const(20)


class SerialLink:
    """See the module docstring."""

    def __init__(self, hal, cfg, on_frame, on_state=None):
        self._hal = hal
        self._cfg = cfg
        self._on_frame = on_frame
        self._on_state = on_state
        self.up = False
        self.connects = 0
        self.errors = 0  # bad_crc / too_large wire frames
        self._uart = None
        self._de = None  # the RS-485 driver-enable pin, made in run()
        self._dec = serial.Decoder()
        self._rx = bytearray(128)
        self._tx = bytearray(serial.WIRE_MAX)
        self._lock = Mutex()
        self._stop = False
        self.beat = time.ticks_ms()

    def rssi(self):
        return None

    async def run(self):
        cfg = self._cfg
        self._uart = u = self._hal.uart(cfg["uart_id"], cfg["uart_baud"], cfg["uart_tx"], cfg["uart_rx"])
        if cfg.get("uart_de") is not None:
            self._de = self._hal.pin(cfg["uart_de"], "out", value=0)  # receiving until we send
        self.connects = 1
        self.up = True
        log("serial", "UART %d at %d baud", cfg["uart_id"], cfg["uart_baud"])
        if self._on_state:
            self._on_state(True)
        rx = self._rx
        mv = memoryview(rx)
        dec = self._dec
        while not self._stop:
            self.beat = time.ticks_ms()
            if not u.any():
                await asyncio.sleep_ms(_POLL_MS)
                continue
            n = u.readinto(rx)
            if not n:
                continue
            for reason, data in dec.feed(mv[0:n]):
                if reason:
                    self.errors += 1
                else:
                    self._on_frame(data, None)

    async def send(self, frame):
        """Write one frame as a wire frame."""
        if not self.up:
            raise OSError("link down")
        if not self._lock.try_take():
            await self._lock.take()
        try:
            n = serial.wire(frame, self._tx)
            u = self._uart
            de = self._de
            if de is None:
                u.write(memoryview(self._tx)[0:n])
            else:
                de.value(1)
                try:
                    u.write(memoryview(self._tx)[0:n])
                    # 10 bits a byte on the wire: sleep most of it, then poll for the last bit.
                    ms = n * 10000 // self._cfg["uart_baud"]
                    if ms > 2:
                        await asyncio.sleep_ms(ms - 2)
                    while not u.txdone():
                        await asyncio.sleep_ms(0)
                finally:
                    de.value(0)  # even when cancelled: never hold the bus
        finally:
            self._lock.give()
        await asyncio.sleep_ms(0)

    async def asleep(self, until, timeout_ms=0):
        """Nothing to say on a serial line beyond the status frame; stop reading."""
        self._stop = True
        self.up = False
