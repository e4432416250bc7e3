# A stand-in for the node runtime (node.runtime.Node) with the part roles use: what the role
# sends is printed as JSON lines ({"k": "telemetry"|"event", "body": ..., "alarm": ...}),
# sleep() prints {"k": "sleep", "s": ...} and deep-sleeps through the HAL (ending the run).
import json


class FakeLink:
    def __init__(self, up=True):
        self.up = up


class FakeNode:
    def __init__(self, hal, cfg, up=True):
        self.hal = hal
        self.cfg = cfg
        self.id = cfg.get("node_id", "test-01")
        self.link = FakeLink(up)
        self.safe = False
        self.sent = []

    @property
    def synced(self):
        return self.hal.synced()

    def time(self):
        return self.hal.time() if self.hal.synced() else 0

    def log(self, fmt, *args):
        print("role: " + (fmt % args if args else fmt))

    def _out(self, kind, body, alarm=False):
        self.sent.append((kind, body))
        print(json.dumps({"k": kind, "body": body, "alarm": alarm}))
        return True

    def telemetry(self, body):
        return self._out("telemetry", body)

    def event(self, body, alarm=False):
        return self._out("event", body, alarm)

    def healthy(self):
        pass

    async def idle(self, timeout_s):
        return True

    async def sleep(self, seconds):
        seconds = seconds() if callable(seconds) else seconds  # as node.runtime.Node.sleep
        print(json.dumps({"k": "sleep", "s": seconds}))
        self.hal.deepsleep(int(seconds * 1000))
