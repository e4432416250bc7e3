"""GM65-class QR/barcode scanner module on a UART (9600 8N1 by default).

The module sends each decoded code as text followed by its terminator (CR by default, or CR LF
if configured); commands go the other way as ``7E 00 | 08 | len | addr(2) | data | CRC``
and are answered ``02 00 00 01 00 33 31`` (GM65 user manual, "Serial port command")::

    from drivers.gm65 import GM65
    qr = GM65(uart, max_len=128)         # uart = machine.UART(1, 9600) made by the HAL
    text = qr.poll()                     # a finished line, or None; never blocks

    async def scan_task():
        text = await qr.scan(timeout_ms=5000, trigger=True)   # None after 5 s without a code

A line longer than ``max_len`` is dropped whole (counted in ``overflows``); text that is not
UTF-8 raises ``SensorError``.
"""

from micropython import const
from time import ticks_diff, ticks_ms


_CHUNK = const(32)
_ACK = b"\x02\x00\x00\x01\x00\x33\x31"
_ZONE_TRIGGER = const(0x0002)  # zone bit 0x0002, bit 0: start one scan (command mode)


class GM65:
    def __init__(self, uart, max_len=128):
        self._uart = uart
        self._line = bytearray(max_len)
        self._n = 0
        self._drop = False  # inside an over-long line: skip to its terminator
        self._rx = bytearray(_CHUNK)
        self._rpos = 0
        self._rlen = 0
        self._cmd = bytearray(9)
        self.overflows = 0

    def poll(self):
        """The next complete line (str) from what the UART has buffered, or None."""
        uart = self._uart
        rx = self._rx
        line = self._line
        cap = len(line)
        pos = self._rpos
        end = self._rlen
        n = self._n
        try:
            while True:
                if pos >= end:
                    if not uart.any():
                        return None
                    end = uart.readinto(rx) or 0
                    pos = 0
                    if not end:
                        return None
                b = rx[pos]
                pos += 1
                if b == 13 or b == 10:
                    if self._drop:
                        self._drop = False
                        n = 0
                    elif n:
                        k = n
                        n = 0
                        try:
                            return str(memoryview(line)[0:k], "utf-8")
                        except UnicodeError:
                            from drivers.errors import SensorError  # loaded by the first error only

                            raise SensorError("GM65 sent %d bytes that are not UTF-8 text" % k)
                    continue
                if self._drop:
                    continue
                if n == cap:
                    self._drop = True
                    self.overflows += 1
                    continue
                line[n] = b
                n += 1
        finally:
            self._rpos = pos
            self._rlen = end
            self._n = n

    async def command(self, addr, value, timeout_ms=500):
        """Write one byte ``value`` to the zone (setting) ``addr``; await the module's ack."""
        import asyncio

        c = self._cmd
        c[0] = 0x7E
        c[1] = 0x00
        c[2] = 0x08  # write zone
        c[3] = 0x01  # one data byte
        c[4] = addr >> 8
        c[5] = addr & 0xFF
        c[6] = value
        c[7] = 0xAB  # "AB CD" in place of the CRC: the manual's "no check" value
        c[8] = 0xCD
        self.flush()
        self._uart.write(c)
        got = 0
        t0 = ticks_ms()
        rx = self._rx
        while got < 7:
            if ticks_diff(ticks_ms(), t0) > timeout_ms:
                from drivers.errors import SensorTimeout  # loaded by the first error only

                raise SensorTimeout("GM65 did not acknowledge command 0x%04x in %d ms" % (addr, timeout_ms))
            if not self._uart.any():
                await asyncio.sleep_ms(10)
                continue
            k = self._uart.readinto(rx, 7 - got) or 0
            for i in range(k):
                if rx[i] != _ACK[got + i]:
                    from drivers.errors import SensorError  # loaded by the first error only

                    raise SensorError("GM65 refused command 0x%04x (reply byte %d 0x%02x)" % (addr, got + i, rx[i]))
            got += k

    def flush(self):
        """Drop buffered input and any half line."""
        self._rpos = self._rlen = self._n = 0
        self._drop = False
        while self._uart.any():
            if not self._uart.readinto(self._rx):
                break

    async def trigger(self):
        """Start one scan (the module must be in command-triggered mode, zone 0x0000)."""
        await self.command(_ZONE_TRIGGER, 0x01)

    async def scan(self, timeout_ms=5000, trigger=False, poll_ms=20):
        """Await the next code (str), or None after ``timeout_ms``."""
        import asyncio

        if trigger:
            await self.trigger()
        t0 = ticks_ms()
        while True:
            text = self.poll()
            if text is not None:
                return text
            if ticks_diff(ticks_ms(), t0) >= timeout_ms:
                return None
            await asyncio.sleep_ms(poll_ms)
