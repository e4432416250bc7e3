"""PIR motion sensor (HC-SR501 class) on an input pin with an interrupt.

The interrupt handler only records the tick and sets a flag (``asyncio.ThreadSafeFlag``, safe
to set from a hard IRQ); a task does the work::

    from drivers.pir import PIR
    motion = PIR(pin)                    # pin = machine.Pin(27, Pin.IN) made by the HAL

    async def lamp_task():
        while True:
            t = await motion.wait()      # ticks_ms() of the latest rising edge
            lamp.set(100)

The module holds its output high for its own delay (HC-SR501: 5 s ... 300 s, a trimmer), and in
"repeat trigger" mode it stays high while people move: ``active()`` reads the level now.
"""

from time import ticks_ms


class PIR:
    def __init__(self, pin, trigger=None):
        self._pin = pin
        # Every attribute the handler writes exists before it can run: an IRQ must not allocate.
        self.count = 0
        self.last_ms = 0
        self._pending = False
        self._flag = 0  # the ThreadSafeFlag, made by the first wait() (None: the port has none)
        if trigger is None:
            trigger = pin.IRQ_RISING
        pin.irq(handler=self._irq, trigger=trigger)

    def _irq(self, pin):
        self.last_ms = ticks_ms()
        self.count += 1
        self._pending = True
        flag = self._flag
        if flag:
            flag.set()

    def active(self):
        """True while the sensor output is high."""
        return self._pin.value() == 1

    def pending(self):
        """True (once) if motion was seen since the last ``wait()``/``pending()``; non-blocking."""
        p = self._pending
        self._pending = False
        return p

    async def wait(self):
        """Wait for the next motion edge (or return at once for one not yet taken): its tick."""
        if not self._pending:
            flag = self._flag
            if flag == 0:
                # Made now, not in __init__: a PIR that is only polled (pending()) never loads
                # asyncio's event module. The handler sees 0 (falsy) until then.
                try:
                    from asyncio import ThreadSafeFlag

                    flag = ThreadSafeFlag()
                except ImportError:
                    flag = None  # the task polls _pending instead
                self._flag = flag
            if flag is not None:
                while not self._pending:
                    await flag.wait()
            else:
                import asyncio

                while not self._pending:
                    await asyncio.sleep_ms(20)
        self._pending = False
        return self.last_ms

    def close(self):
        """Remove the interrupt handler."""
        self._pin.irq(handler=None)
