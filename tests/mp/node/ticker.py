# A test role for the node runtime (tests/test_node_*.py): its config section (under "bin",
# the role byte the test node has) says what to do:
#   {"count": 5, "period_ms": 200}   telemetry {"n": 1..count} every period_ms (0: forever, -1: none)
#   "alarm_every": k                 every k-th report is an event {"ev":"t","n":i} with ALARM
#   "crash": "init" | "run"          raise at boot (in __init__) or in run()
#   "crash": "oom"                   in run(), fill the heap and keep it (a leak): MemoryError
#   "crash": "oom_global"            the same, the leak held by this module (it outlives the role)
#   "sleep_s": s                     after the reports: wait for the acks, then deep sleep s
#   "heap": true                     print "heap FREE" once the node runs (after boot, gc'd)
#   "block_ms": ms                   after the reports, block the whole loop (a hung driver)
import asyncio
import gc

from node import runtime
from node.role import Role


_HOG = []


class Ticker(Role):
    name = "bin"

    def __init__(self, node, hal, cfg):
        super().__init__(node, hal, cfg)
        self.s = self.section()
        if self.s.get("crash") == "init":
            raise RuntimeError("ticker: crash at boot, as configured")

    async def run(self):
        s = self.s
        if s.get("heap"):
            await asyncio.sleep_ms(300)
            gc.collect()
            print("heap", gc.mem_free())
        if s.get("crash") == "run":
            raise RuntimeError("ticker: crash in run, as configured")
        if s.get("crash") in ("oom", "oom_global"):
            self.hog = _HOG if s["crash"] == "oom_global" else []
            n = 1024
            while n:  # big blocks first, then ever smaller ones: not a byte is left
                try:
                    self.hog.append(bytearray(n))
                except MemoryError:
                    n //= 2
            raise MemoryError("ticker: heap full, as configured")
        count = s.get("count", 0)
        period = s.get("period_ms", 200)
        every = s.get("alarm_every", 0)
        i = 0
        while not count or i < count:
            i += 1
            if every and i % every == 0:
                self.node.event({"ev": "t", "n": i}, alarm=True)
            else:
                self.node.telemetry({"n": i})
            await asyncio.sleep_ms(period)
        if s.get("block_ms"):
            import time

            time.sleep_ms(s["block_ms"])
        if s.get("sleep_s"):
            await self.node.idle(5)
            await self.node.sleep(s["sleep_s"])

    def on_command(self, op, args):
        if op == "t.echo":
            return args
        if op == "t.fail":
            raise ValueError("range")
        return Role.on_command(self, op, args)


runtime.main(role=Ticker)
