"""The roles' settings: defaults in code, checked once at boot, then this module is unloaded.

A role's settings sit in ``config.json`` under the role's name; :func:`load` fills in the
defaults and raises ``ValueError`` naming the bad key (unknown keys too: a typo must not be
silently ignored)::

    from roles import settings
    c = settings.load("bin", cfg.get("bin"))   # ValueError("bin.full_pct must be an int ...")
    settings.release()                         # its code and tables leave the heap

Every key (``lo``/``hi`` are the allowed range; pins are GPIO numbers or null = not fitted):

**bin** (see :mod:`roles.bin_core` for what they do)

=============  =========  =========================================================================
depth          100        cm from the sonar down to the bottom (``bin.config`` can change it)
rim            8          cm from the sonar down to the rim (refuse nearer: ``overflow``)
full_pct       85         ``full`` at this fill ...
empty_pct      40         ... re-armed (``emptied``) at or below this one
cat            other      ``kitchen``, ``recyclable``, ``hazardous`` or ``other`` (deposits)
pings          5          sonar pings per measurement (median, outliers dropped)
sonar_ref_c    20.0       the air temperature the sonar module computes its distance for
fire_c         60.0       ``fire_risk`` at this temperature ...
rise_c_min     3.0        ... or at this rise in degC/min between wakes ...
rise_min_c     35.0       ... when above this temperature
tilt_deg       45         ``tipped`` at this tilt (re-armed below half of it)
bat_low_v      3.45       ``battery_low`` below this ...
bat_hyst_v     0.15       ... re-armed this much above it
hb_wakes       12         heartbeat (all readings) every this many wakes ...
hb_s           3600       ... or seconds, whichever comes first
alarm_s        60         wake period while a fire risk lasts (else the node's ``report_s``)
lid_wait_s     30         a deposit: the lid must open this soon after the card
open_max_s     300        ... and close within this
settle_s       3          ... and the weight settle this long
db_fill        5          deadbands: % fill,
db_w           0.5        kg,
db_temp        1.0        degC,
db_tilt        10         deg,
db_bat         0.05       V
sonar          a02yyuw    ``a02yyuw`` (UART ``sonar_uart``), ``hcsr04`` (``trig``/``echo``), ``none``
sonar_uart     2
hx_scale       0.0        HX711 counts per gram (``HX711.calibrate``); 0: no load cell
hx_offset      0          HX711 counts of the empty bin (``HX711.tare``)
rfid           true       an RC522 card reader on SPI 1 (``spi_*`` pins, ``rfid_cs``)
tilt_switch    true       a tilt switch on ``tilt`` (pulled low = tipped: tilt 90, else 0)
lid_open       1          the level of pin ``lid`` when the lid is open
card_s         2          after a wake by the card pin, look for the card this long
pins                      trig 5, echo 18, sonar_tx 17, sonar_rx 16, hx_sck 33, hx_dout 32,
                          ow 4 (DS18B20), lid 27, tilt 26, spi_sck 14, spi_mosi 13, spi_miso 19,
                          rfid_cs 15, wake null (a card-reader wake line)
=============  =========  =========================================================================

**streetlight** (see :mod:`roles.streetlight_core`)

=============  =========  =========================================================================
mode           auto       ``auto``, ``on``, ``off`` (``lamp.mode`` changes it, kept in flash)
level          100        the level of mode ``on`` (``lamp.level``)
profile        see code   ``[[minutes after dusk, level], ...]``, 1-8 pairs (``lamp.schedule``);
                          default ``[[0, 100], [240, 60], [420, 40], [600, 80]]``
lat, lon       null       position for the astronomical fallback (both or neither)
tz_min         480        local time, minutes east of UTC (the ``energy_daily`` day)
on_lux         10.0       dusk below this ...
off_lux        30.0       ... dawn above this ...
dwell_s        120        ... held this long without a break
lux_fail_n     3          failed light readings in a row before the astronomical schedule
boost          100        level on motion at night ...
hold_s         60         ... for this long after the last motion
dim_v          11.8       battery: capped at ``dim_level`` below this,
off_v          11.4       off below this,
bat_hyst_v     0.3        recovering this much above each,
bat_dwell_s    60         each change held this long
dim_level      30
rated_ma       1000       lamp current at full duty
open_ma        20         fault ``open`` under this current (lamp on)
low_pct        50         ``low`` under this % of the expected current
high_pct       150        ``high`` over this %
short_pct      200        ``short`` over this % of ``rated_ma``
settle_s       5          judge the current this long after a level change
fault_s        30         a fault must last this long (and be gone this long to re-arm)
report_min_s   60         analog readings are reported at most this often
db_lux_pct     20         deadbands: % of lux (at least 5 lx),
db_ma          20         mA,
db_pv          0.5        V,
db_bat         0.1        V
i2c_bus        0          the I2C bus (pins ``scl``, ``sda``)
bh1750         35         its address (0x23; 0x5C = 92); null: none
ina_lamp       64         the lamp/battery INA219 (0x40); null: none
ina_pv         65         the panel INA219 (0x41); null: none
shunt_ohms     0.1        the INA219s' shunt ...
max_amps       3.2        ... and range
pwm_hz         1000       lamp PWM
min_level      1          the dimmer's lowest level
tick_ms        1000
pins                      scl 22, sda 21, pir 27, lamp 25
=============  =========  =========================================================================

**petscan** (see :mod:`roles.petscan_core`)

=============  =========  =========================================================================
answer_ms      500        no ``pet.status`` within this: the queued indication
late_ms        10000      a later answer is still shown within this
show_ms        4000       how long an answer / queued indication shows
repeat_ms      3000       the same tag again within this is the same scan
debounce_ms    50         the fouling button ...
button_active  0          ... its level when pressed (0: to ground, with the pull-up)
fouling_gap_s  10         presses within this of the last report are ignored
fouling_tag_s  120        a report names the pet scanned within this
qr_uart        1          the GM65's UART ...
qr_baud        9600
led_invert     false      common-anode RGB LED
volume         50         buzzer duty, 1-50 %
pins                      qr_tx 17, qr_rx 16, r 25, g 26, b 27, buzzer 32, button 33
=============  =========  =========================================================================
"""

CATEGORIES = ("kitchen", "recyclable", "hazardous", "other")

# One row a key: "key kind default lo hi". Kinds: i int, f number, n number or null, c one of
# the "|"-separated options in lo, b bool (default 0/1), p a dimming profile. hi "-": no upper
# bound; default "-": null. Kept as text and parsed at boot: as tuples these tables took
# 12 KB of heap on a 64-bit build (about 6 KB on an ESP32), as text they take 2.
_BIN = """depth i 100 10 300
rim i 8 4 290
full_pct i 85 50 100
empty_pct i 40 0 95
cat c other kitchen|recyclable|hazardous|other -
pings i 5 3 15
sonar_ref_c f 20 -40 60
fire_c f 60 30 150
rise_c_min f 3 0.1 100
rise_min_c f 35 -40 150
tilt_deg i 45 5 90
bat_low_v f 3.45 2 15
bat_hyst_v f 0.15 0 2
hb_wakes i 12 1 10000
hb_s i 3600 60 604800
alarm_s i 60 10 86400
lid_wait_s i 30 1 600
open_max_s i 300 5 3600
settle_s i 3 0 120
db_fill i 5 0 100
db_w f 0.5 0 1000
db_temp f 1 0 100
db_tilt i 10 0 90
db_bat f 0.05 0 5
sonar c a02yyuw a02yyuw|hcsr04|none -
sonar_uart i 2 0 2
hx_scale f 0 -1e9 1e9
hx_offset i 0 -16777216 16777216
rfid b 1 - -
tilt_switch b 1 - -
lid_open i 1 0 1
card_s i 2 0 30"""
_BIN_PINS = "trig=5 echo=18 sonar_tx=17 sonar_rx=16 hx_sck=33 hx_dout=32 ow=4 lid=27 tilt=26 spi_sck=14 spi_mosi=13 spi_miso=19 rfid_cs=15 wake=-"

_STREETLIGHT = """mode c auto auto|on|off -
level i 100 0 100
profile p - - -
lat n - -90 90
lon n - -180 180
tz_min i 480 -720 840
on_lux f 10 0 100000
off_lux f 30 0 100000
dwell_s i 120 0 3600
lux_fail_n i 3 1 1000
boost i 100 0 100
hold_s i 60 1 3600
dim_v f 11.8 0 60
off_v f 11.4 0 60
bat_hyst_v f 0.3 0 10
bat_dwell_s i 60 0 3600
dim_level i 30 0 100
rated_ma i 1000 1 20000
open_ma i 20 0 20000
low_pct i 50 1 100
high_pct i 150 100 1000
short_pct i 200 100 1000
settle_s i 5 0 600
fault_s i 30 0 3600
report_min_s i 60 1 86400
db_lux_pct i 20 0 1000
db_ma i 20 0 20000
db_pv f 0.5 0 100
db_bat f 0.1 0 10
i2c_bus i 0 0 1
bh1750 n 35 35 92
ina_lamp n 64 64 79
ina_pv n 65 64 79
shunt_ohms f 0.1 0.001 10
max_amps f 3.2 0.01 100
pwm_hz i 1000 100 40000
min_level i 1 0 100
tick_ms i 1000 50 60000"""
_STREETLIGHT_PINS = "scl=22 sda=21 pir=27 lamp=25"
_PROFILE = ((0, 100), (240, 60), (420, 40), (600, 80))

_PETSCAN = """answer_ms i 500 50 10000
late_ms i 10000 0 600000
show_ms i 4000 100 60000
repeat_ms i 3000 0 60000
debounce_ms i 50 0 1000
button_active i 0 0 1
fouling_gap_s i 10 0 3600
fouling_tag_s i 120 0 3600
qr_uart i 1 0 2
qr_baud i 9600 1200 115200
led_invert b 0 - -
volume i 50 1 50"""
_PETSCAN_PINS = "qr_tx=17 qr_rx=16 r=25 g=26 b=27 buzzer=32 button=33"


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _default(kind, d):
    if kind == "i":
        return int(d)
    if kind == "b":
        return d == "1"
    if d == "-":
        return None
    if kind in "fn":
        return float(d)
    return d


def _bad(kind, v, lo, hi):
    """What ``v`` must be for a row of ``kind``, or None when it is fine."""
    if kind == "b":
        return None if isinstance(v, bool) else "true or false"
    if kind == "c":
        return None if v in lo.split("|") else "one of " + ", ".join(lo.split("|"))
    if kind == "p":
        from roles.lampcmd import profile_error  # dropped again by release()

        return profile_error(v)
    if kind == "n" and v is None:
        return None
    if kind == "i":
        ok = isinstance(v, int) and not isinstance(v, bool)
        what = "an int "
    else:
        ok = _num(v)
        what = "a number "
    if ok:
        ok = v >= (int(lo) if kind == "i" else float(lo)) and (hi == "-" or v <= (int(hi) if kind == "i" else float(hi)))
    if ok:
        return None
    return what + ("from %s to %s" % (lo, hi) if hi != "-" else ">= " + lo)


def section(raw, name, table, pins):
    """The role section ``raw`` (a dict or None) checked against ``table`` and the pin
    defaults ``pins``; the defaults filled in. ValueError naming the first bad key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError("%s must be an object, got %r" % (name, raw))
    for k in raw:
        if not k.startswith("_") and k != "pins" and (" " in k or not (table.startswith(k + " ") or ("\n%s " % k) in table)):
            raise ValueError("%s: unknown key %s.%s" % (name, name, k))
    # One row at a time, nothing kept but the values: every row's fields alive at once made
    # this the peak of a role's boot (load("bin") needed 16.7 KB free on a 64-bit build, now
    # 9.9 KB). Bad values are reported in table order.
    out = {}
    i = 0
    while i >= 0:
        j = table.find("\n", i)
        f = (table[i:j] if j >= 0 else table[i:]).split()
        i = j + 1 if j >= 0 else -1
        k = f[0]
        if k in raw:
            bad = _bad(f[1], raw[k], f[3], f[4])
            if bad:
                raise ValueError("%s.%s must be %s, got %r" % (name, k, bad, raw[k]))
            out[k] = raw[k]
        else:
            out[k] = _default(f[1], f[2])
    p = {}
    for kv in pins.split():
        k, _, v = kv.partition("=")
        p[k] = None if v == "-" else int(v)
    given = raw.get("pins", {})
    if not isinstance(given, dict):
        raise ValueError("%s.pins must be an object of pins (%s), got %r" % (name, ", ".join(sorted(p)), given))
    for k in given:
        if k not in p:
            raise ValueError("%s: unknown pin %s.pins.%s (known: %s)" % (name, name, k, ", ".join(sorted(p))))
        v = given[k]
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 48):
            raise ValueError("%s.pins.%s must be a GPIO number 0-48 or null, got %r" % (name, k, v))
        p[k] = v
    out["pins"] = p
    return out


def _below(c, name, a, b):
    if c[a] >= c[b]:
        raise ValueError("%s.%s must be below %s.%s (%s), got %s" % (name, a, name, b, c[b], c[a]))


def load(name, raw):
    """The settings of role ``name`` from its config section ``raw``; ValueError naming the key."""
    import gc

    gc.collect()  # after the role's imports: the tables below want contiguous blocks
    if name == "bin":
        c = section(raw, name, _BIN, _BIN_PINS)
        _below(c, name, "empty_pct", "full_pct")
        _below(c, name, "rim", "depth")
    elif name == "streetlight":
        c = section(raw, name, _STREETLIGHT, _STREETLIGHT_PINS)
        if c["profile"] is None:
            c["profile"] = [list(p) for p in _PROFILE]
        _below(c, name, "on_lux", "off_lux")
        _below(c, name, "off_v", "dim_v")
        if (c["lat"] is None) != (c["lon"] is None):
            raise ValueError("streetlight.lat and streetlight.lon go together, got only one")
        c["profile"] = sorted(c["profile"])
        for k in ("bh1750", "ina_lamp", "ina_pv"):
            if c[k] is not None:
                c[k] = int(c[k])
    elif name == "petscan":
        c = section(raw, name, _PETSCAN, _PETSCAN_PINS)
    else:
        raise ValueError("no settings for role %r" % (name,))
    return c


def release():
    """Unload this module (its tables and code) once the settings are loaded: the running node
    has better uses for the heap."""
    import gc

    from roles.common import unload

    unload("roles.lampcmd")
    unload("roles.settings")
    gc.collect()
