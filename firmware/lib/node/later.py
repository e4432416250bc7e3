"""The link while a role defers it (``Role.link_later``, the bin): loaded only by such a node,
and dropped again once :meth:`node.runtime.Node.online` brings the real link up::

    link = Later(hal, cfg)     # Wi-Fi association starts now; send() raises OSError("link down")
"""

import time


class Later:
    """The link while a role defers it (``Role.link_later``): down, never stuck (the watchdog
    reads ``beat``), no task. On Wi-Fi it starts the association at once, so that goes on
    while the role works."""

    up = False
    run = None

    def __init__(self, hal, cfg):
        if cfg["transport"] == "mqtt":
            w = hal.wlan()
            w.active(True)
            w.connect(cfg["wifi_ssid"], cfg["wifi_password"])

    @property
    def beat(self):
        return time.ticks_ms()

    def rssi(self):
        return None

    async def send(self, frame):
        raise OSError("link down")


