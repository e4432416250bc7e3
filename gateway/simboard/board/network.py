# Simulated ESP32 `network` module for the MicroPython unix port (tests only).
#
# Shadows the port's `network` like machine.py shadows `machine`. Only the Wi-Fi station is
# simulated: sockets are the host's real ones (the broker a test starts on 127.0.0.1), so
# "Wi-Fi down" only shows in what WLAN reports; firmware must notice and drop its connections,
# as it must on a board (where the sockets would just go silent).
#
# The world's "wifi" section (every key optional):
#   {"ssid": "linli",            # the access point in range (absent: any SSID connects)
#    "password": "secret",       # absent: any password
#    "up": true,                 # the AP reachable: a constant or a schedule [[at_ms, bool], ...]
#    "rssi": -61,                # dBm: a constant or a schedule
#    "connect_ms": 50}           # association + DHCP time
# Events: ["wifi", ms, "connect", ssid], ["wifi", ms, "disconnect", None],
#         ["wifi", ms, "active", bool].
import _sim

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
AUTH_OPEN = 0
AUTH_WPA2_PSK = 3

_IFS = {}  # interface -> state dict, shared by every WLAN object of the interface


def _world():
    return _sim.world.get("wifi") or {}


class WLAN:
    def __init__(self, interface=STA_IF):
        s = _IFS.get(interface)
        if s is None:
            s = _IFS[interface] = {"active": False, "ssid": None, "key": None, "at": None,
                                   "hostname": "esp32"}
        self._s = s
        self._if = interface

    def active(self, is_active=None):
        if is_active is None:
            return self._s["active"]
        is_active = bool(is_active)
        if is_active != self._s["active"]:
            self._s["active"] = is_active
            _sim.emit("wifi", _sim.ms(), "active", is_active)
            if not is_active:
                self._s["at"] = None
        return None

    def connect(self, ssid=None, key=None, *, bssid=None):
        if not self._s["active"]:
            raise OSError("Wifi Not Started")
        self._s["ssid"] = ssid
        self._s["key"] = key
        self._s["at"] = _sim.ms()
        _sim.emit("wifi", _sim.ms(), "connect", ssid)

    def disconnect(self):
        self._s["at"] = None
        _sim.emit("wifi", _sim.ms(), "disconnect", None)

    def _reason(self):
        """STAT_GOT_IP when connected, else why not."""
        s = self._s
        if not s["active"]:
            return STAT_IDLE
        if s["at"] is None:
            return STAT_IDLE
        w = _world()
        now = _sim.ms()
        if not _sim.level_at(w.get("up"), now, True):
            return STAT_NO_AP_FOUND
        if "ssid" in w and w["ssid"] != s["ssid"]:
            return STAT_NO_AP_FOUND
        if "password" in w and w["password"] != s["key"]:
            return STAT_WRONG_PASSWORD
        if now - s["at"] < w.get("connect_ms", 50):
            return STAT_CONNECTING
        return STAT_GOT_IP

    def isconnected(self):
        return self._reason() == STAT_GOT_IP

    def status(self, param=None):
        if param is None:
            return self._reason()
        if param == "rssi":
            if not self.isconnected():
                raise OSError("not connected")
            return int(_sim.level_at(_world().get("rssi"), _sim.ms(), -60))
        raise ValueError("unknown status param")

    def ifconfig(self, cfg=None):
        if cfg is not None:
            return None
        if self.isconnected():
            return ("192.168.4.20", "255.255.255.0", "192.168.4.1", "192.168.4.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def config(self, *args, **kw):
        if kw:
            for k, v in kw.items():
                self._s[k] = v
            return None
        if args and args[0] == "mac":
            return (_sim.data(_sim.world.get("unique_id", {"hex": "240ac4a1b2c3"})) + bytes(6))[:6]
        if args and args[0] in ("essid", "ssid"):
            return self._s["ssid"] or ""
        if args:
            return self._s.get(args[0])
        raise ValueError("unknown config param")

    def scan(self):
        w = _world()
        if not _sim.level_at(w.get("up"), _sim.ms(), True) or "ssid" not in w:
            return []
        rssi = int(_sim.level_at(w.get("rssi"), _sim.ms(), -60))
        return [(w["ssid"].encode(), b"\x24\x0a\xc4\x00\x00\x01", 6, rssi, AUTH_WPA2_PSK, False)]


def hostname(name=None):
    s = WLAN(STA_IF)._s
    if name is None:
        return s["hostname"]
    s["hostname"] = name
