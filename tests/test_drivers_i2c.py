"""BH1750 and INA219 on the simulated I2C bus of the MicroPython unix port (as .mpy, 64 KiB heap).

The sim's devices are register maps (INA219: 16-bit registers at their datasheet addresses) or
register-less read queues (BH1750); register values are worked out here from the datasheets.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from drivers_run import MP_DRIVERS, run  # noqa: F401
pytestmark = pytest.mark.micropython


# -- BH1750 ----------------------------------------------------------------------------------


def test_bh1750_one_time_high_res_datasheet_example(mpy):
    # Datasheet "Measurement sequence example": 1000_0011_1001_0000 -> 28067 lx.
    r, res = run(mpy, """
        from machine import I2C
        from drivers.bh1750 import BH1750
        from drvtest import out
        s = BH1750(I2C(0))
        s.start()
        out("wait", s.wait_ms)
        out("lux", s.read())
        """, world={"i2c": {0x23: {"reads": [b"\x83\x90"]}}})
    assert r.i2c_writes(0x23) == [(None, b"\x20")]  # One Time H-Resolution Mode
    assert res["wait"] == 180  # max H-resolution measurement time
    assert res["lux"] == pytest.approx(0x8390 / 1.2)
    assert round(res["lux"]) == 28067


def test_bh1750_modes_sensitivity_and_address(mpy):
    r, res = run(mpy, """
        from machine import I2C
        from drivers import bh1750
        from drivers.bh1750 import BH1750
        from drvtest import catch, out
        i2c = I2C(0)
        s = BH1750(i2c, addr=0x5C, mode=bh1750.ONCE_L)
        out("low", [s.measure(), s.wait_ms])
        s = BH1750(i2c, addr=0x5C, mode=bh1750.CONT_H2, mtreg=254)
        s.start()
        out("h2", [s.read(), s.wait_ms])
        out("bad", [catch(BH1750, i2c, 0x5C, 0x42), catch(BH1750, i2c, 0x5C, bh1750.ONCE_H, 20)])
        out("absent", catch(BH1750(i2c).start))
        """, world={"i2c": {0x5C: {"reads": [b"\x01\x90"]}}})
    assert r.i2c_writes(0x5C) == [
        (None, b"\x23"),  # One Time L-Resolution Mode
        (None, b"\x47"), (None, b"\x7e"),  # MTreg 254 = 111_11110: 01000_111, 011_11110
        (None, b"\x11"),  # Continuously H-Resolution Mode2
    ]
    assert res["low"] == [pytest.approx(400 / 1.2), 24]
    assert res["h2"] == [pytest.approx(400 / 1.2 * 69 / 254 / 2), 663]  # 180 ms * 254 / 69, rounded up
    assert all(b.startswith("ValueError") for b in res["bad"])
    assert res["absent"].startswith("NoDevice: BH1750 not answering at 0x23")


# -- INA219 ----------------------------------------------------------------------------------

_INA = 0x40


def ina_regs(shunt_raw: int, bus_mv: int, cal: int, ovf: bool = False) -> dict:
    """Register values an INA219 would show (datasheet 8.5.1: Current = Shunt * Cal / 4096,
    Power = Current * Bus / 5000; bus register bits 15-3 in 4 mV, bit 1 CNVR, bit 0 OVF)."""
    current = int(shunt_raw * cal / 4096)
    bus = bus_mv // 4
    power = abs(current) * bus // 5000
    be = lambda v: (v & 0xFFFF).to_bytes(2, "big")  # noqa: E731
    return {1: be(shunt_raw), 2: be(bus << 3 | 0x02 | ovf), 3: be(power), 4: be(current)}


@pytest.mark.parametrize("shunt_raw", [4000, -4000])
def test_ina219_calibration_and_readings(mpy, shunt_raw):
    # 0.1 ohm shunt, 3.2 A max: Current_LSB = 3.2 / 2**15, Cal = trunc(0.04096 / (LSB * 0.1)) = 4194.
    cal = 4194
    r, res = run(mpy, """
        from machine import I2C
        from drivers.ina219 import INA219
        from drvtest import out
        pm = INA219(I2C(0), shunt_ohms=0.1, max_amps=3.2)
        out("cal", pm.cal)
        out("v", [pm.bus_voltage(), pm.shunt_voltage(), pm.current(), pm.power()])
        """, world={"i2c": {_INA: {"regs": ina_regs(shunt_raw, 12000, cal)}}})
    assert res["cal"] == cal
    lsb_ma = 40.96 / (cal * 0.1)
    current_reg = int(shunt_raw * cal / 4096)
    bus_v, shunt_mv, ma, mw = res["v"]
    assert bus_v == pytest.approx(12.0)
    assert shunt_mv == pytest.approx(shunt_raw / 100)
    assert ma == pytest.approx(current_reg * lsb_ma)
    assert ma == pytest.approx(shunt_raw / 100 / 0.1, rel=2e-3)  # Ohm's law: 40 mV / 0.1 ohm
    assert mw == pytest.approx(abs(current_reg) * 3000 // 5000 * 20 * lsb_ma)
    assert mw == pytest.approx(4800, rel=2e-3)
    # Config 0x399F: BRNG 32 V, PG /8 (320 mV), 12-bit ADCs, continuous; Cal written again before
    # each current/power reading (a brown-out resets it to 0).
    assert r.i2c_writes(_INA) == [(0, b"\x39\x9f"), (5, b"\x10\x62"), (5, b"\x10\x62"), (5, b"\x10\x62")]


def test_ina219_other_ranges_errors_and_exact_calibration(mpy):
    r, res = run(mpy, """
        from machine import I2C
        from drivers.ina219 import INA219
        from drvtest import catch, out
        i2c = I2C(0)
        out("exact", INA219(i2c, shunt_ohms=0.003, max_amps=18.2, shunt_mv=80).cal)
        out("odd", INA219(i2c, shunt_ohms=0.1, max_amps=1).cal)
        pm = INA219(i2c, addr=0x41, shunt_ohms=0.01, max_amps=4, bus_volts=16, shunt_mv=40)
        out("small", [pm.cal, pm.config])
        out("ovf", catch(pm.current))
        pm.sleep()
        out("bad", [catch(INA219, i2c, 0x41, 0.1, 5), catch(INA219, i2c, 0x41, 0.1, 1, 24),
                    catch(INA219, i2c, 0x41, 0.1, 1, 32, 100)])
        out("absent", catch(INA219, i2c, 0x45))
        """, world={"i2c": {_INA: {"regs": {}}, 0x41: {"regs": ina_regs(30000, 5000, 33554, ovf=True)}}})
    # trunc(0.04096 * 2**15 / (18.2 * 0.003)) = trunc(24582.0006); float32 maths gives 24581.
    assert res["exact"] == 24582
    # trunc(13421.77) = 13421, but bit 0 of the register is void: the chip holds 13420.
    assert res["odd"] == 13420
    assert (5, b"\x34\x6c") in r.i2c_writes(_INA)
    # 4 A / 2**15 through 0.01 ohm: Cal = trunc(33554.4) = 33554; config BRNG 16 V, PG /1 (40 mV).
    assert res["small"] == [33554, 0x019F]
    assert res["ovf"].startswith("SensorError: INA219 math overflow")
    assert r.i2c_writes(0x41)[-1] == (0, b"\x01\x98")  # MODE 000: power-down
    assert [b.split(":")[0] for b in res["bad"]] == ["ValueError"] * 3
    assert res["absent"].startswith("NoDevice: INA219 not answering at 0x45")
