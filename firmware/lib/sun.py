"""Sunrise and sunset from latitude, longitude and date (NOAA's solar position equations).

The streetlight's fallback when its light sensor fails: the astronomical schedule::

    import sun
    rise, set_ = sun.rise_set(31.23, 121.47, days)    # Unix seconds; days since 1970-01-01
    dark = sun.is_night(31.23, 121.47, t)             # t: Unix seconds (UTC)
    dusk = sun.last_sunset(31.23, 121.47, t)          # when tonight's night began

Accurate to about a minute between latitudes +-65 (tested against NOAA's equations in
double precision in CPython, ``tests/test_sun.py``). Everything is computed from days since
J2000.0 (small numbers), never from a Julian day (2.46e6), so the ESP32's single-precision
floats lose no more than a second or so. Latitude north and longitude east are positive.

"Sunrise" is the upper limb on the horizon with standard refraction (zenith 90.833 deg);
pass ``zenith=96`` for civil twilight. Where the sun does not rise or set that day (polar
night or midnight sun) ``rise_set`` still returns a pair: a zero-length day (both at solar
noon) or the whole solar day (see :func:`solar_day`), so :func:`is_night` needs no special
case.
"""

from math import acos, asin, cos, radians, degrees, sin, tan

from micropython import const

_DAY = const(86400)
_J2000_DAYS = const(10957)  # 2000-01-01 is day 10957 after 1970-01-01; J2000.0 is at its noon


def _sun(d):
    """(declination in radians, equation of time in minutes) at ``d`` days after J2000.0."""
    # NOAA Solar Calculator (Meeus, "Astronomical Algorithms", ch. 25), with the century
    # T = d / 36525 folded into the coefficients so the big terms stay small floats.
    t = d / 36525
    l0 = radians((280.46646 + 0.98564736629 * d + 0.0003032 * t * t) % 360)
    m = radians((357.52911 + 0.98560028169 * d - 0.0001537 * t * t) % 360)
    e = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)
    c = (
        sin(m) * (1.914602 - t * (0.004817 + 0.000014 * t))
        + sin(2 * m) * (0.019993 - 0.000101 * t)
        + sin(3 * m) * 0.000289
    )
    omega = radians(125.04 - 1934.136 * t)
    lam = radians(degrees(l0) + c - 0.00569 - 0.00478 * sin(omega))
    eps0 = 23 + (26 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60) / 60
    eps = radians(eps0 + 0.00256 * cos(omega))
    decl = asin(sin(eps) * sin(lam))
    y = tan(eps / 2)
    y *= y
    eot = 4 * degrees(
        y * sin(2 * l0)
        - 2 * e * sin(m)
        + 4 * e * y * sin(m) * cos(2 * l0)
        - 0.5 * y * y * sin(4 * l0)
        - 1.25 * e * e * sin(2 * m)
    )
    return decl, eot


def _event(lat, lon, day, minutes, sign, zenith):
    """Minutes after 00:00 UTC of ``day`` of sunrise (sign -1) or sunset (+1), computed with
    the sun's position at ``minutes``; None when the sun stays up all day (midnight sun), solar
    noon when it stays down (polar night: the day has no length)."""
    decl, eot = _sun(day - _J2000_DAYS + (minutes - 720) / 1440)
    phi = radians(lat)
    x = cos(radians(zenith)) / (cos(phi) * cos(decl)) - tan(phi) * tan(decl)
    noon = 720 - 4 * lon - eot
    if x >= 1:
        return noon
    if x <= -1:
        return None
    return noon + sign * 4 * degrees(acos(x))


def rise_set(lat, lon, day, zenith=90.833):
    """(sunrise, sunset) in Unix seconds for the solar day ``day`` (days since 1970-01-01).

    The solar day is the one whose local solar noon falls on that UTC date, so at 121 deg E
    the sunrise comes out on the evening before (UTC): that is the local morning.
    """
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError("latitude/longitude out of range: %r, %r" % (lat, lon))
    noon = 720 - 4 * lon
    # Two passes: first with the sun's position at noon, then at the event's own time.
    rise = _event(lat, lon, day, noon, -1, zenith)
    sset = _event(lat, lon, day, noon, 1, zenith)
    if rise is not None:
        rise = _event(lat, lon, day, rise, -1, zenith)
        sset = _event(lat, lon, day, sset, 1, zenith)
    if rise is None or sset is None:
        # Midnight sun: day from the solar day's first second to its last (see solar_day()).
        start = day * _DAY - int(lon * 240)
        return start, start + _DAY
    base = day * _DAY
    return base + int(rise * 60 + 0.5), base + int(sset * 60 + 0.5)


def solar_day(lon, t):
    """The solar day (days since 1970-01-01) whose local solar midnight-to-midnight holds ``t``."""
    # Local mean solar time is UTC + lon/15 hours.
    return (t + int(lon * 240)) // _DAY


def is_night(lat, lon, t, zenith=90.833):
    """True when the sun is below the horizon at Unix time ``t``."""
    rise, sset = rise_set(lat, lon, solar_day(lon, t), zenith)
    return t < rise or t >= sset


def last_sunset(lat, lon, t, zenith=90.833):
    """The last sunset at or before ``t`` (Unix seconds): when the current night began."""
    day = solar_day(lon, t)
    sset = rise_set(lat, lon, day, zenith)[1]
    if t >= sset:
        return sset
    return rise_set(lat, lon, day - 1, zenith)[1]


def date(days):
    """(year, month, day) of ``days`` since 1970-01-01 (proleptic Gregorian, any epoch-safe int)."""
    # Howard Hinnant's civil_from_days: integer only, no time module (whose epoch differs
    # between ports).
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if m <= 2 else 0), m, d


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a date (the inverse of :func:`date`)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468
