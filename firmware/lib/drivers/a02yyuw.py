"""DFRobot A02YYUW waterproof ultrasonic range sensor (UART, 9600 baud 8N1).

The module sends a 4-byte frame about every 100 ms: ``0xFF``, distance high byte, distance low
byte, ``SUM = (0xFF + H + L) & 0xFF``; the distance is in millimetres (30 ... 4500)::

    from drivers.a02yyuw import A02YYUW
    sonar = A02YYUW(uart)        # uart = machine.UART(2, 9600) made by the HAL (timeout=0)
    mm = sonar.read()            # the newest good frame's distance in mm, or None

``read()`` never blocks: it takes what the UART has buffered and returns the newest distance
whose checksum holds (None when no whole good frame came). A bad checksum counts in
``errors`` and the parser resynchronises on the next 0xFF. Call it at least every few hundred
ms, or give the UART an rx buffer large enough for the frames in between.
"""

from micropython import const

_HEAD = const(0xFF)
_CHUNK = const(32)


class A02YYUW:
    def __init__(self, uart):
        self._uart = uart
        self._rx = bytearray(_CHUNK)
        self._f = bytearray(4)  # the frame being assembled
        self._n = 0
        self.errors = 0
        self.mm = None  # last good distance, kept across calls

    def read(self):
        """Newest distance in mm from the bytes buffered since the last call, or None."""
        uart = self._uart
        rx = self._rx
        f = self._f
        n = self._n
        got = None
        while uart.any():
            k = uart.readinto(rx)
            if not k:
                break
            for i in range(k):
                b = rx[i]
                if n == 0:
                    if b == _HEAD:
                        f[0] = b
                        n = 1
                    continue
                f[n] = b
                n += 1
                if n < 4:
                    continue
                # DFRobot SEN0311 wiki, "UART output": SUM = (0xFF + Data_H + Data_L) & 0xFF
                if (f[0] + f[1] + f[2]) & 0xFF == f[3]:
                    got = (f[1] << 8) | f[2]
                    n = 0
                    continue
                self.errors += 1
                # Resync: the real header may be inside the bad frame (L and SUM can be 0xFF).
                n = 0
                for j in range(1, 4):
                    if f[j] == _HEAD:
                        for m in range(j, 4):
                            f[m - j] = f[m]
                        n = 4 - j
                        break
        self._n = n
        if got is not None:
            self.mm = got
        return got
