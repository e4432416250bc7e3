"""Range, weight and temperature drivers on the MicroPython unix port (as .mpy, 64 KiB heap).

A02YYUW and HC-SR04 run on the simulated ``machine`` (UART byte streams, ``time_pulse_us``);
HX711 and DS18B20 on chip models in tests/mp/drivers/ (a data pin that shifts out a 24-bit
word on clock edges, a 1-Wire bus with DS18B20 scratchpads). Expected values are computed here
from the datasheets, independently of the firmware.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from drivers_run import MP_DRIVERS, run  # noqa: F401
pytestmark = pytest.mark.micropython


# -- DFRobot A02YYUW: 0xFF, H, L, SUM = (0xFF + H + L) & 0xFF ----------------------------------


def a02(mm: int, bad: bool = False) -> bytes:
    h, l = mm >> 8, mm & 0xFF
    return bytes([0xFF, h, l, ((0xFF + h + l) & 0xFF) ^ (0x55 if bad else 0)])


def test_a02yyuw_newest_good_frame_and_resync():
    assert a02(1953) == bytes.fromhex("ff07a1a7")  # the SEN0311 wiki's layout, worked by hand


def test_a02yyuw_reads_frames_skips_noise_and_resyncs(mpy):
    # Noise, a good frame, a frame cut short (its header is followed by a real frame: the parser
    # must find the real header inside the bad 4 bytes) and a frame whose low byte is 0xFF.
    rx = b"\x12\x34" + a02(1953) + b"\xff\x06" + a02(1023)
    assert a02(1023) == bytes.fromhex("ff03ff01")
    _, res = run(mpy, """
        from machine import UART
        from drivers.a02yyuw import A02YYUW
        from drvtest import out
        s = A02YYUW(UART(2, 9600))
        out("first", s.read())
        out("errors", s.errors)
        out("again", s.read())
        out("kept", s.mm)
        """, world={"uart": {2: {"rx": rx}}})
    assert res == {"first": 1023, "errors": 1, "again": None, "kept": 1023}


def test_a02yyuw_resyncs_on_a_doubled_header(mpy):
    # A glitch doubles the header: FF FF 03 FF fails its sum; the real frame starts at its byte 1.
    _, res = run(mpy, """
        from machine import UART
        from drivers.a02yyuw import A02YYUW
        from drvtest import out
        s = A02YYUW(UART(2, 9600))
        out("got", [s.read(), s.errors])
        """, world={"uart": {2: {"rx": b"\xff" + a02(1023)}}})
    assert res["got"] == [1023, 1]


def test_a02yyuw_frames_over_time_split_and_corrupted(mpy):
    sched = [
        (0, a02(2500)[:2]),  # half a frame now ...
        (60, a02(2500)[2:]),  # ... the rest 60 ms later
        (120, a02(2400, bad=True)),
        (200, a02(30)),
    ]
    _, res = run(mpy, """
        from machine import UART
        from drivers.a02yyuw import A02YYUW
        from drvtest import out, until
        s = A02YYUW(UART(2, 9600))
        got = []
        for at in (30, 90, 150, 230):
            until(at)
            got.append([at, s.read(), s.errors])
        out("got", got)
        """, world={"uart": {2: {"schedule": sched}}})
    assert [g[1:] for g in res["got"]] == [[None, 0], [2500, 0], [None, 1], [30, 1]]


# -- HC-SR04: distance = echo high time * c / 2, c = 331.3 + 0.606 T ----------------------------

_TRIG, _ECHO = 18, 19


def test_hcsr04_distance_with_temperature_and_trigger_pulses(mpy):
    r, res = run(mpy, """
        from machine import Pin, time_pulse_us
        from drivers.hcsr04 import HCSR04
        from drvtest import out
        s = HCSR04(Pin(%d, Pin.OUT), Pin(%d, Pin.IN), time_pulse_us)
        out("d", [s.distance_mm(20), s.distance_mm(-10), s.distance_mm(40), s.echo_us()])
        """ % (_TRIG, _ECHO), world={"pulses": {_ECHO: [5831, 5831, 5831, 1166]}})
    c = lambda t: 331.3 + 0.606 * t  # noqa: E731
    assert res["d"] == [round(5831 * c(20) / 2000), round(5831 * c(-10) / 2000), round(5831 * c(40) / 2000), 1166]
    assert res["d"][:3] == [1001, 948, 1037]  # 9 % apart between a winter night and a summer noon
    # Each measurement: TRIG low, a 10 us high pulse, low again.
    assert r.pin_values(_TRIG) == [0, 1, 0, 1, 0, 1, 0, 1, 0]


def test_hcsr04_trigger_pulse_is_at_least_10_us(mpy):
    # The sim records pin changes in ms; a recording pin gives the pulse width in us.
    _, res = run(mpy, """
        import time
        from machine import Pin, time_pulse_us
        from drivers.hcsr04 import HCSR04
        from drvtest import out
        class Trig:
            def __init__(self):
                self.log = []
            def value(self, v=None):
                self.log.append([v, time.ticks_us()])
        trig = Trig()
        HCSR04(trig, Pin(%d, Pin.IN), time_pulse_us).echo_us()
        (lo, _), (hi, t1), (lo2, t2) = trig.log
        out("pulse", [lo, hi, lo2, time.ticks_diff(t2, t1)])
        """ % _ECHO, world={"pulses": {_ECHO: 600}})
    lo, hi, lo2, width = res["pulse"]
    assert (lo, hi, lo2) == (0, 1, 0)
    assert width >= 10  # datasheet: "a short 10uS pulse to the trigger input"


def test_hcsr04_no_echo_and_out_of_range(mpy):
    # machine.time_pulse_us: -2 = the pulse never started (timeout waiting for it),
    # -1 = it was still high at the timeout (nothing in range).
    _, res = run(mpy, """
        from machine import Pin
        from drivers.hcsr04 import HCSR04
        from drivers.errors import NoDevice
        from drvtest import catch, out
        s = HCSR04(Pin(%d, Pin.OUT), Pin(%d, Pin.IN))   # time_pulse_us from machine, not injected
        out("none", catch(s.distance_mm))
        try:
            s.distance_mm()
        except NoDevice as e:
            out("nodev", [str(e), isinstance(e, OSError)])
        """ % (_TRIG, _ECHO), world={"pulses": {_ECHO: [-1, -2]}})
    assert res["none"] is None
    msg, is_oserror = res["nodev"]
    assert "never went high" in msg and is_oserror


def test_hcsr04_echo_still_high_is_an_error(mpy):
    _, res = run(mpy, """
        from machine import Pin, time_pulse_us
        from drivers.hcsr04 import HCSR04
        from drvtest import catch, out
        s = HCSR04(Pin(%d, Pin.OUT), Pin(%d, Pin.IN), time_pulse_us)
        out("busy", catch(s.distance_mm))
        """ % (_TRIG, _ECHO), world={"pins": {_ECHO: 1}, "pulses": {_ECHO: 600}})
    assert res["busy"].startswith("SensorError: HC-SR04 echo still high")


# -- HX711: 24-bit two's complement MSB first, 25/26/27 pulses = A128/B32/A64 -------------------


def test_hx711_decodes_24_bit_twos_complement_at_gain_128(mpy):
    values = [0x012345, -1000, 0x7FFFFF, -0x800000, 0]
    _, res = run(mpy, """
        from fake_hx711 import HX711Chip
        from drivers.hx711 import HX711
        from drvtest import out
        chip = HX711Chip(%r)
        hx = HX711(chip.sck, chip.dout)
        out("raw", [hx.raw() for _ in range(5)])
        hx.ready()
        out("pulses", chip.pulse_counts)
        out("gains", chip.read_gains)
        out("sck_end", chip.sck.level)
        """ % values)
    assert res["raw"] == [74565, -1000, 8388607, -8388608, 0]
    assert res["pulses"] == [25] * 5  # 24 data bits + 1: channel A, gain 128 next
    assert res["gains"] == [128] * 5
    assert res["sck_end"] == 0  # PD_SCK left low: high for > 60 us would power the chip down


def test_hx711_gain_change_discards_the_conversion_made_at_the_old_gain(mpy):
    _, res = run(mpy, """
        from fake_hx711 import HX711Chip
        from drivers.hx711 import HX711
        from drvtest import catch, out
        chip = HX711Chip([111, 222, 333, 444, 555])
        hx = HX711(chip.sck, chip.dout, gain=64)
        out("a64", hx.raw())       # 111 was converted at A/128 (power-on default): dropped
        hx.set_gain(32)
        out("b32", hx.raw())       # 333 was converted at A/64: dropped
        hx.ready()
        out("pulses", chip.pulse_counts)
        out("gains", chip.read_gains)
        out("bad", catch(hx.set_gain, 100))
        """)
    assert res["a64"] == 222 and res["b32"] == 444
    assert res["pulses"] == [27, 27, 26, 26]  # 27 pulses = A/64 next, 26 = B/32 next
    assert res["gains"] == [128, 64, 64, 32]
    assert res["bad"].startswith("ValueError: HX711 gain 100")


def test_hx711_tare_calibrate_weigh_and_reject_a_spike(mpy):
    conv = [1000, 1010, 990] + [22000, 22100, 21900] + [5200, 900000, 5200] + [5200, 5200, 5200]
    _, res = run(mpy, """
        import asyncio
        from fake_hx711 import HX711Chip
        from drivers.hx711 import HX711
        from drvtest import out
        chip = HX711Chip(%r, busy_polls=2)
        hx = HX711(chip.sck, chip.dout)
        out("offset", hx.tare(3))
        out("scale", hx.calibrate(500, 3))
        out("grams", hx.weight(3))
        out("agrams", asyncio.run(hx.aweight(3)))
        """ % conv)
    assert res["offset"] == 1000
    assert res["scale"] == pytest.approx(21000 / 500)
    assert res["grams"] == pytest.approx(100.0)  # the 900000 spike loses the median
    assert res["agrams"] == pytest.approx(100.0)


def test_hx711_timeout_and_power_down(mpy):
    _, res = run(mpy, """
        import time
        from fake_hx711 import HX711Chip
        from drivers.hx711 import HX711
        from drivers.errors import SensorTimeout
        from drvtest import catch, out
        dead = HX711Chip([])           # DOUT never goes low: unplugged
        hx = HX711(dead.sck, dead.dout)
        out("timeout", catch(hx.raw, 20))
        chip = HX711Chip([7, 8, 70, 80])
        hx = HX711(chip.sck, chip.dout, gain=64)
        out("first", hx.raw())
        t0 = time.ticks_us()
        hx.power_down()
        out("down", [chip.sck.level, time.ticks_diff(time.ticks_us(), t0) >= 60])
        chip.power_cycle()             # what the chip does after PD_SCK high > 60 us
        hx.power_up()
        out("up", chip.sck.level)
        out("after", hx.raw())         # 70 was converted at A/128 after the reset: dropped
        hx.ready()
        out("gains", chip.read_gains)
        """)
    assert res["timeout"].startswith("SensorTimeout: HX711 DOUT stayed high 20 ms")
    assert res["first"] == 8
    assert res["down"] == [1, True]
    assert res["up"] == 0
    assert res["after"] == 80
    assert res["gains"] == [128, 64, 128, 64]


# -- DS18B20: scratchpad of 9 bytes, CRC-8/MAXIM (x^8 + x^5 + x^4 + 1) -------------------------


def crc8_maxim(data: bytes) -> int:
    """CRC-8/MAXIM-DOW from its catalogue parameters: poly 0x31, init 0, reflected in and out."""
    crc = 0
    for b in data:
        b = int("{:08b}".format(b)[::-1], 2)  # refin
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return int("{:08b}".format(crc)[::-1], 2)  # refout


def pad(raw16: int, config: int = 0x7F, corrupt: bool = False) -> bytes:
    body = bytes([raw16 & 0xFF, (raw16 >> 8) & 0xFF, 0x4B, 0x46, config, 0xFF, 0x0C, 0x10])
    return body + bytes([crc8_maxim(body) ^ (0x01 if corrupt else 0)])


def rom(serial: bytes, family: int = 0x28) -> bytes:
    body = bytes([family]) + serial
    return body + bytes([crc8_maxim(body)])


def test_crc8_reference():
    assert crc8_maxim(b"123456789") == 0xA1  # the catalogue's check value
    # The power-on scratchpad every DS18B20 shows before its first conversion (85 degC).
    assert pad(0x0550) == bytes.fromhex("50054b467fff0c101c")


_ROM1 = rom(bytes.fromhex("ff4c5c621603"))
_ROM2 = rom(bytes.fromhex("a1b2c3d4e5f6"))


def ds_run(mpy, devices, body):
    devs = ", ".join("DS18B20Dev(bytes.fromhex(%r), [%s])" % (r.hex(), ", ".join(
        "bytes.fromhex(%r)" % p.hex() for p in pads)) for r, pads in devices)
    head = textwrap.dedent("""
        import asyncio
        from fake_onewire import DS18B20Dev, OneWireBus
        from drivers.ds18b20 import DS18B20, crc8, scan
        from drivers.errors import ChecksumError, NoDevice, SensorError
        from drvtest import catch, out
        bus = OneWireBus([%s])
        """) % devs
    return run(mpy, head + textwrap.dedent(body))


@pytest.mark.parametrize(
    "raw16, celsius",
    # Datasheet table "Temperature/data relationship".
    [(0x07D0, 125.0), (0x0191, 25.0625), (0x0008, 0.5), (0x0000, 0.0), (0xFFF8, -0.5),
     (0xFF5E, -10.125), (0xFC90, -55.0)],
)
def test_ds18b20_convert_and_read(mpy, raw16, celsius):
    _, res = ds_run(mpy, [(_ROM1, [pad(0x0550), pad(raw16)])], """
        p = DS18B20(bus)
        out("ms", p.convert())
        out("t", p.read())
        out("log", bus.log)
        """)
    assert res["ms"] == 751
    assert res["t"] == celsius
    # reset, SKIP ROM, CONVERT T; reset, SKIP ROM, READ SCRATCHPAD, 9 bytes.
    assert res["log"] == ["reset", 0xCC, 0x44, "reset", 0xCC, 0xBE, "read9"]


def test_ds18b20_bad_crc_no_device_and_shorted_line(mpy):
    zeros = bytes(9)
    _, res = ds_run(mpy, [(_ROM1, [pad(0x0191, corrupt=True), zeros])], """
        p = DS18B20(bus)
        try:
            p.read()
        except ChecksumError as e:
            out("crc", [str(e), isinstance(e, SensorError), isinstance(e, OSError)])
        p.convert()
        out("zeros", catch(p.read))
        out("nodev", catch(DS18B20(OneWireBus([])).read))
        """)
    msg, is_sensor_error, is_oserror = res["crc"]
    assert "CRC" in msg and is_sensor_error and is_oserror
    assert res["zeros"].startswith("SensorError: DS18B20 scratchpad all zeros")
    assert res["nodev"].startswith("NoDevice: no DS18B20 answered the reset pulse")


def test_ds18b20_scan_match_rom_and_resolution(mpy):
    other_family = rom(bytes.fromhex("010203040506"), family=0x10)  # a DS18S20
    bad_rom = _ROM2[:7] + bytes([_ROM2[7] ^ 0xFF])
    # 9-bit resolution: the 3 low bits are undefined (here set) and must be masked off.
    devices = [(_ROM1, [pad(0x0191)]), (_ROM2, [pad(0x0191), pad(0x0197, config=0x1F)]),
               (other_family, [pad(0)]), (bad_rom, [pad(0)])]
    _, res = ds_run(mpy, devices, """
        roms = scan(bus)
        out("roms", roms)
        p = DS18B20(bus, roms[1])
        bus.log[:] = []
        p.set_resolution(9)
        out("written", bus.devices[1].written)
        out("t", asyncio.run(p.measure()))   # 9 bit: 94 ms, not 750
        out("bits", p.bits)
        out("log", bus.log)
        out("bad_res", catch(p.set_resolution, 13))
        """)
    assert res["roms"] == [_ROM1.hex(), _ROM2.hex()]
    assert res["written"] == [0x4B, 0x46, 0x1F]  # TH, TL, config 0 R1 R0=00 11111
    assert res["t"] == 25.0
    assert res["bits"] == 9
    match = ["reset", 0x55, *_ROM2]
    assert res["log"] == [*match, 0x4E, 0x4B, 0x46, 0x1F, *match, 0x44, *match, 0xBE, "read9"]
    assert res["bad_res"].startswith("ValueError")
