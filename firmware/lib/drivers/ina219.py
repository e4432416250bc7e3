"""INA219 high-side current/power monitor (I2C, 0x40 ... 0x4F): bus voltage, shunt voltage,
current and power of the lamp's solar/battery circuit.

The calibration register turns the shunt voltage into amps inside the chip (datasheet 8.5.1):
``Cal = trunc(0.04096 / (Current_LSB * R_shunt))`` with ``Current_LSB = max_amps / 2**15``::

    from drivers.ina219 import INA219
    pm = INA219(i2c, shunt_ohms=0.1, max_amps=3.2)   # i2c made by the HAL; writes config + Cal
    v = pm.bus_voltage()        # V
    ma = pm.current()           # mA, signed (negative: charging through the shunt backwards)
    mw = pm.power()             # mW

All readings come back as floats; a math overflow (current beyond ``max_amps``) raises
``SensorError``.
"""

from micropython import const


# Datasheet 8.6, register set.
_CONFIG = const(0x00)
_SHUNT = const(0x01)
_BUS = const(0x02)
_POWER = const(0x03)
_CURRENT = const(0x04)
_CAL = const(0x05)
# Config: BADC and SADC 12 bit (0011, 532 us), MODE 111 shunt and bus continuous.
_ADC_MODE = const(0x019F)


class INA219:
    def __init__(self, i2c, addr=0x40, shunt_ohms=0.1, max_amps=3.2, bus_volts=32, shunt_mv=320):
        self._i2c = i2c
        self.addr = addr
        self._buf = bytearray(2)
        pg = (40, 80, 160, 320).index(shunt_mv) if shunt_mv in (40, 80, 160, 320) else -1
        if pg < 0:
            raise ValueError("INA219 shunt range %r mV: use 40, 80, 160 or 320" % (shunt_mv,))
        if bus_volts not in (16, 32):
            raise ValueError("INA219 bus range %r V: use 16 or 32" % (bus_volts,))
        # Integer arithmetic in uA and micro-ohm: the datasheet truncates, and single-precision floats
        # (ESP32) land a hair low, e.g. 24581 for 0.003 ohm / 18.2 A where the exact Cal is 24582.
        ua = int(max_amps * 1000000 + 0.5)
        uohm = int(shunt_ohms * 1000000 + 0.5)
        if ua <= 0 or uohm <= 0 or ua * uohm > shunt_mv * 1000000000:
            raise ValueError(
                "INA219: %r A through %r ohm is outside the %d mV shunt range" % (max_amps, shunt_ohms, shunt_mv)
            )
        cal = 1342177280000000 // (ua * uohm)  # 0.04096 * 2**15 / (A * ohm), here in uA * uohm
        if not 2 <= cal <= 0xFFFF:
            raise ValueError("INA219: calibration %d out of range for %r ohm, %r A" % (cal, shunt_ohms, max_amps))
        cal &= 0xFFFE  # bit 0 of the calibration register is void, always 0 (datasheet 8.6.3.6)
        self.cal = cal
        # The LSB the chip really uses after truncation: 0.04096 / (Cal * R), in mA.
        self._lsb_ma = 40.96 / (cal * shunt_ohms)
        self.config = (0x2000 if bus_volts == 32 else 0) | (pg << 11) | _ADC_MODE
        self._write(_CONFIG, self.config)
        self._write(_CAL, cal)

    def _write(self, reg, v):
        buf = self._buf
        buf[0] = v >> 8
        buf[1] = v & 0xFF
        try:
            self._i2c.writeto_mem(self.addr, reg, buf)
        except OSError as e:
            from drivers.errors import NoDevice  # loaded by the first error only

            raise NoDevice("INA219 not answering at 0x%02x (%s): check A0/A1 and wiring" % (self.addr, e))

    def _read(self, reg):
        buf = self._buf
        try:
            self._i2c.readfrom_mem_into(self.addr, reg, buf)
        except OSError as e:
            from drivers.errors import NoDevice  # loaded by the first error only

            raise NoDevice("INA219 not answering at 0x%02x (%s)" % (self.addr, e))
        return (buf[0] << 8) | buf[1]

    def _signed(self, reg):
        v = self._read(reg)
        return v - 0x10000 if v & 0x8000 else v

    def shunt_voltage(self):
        """Shunt voltage in mV (LSB 10 uV, signed)."""
        return self._signed(_SHUNT) / 100

    def bus_voltage(self):
        """Bus voltage (IN- to ground) in V: bits 15-3, LSB 4 mV."""
        return (self._read(_BUS) >> 3) * 0.004

    def _check(self):
        # Bus voltage register bit 0, OVF: the power or current calculation overflowed.
        if self._read(_BUS) & 0x01:
            from drivers.errors import SensorError  # loaded by the first error only

            raise SensorError("INA219 math overflow: current above the calibrated max_amps")
        # A load transient can brown the chip out, which resets Cal to 0 and the current to 0:
        # write it again before each reading (as Adafruit's driver does).
        self._write(_CAL, self.cal)

    def current(self):
        """Current in mA (signed)."""
        self._check()
        return self._signed(_CURRENT) * self._lsb_ma

    def power(self):
        """Power in mW (Power_LSB = 20 * Current_LSB)."""
        self._check()
        return self._read(_POWER) * 20 * self._lsb_ma

    def sleep(self):
        """Power-down mode (MODE = 000, ~6 uA); ``wake()`` restores continuous conversions."""
        self._write(_CONFIG, self.config & ~0x0007)

    def wake(self):
        self._write(_CONFIG, self.config)
