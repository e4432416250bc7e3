"""Small asyncio helpers of the node: ``Flag``, an event whose ``wait`` takes a timeout;
``Mutex``, a lock made of one; ``within``, a timeout for an awaitable.

``asyncio.wait_for_ms(event.wait(), ms)`` runs the wait in a task of its own, with a runner
coroutine and a timeout (about 0.7 KB on the unix port for each wait in progress), and the
node's tasks spend their lives in such waits. A Flag's waiter just sleeps, and ``set()`` ends
that sleep early by cancelling it (``Task.cancel``: the same thing ``wait_for`` does)::

    f = Flag()
    if await f.wait(500):    # True: set (already, or during the wait); False: 500 ms passed
        f.clear()
    f.set()                  # from another task (not from an interrupt handler)

    m = Mutex()              # writes of one packet at a time on a shared stream
    if not m.try_take():     # (free: taken at once, no coroutine made)
        await m.take()
    try:
        ...
    finally:
        m.give()

    await within(conn.read(), 10000)   # OSError(ETIMEDOUT) after 10 s

None of them needs ``asyncio.Event``, ``Lock`` or ``wait_for_ms``, whose modules then stay
unloaded. ``within`` cancels the awaiting task itself on time (a sleeping task does), instead
of running the awaitable in a task of its own.
"""

import asyncio
from errno import ETIMEDOUT

from micropython import const

_FOREVER_MS = const(3600000)  # a Mutex's waiter looks again at least this often


class Flag:
    """See the module docstring. A task cancelled while it waits gets its CancelledError."""

    def __init__(self):
        self.state = False
        self._w = []  # the tasks in wait(); set() takes the list

    def is_set(self):
        return self.state

    def clear(self):
        self.state = False

    def set(self):
        self.state = True
        w = self._w
        if w:
            self._w = []  # a waiter that is not in self._w any more was woken by set()
            for t in w:
                t.cancel()

    async def wait(self, ms):
        """Wait until set (True) or ``ms`` milliseconds (False; True if it is set by then)."""
        if self.state:
            return True
        t = asyncio.current_task()
        self._w.append(t)
        try:
            await asyncio.sleep_ms(ms)
        except asyncio.CancelledError:
            if t not in self._w:
                return True  # set() woke it, even if it was cleared again since
            self._w.remove(t)
            raise  # a real cancel
        if t in self._w:
            self._w.remove(t)
        return self.state


class Mutex:
    """A lock for tasks (``take``/``give``); see the module docstring."""

    def __init__(self):
        self.busy = False
        self._free = Flag()

    def try_take(self):
        """Take it if it is free (True), without a coroutine; else False."""
        if self.busy:
            return False
        self.busy = True
        return True

    async def take(self):
        while self.busy:
            self._free.clear()
            await self._free.wait(_FOREVER_MS)
        self.busy = True

    def give(self):
        self.busy = False
        self._free.set()


async def _expire(task, ms):
    await asyncio.sleep_ms(ms)
    task.cancel()


async def within(aw, ms):
    """Await ``aw`` (a coroutine) in this task; ``OSError(ETIMEDOUT)`` if it takes over ``ms``
    milliseconds (it is then cancelled where it waits, as by ``asyncio.wait_for_ms``)."""
    timer = asyncio.create_task(_expire(asyncio.current_task(), ms))
    try:
        return await aw
    except asyncio.CancelledError:
        if timer.done():  # the timer cancelled us: a timeout, not a cancel from outside
            raise OSError(ETIMEDOUT)
        raise
    finally:
        timer.cancel()
