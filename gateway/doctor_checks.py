"""`linli doctor`'s checks of the gateway box itself: config, key store, serial ports, disk,
outbox backlog, clock, CPU temperature and GPIO (the broker and camera checks have their own
modules). Each takes a :class:`linli.doctor.Context` and returns a list of results.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from pathlib import Path
from typing import Optional

from linli.doctor import FAIL, PASS, SKIP, WARN, Context, Result

_MIB = 1024 * 1024
_GIB = 1024 * _MIB


def no_config(name: str, ctx: Context) -> list[Result]:
    return [Result(name, SKIP, "not checked: the config did not load", "fix the config first (see the config check)")]


def _ro(path: Path) -> sqlite3.Connection:
    """Open an SQLite file read-only (never creates it, never takes a write lock)."""
    return sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5.0)


# -- config ------------------------------------------------------------------------------------
def check_config(ctx: Context) -> list[Result]:
    if ctx.cfg is None:
        return [Result("config", FAIL, ctx.config_error or "no config", "correct that key in the file (docs/config.md lists every key), then run linli doctor again")]
    cfg = ctx.cfg
    cams = len(getattr(cfg, "cameras", ()) or ())
    return [Result("config", PASS, "%s loads: site %s, gateway %s, %d serial port(s), %d camera(s)" % (cfg.file, cfg.gateway.site, cfg.gateway.id, len(cfg.serial), cams),
                   data={"file": cfg.file, "data_dir": str(cfg.gateway.data_dir)})]


# -- key store ---------------------------------------------------------------------------------
def check_keystore(ctx: Context) -> list[Result]:
    if ctx.cfg is None:
        return no_config("keystore", ctx)
    path = ctx.cfg.gateway.data_dir / "keys.db"
    if not path.exists():
        return [Result("keystore", WARN, "no key store yet at %s: no node is registered, every frame will be refused" % path,
                       "provision the nodes with `linli flash` (or import their export file) on this gateway")]
    try:
        with open(path, "rb"):
            pass
        db = _ro(path)
        try:
            n = db.execute("SELECT count(*) FROM node_keys WHERE revoked=0").fetchone()[0]
        finally:
            db.close()
    except PermissionError:
        return [Result("keystore", FAIL, "%s is not readable by this user" % path, "run linli doctor as the gateway's user (or with sudo)")]
    except sqlite3.DatabaseError as exc:
        return [Result("keystore", FAIL, "%s is unreadable or corrupt: %s" % (path, exc),
                       "restore keys.db from a backup, or move it away and re-provision every node with `linli flash`")]
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return [Result("keystore", WARN, "%s holds %d node key(s) but is readable by others (mode %o)" % (path, n, mode),
                       "chmod 600 %s: whoever reads it can impersonate every node" % path, {"nodes": n})]
    if n == 0:
        return [Result("keystore", WARN, "%s opens but holds no node keys" % path, "provision the nodes with `linli flash`", {"nodes": 0})]
    return [Result("keystore", PASS, "%s opens: %d node(s) registered" % (path, n), data={"nodes": n})]


# -- serial ports ------------------------------------------------------------------------------
def _holders(device: str, own_pid: int) -> list[tuple[int, str]]:
    """Processes (pid, command line) other than ours with ``device`` open (what fuser does)."""
    try:
        target = os.path.realpath(device)
    except OSError:
        return []
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == own_pid:
            continue
        fd_dir = "/proc/%s/fd" % pid
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(os.path.join(fd_dir, fd)) == target:
                    with open("/proc/%s/cmdline" % pid, "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
                    out.append((int(pid), cmd))
                    break
            except OSError:
                continue
    return out


def gateway_pids(own_pid: int) -> list[int]:
    """Process ids of running `linli run` gateways (other than ours)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == own_pid:
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if _is_gateway(cmd):
            out.append(int(pid))
    return out


def _is_gateway(cmd: str) -> bool:
    words = cmd.split()
    return any(w.endswith("linli") or w in ("linli.cli", "linli.service") for w in words) and "run" in words


def check_serial(ctx: Context) -> list[Result]:
    if ctx.cfg is None:
        return no_config("serial", ctx)
    if not ctx.cfg.serial:
        return [Result("serial", SKIP, "no serial ports configured")]
    import serial

    out = []
    for i, sec in enumerate(ctx.cfg.serial):
        name = "serial:%s" % (sec.name or sec.port)
        key = "serial[%d].port" % i
        is_url = "://" in sec.port
        holders = [] if is_url else _holders(sec.port, ctx.probes.pid)
        gw = [h for h in holders if _is_gateway(h[1])]
        if gw:
            out.append(Result(name, PASS, "%s is open in the running gateway (pid %d)" % (sec.port, gw[0][0])))
            continue
        if holders:
            pid, cmd = holders[0]
            out.append(Result(name, FAIL, "%s is busy: held by pid %d (%s)" % (sec.port, pid, cmd[:60]),
                              "stop that program (often ModemManager, a serial console or screen), then restart the gateway"))
            continue
        if not is_url and not os.path.exists(sec.port):
            out.append(Result(name, FAIL, "%s is missing (no such device)" % sec.port,
                              "plug the adapter in, or set %s in %s to its name under /dev/serial/by-id/" % (key, ctx.cfg.file)))
            continue
        try:
            port = serial.serial_for_url(sec.port, baudrate=sec.baudrate, timeout=0, exclusive=None if is_url else True)
            port.close()
        except (serial.SerialException, OSError, ValueError) as exc:
            text = str(exc)
            code = getattr(exc, "errno", None)
            if code == errno.EACCES or "Permission denied" in text:
                out.append(Result(name, FAIL, "%s: permission denied" % sec.port, "add the gateway's user to the dialout group (sudo usermod -aG dialout USER) and log in again"))
            elif code == errno.EBUSY or "lock" in text.lower() or "busy" in text.lower():
                out.append(Result(name, FAIL, "%s is busy (%s)" % (sec.port, text), "stop the program holding the port, then restart the gateway"))
            else:
                out.append(Result(name, FAIL, "%s cannot be opened: %s" % (sec.port, text), "check %s in %s and the adapter's cable" % (key, ctx.cfg.file)))
            continue
        out.append(Result(name, PASS, "%s opens at %d baud" % (sec.port, sec.baudrate)))
    return out


# -- disk and outbox ---------------------------------------------------------------------------
def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(ctx: Context) -> list[Result]:
    if ctx.cfg is None:
        return no_config("disk", ctx)
    o = ctx.options
    where = _existing(ctx.cfg.gateway.data_dir)
    u = ctx.probes.disk_usage(str(where))
    free, total = u.free, u.total
    pct = 100.0 * free / total if total else 0.0
    finding = "%s: %.2f GiB free of %.1f GiB (%.0f %%)" % (ctx.cfg.gateway.data_dir, free / _GIB, total / _GIB, pct)
    data = {"free": free, "total": total, "free_pct": round(pct, 1)}
    fix = "free space on that file system (old logs, snapshots, journalctl --vacuum-size=100M) or move data_dir to a bigger disk"
    if free < o.disk_fail_mib * _MIB:
        return [Result("disk", FAIL, finding + ", below %g MiB: the outbox and key store cannot be written safely" % o.disk_fail_mib, fix, data)]
    if free < o.disk_warn_gib * _GIB or pct < o.disk_warn_pct:
        return [Result("disk", WARN, finding + ", below %g GiB or %g %%" % (o.disk_warn_gib, o.disk_warn_pct), fix, data)]
    return [Result("disk", PASS, finding, data=data)]


def _age(s: float) -> str:
    if s < 120:
        return "%d s" % s
    if s < 7200:
        return "%d min" % (s // 60)
    if s < 172800:
        return "%.1f h" % (s / 3600)
    return "%.1f days" % (s / 86400)


def check_outbox(ctx: Context) -> list[Result]:
    if ctx.cfg is None:
        return no_config("outbox", ctx)
    path = ctx.cfg.db_path
    if not path.exists():
        return [Result("outbox", SKIP, "no outbox yet (%s): the gateway has not run" % path)]
    try:
        db = _ro(path)
        try:
            n, oldest = db.execute("SELECT count(*), min(stored) FROM outbox_events").fetchone()
            dropped = dict(db.execute("SELECT key, value FROM outbox_meta")).get("dropped", 0)
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return [Result("outbox", FAIL, "%s cannot be read: %s" % (path, exc), "stop the gateway, move gateway.db away (events in it are lost) and start it again")]
    data = {"pending": n, "oldest_age_s": None, "dropped": int(dropped or 0)}
    if not n:
        return [Result("outbox", PASS, "no events waiting upstream (%d dropped since install)" % data["dropped"], data=data)]
    age = max(0.0, ctx.probes.now() - oldest)
    data["oldest_age_s"] = round(age, 1)
    finding = "%d event(s) waiting upstream, the oldest for %s" % (n, _age(age))
    max_events = ctx.cfg.outbox.max_events
    if n >= max_events:
        return [Result("outbox", FAIL, finding + ": the outbox is full and drops telemetry", "get the upstream connection working (see upstream-broker); the backlog is sent as soon as it is", data)]
    if age > ctx.options.backlog_warn_s:
        return [Result("outbox", WARN, finding, "check the upstream connection (see upstream-broker); nothing is lost, events are sent when it returns", data)]
    return [Result("outbox", PASS, finding, data=data)]


# -- clock -------------------------------------------------------------------------------------
def check_clock(ctx: Context) -> list[Result]:
    run, t = ctx.probes.run, ctx.options.timeout
    if ctx.probes.now() < 1704067200:  # 2024-01-01: an RTC-less Pi that never synced
        return [Result("clock", FAIL, "the system clock says %s: it was never set" % time_text(ctx.probes.now()),
                       "connect the gateway to a network with NTP (or set it with timedatectl set-time) before anything else")]
    tried = []
    r = run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], t)
    if r is not None and r.returncode == 0 and r.stdout.strip() in ("yes", "no"):
        if r.stdout.strip() == "yes":
            return [Result("clock", PASS, "synchronised (timedatectl)")]
        return [Result("clock", WARN, "not synchronised (timedatectl says NTPSynchronized=no)",
                       "check the network and NTP: sudo timedatectl set-ntp true; event times and TLS need a correct clock")]
    tried.append("timedatectl " + ("not installed" if r is None else "failed: %s" % ((r.stderr or r.stdout).strip().splitlines() or ["?"])[0][:70]))
    r = run(["chronyc", "tracking"], t)
    if r is not None and r.returncode == 0:
        if "Normal" in r.stdout and "Leap status" in r.stdout:
            return [Result("clock", PASS, "synchronised (chronyc tracking)")]
        return [Result("clock", WARN, "not synchronised (chronyc tracking: %s)" % _line(r.stdout, "Leap status"), "check the network and chrony's sources (chronyc sources)")]
    tried.append("chronyc " + ("not installed" if r is None else "failed"))
    r = run(["ntpstat"], t)
    if r is not None:
        if r.returncode == 0:
            return [Result("clock", PASS, "synchronised (ntpstat)")]
        if r.returncode == 1:
            return [Result("clock", WARN, "not synchronised (ntpstat)", "check the network and ntpd's servers (ntpq -p)")]
    tried.append("ntpstat " + ("not installed" if r is None else "failed"))
    return [Result("clock", SKIP, "cannot tell whether the clock is synchronised: " + "; ".join(tried))]


def _line(text: str, key: str) -> str:
    for line in text.splitlines():
        if line.startswith(key):
            return line.split(":", 1)[-1].strip()
    return "?"


def time_text(t: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# -- CPU temperature and throttling ------------------------------------------------------------
def pi_model(ctx: Context) -> Optional[str]:
    """The Raspberry Pi model string, None off a Pi."""
    for p in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        m = ctx.probes.read_text(p)
        if m and "Raspberry Pi" in m:
            return m.strip("\0\n ")
    return None


# vcgencmd get_throttled bits (raspberrypi.com/documentation/computers/os.html#get_throttled)
_NOW = {0: "under-voltage", 1: "ARM frequency capped", 2: "throttled", 3: "soft temperature limit"}


def check_thermal(ctx: Context) -> list[Result]:
    model = pi_model(ctx)
    if model is None:
        return [Result("thermal", SKIP, "not a Raspberry Pi (no Raspberry Pi model in the device tree)")]
    o = ctx.options
    out = []
    raw = ctx.probes.read_text("/sys/class/thermal/thermal_zone0/temp")
    try:
        temp = int(raw.strip()) / 1000.0 if raw else None
    except ValueError:
        temp = None
    fix_hot = "give the Pi air: a heatsink or fan, out of direct sun, a vented enclosure"
    if temp is None:
        out.append(Result("thermal", SKIP, "%s: no CPU temperature at /sys/class/thermal/thermal_zone0/temp" % model))
    elif temp >= o.temp_fail_c:
        out.append(Result("thermal", FAIL, "%s: CPU at %.1f °C (throttles at 80-85 °C)" % (model, temp), fix_hot, {"temp_c": temp}))
    elif temp >= o.temp_warn_c:
        out.append(Result("thermal", WARN, "%s: CPU at %.1f °C, close to throttling" % (model, temp), fix_hot, {"temp_c": temp}))
    else:
        out.append(Result("thermal", PASS, "%s: CPU at %.1f °C" % (model, temp), data={"temp_c": temp}))
    r = ctx.probes.run(["vcgencmd", "get_throttled"], o.timeout)
    if r is None or r.returncode != 0 or "=" not in r.stdout:
        out.append(Result("throttling", SKIP, "vcgencmd is not available (install libraspberrypi-bin to read throttling)"))
        return out
    try:
        bits = int(r.stdout.strip().split("=", 1)[1], 16)
    except ValueError:
        out.append(Result("throttling", SKIP, "vcgencmd said %r" % r.stdout.strip()))
        return out
    now = [w for b, w in _NOW.items() if bits & (1 << b)]
    past = [w for b, w in _NOW.items() if bits & (1 << (b + 16))]
    fix = "use the official 5.1 V / 3 A (Pi 4) or 5 A (Pi 5) supply and a short thick cable" if "under-voltage" in now + past else fix_hot
    if now:
        out.append(Result("throttling", FAIL, "now: %s (get_throttled=0x%x)" % (", ".join(now), bits), fix, {"bits": bits}))
    elif past:
        out.append(Result("throttling", WARN, "since boot: %s (get_throttled=0x%x)" % (", ".join(past), bits), fix, {"bits": bits}))
    else:
        out.append(Result("throttling", PASS, "no under-voltage or throttling since boot", data={"bits": bits}))
    return out


# -- GPIO --------------------------------------------------------------------------------------
def panel_pins(cfg) -> tuple[Optional[dict], str]:
    """(pins, why not): the panel profile's pins, or None and the reason."""
    panel = getattr(cfg, "panel", None)
    if panel is None or not getattr(panel, "enabled", False):
        return None, "the GPIO panel is not enabled ([panel] enabled = false or absent)"
    try:
        from linli.hw import load_gateway_profile
    except ImportError as exc:
        return None, "cannot load board profiles: %s" % exc
    profile = load_gateway_profile(getattr(panel, "profile", "raspberry-pi"))
    return profile, ""


def check_gpio(ctx: Context) -> list[Result]:
    if ctx.cfg is None:
        return no_config("gpio", ctx)
    try:
        profile, why = panel_pins(ctx.cfg)
    except Exception as exc:  # a bad profile name or file: the hw loader says which
        return [Result("gpio", FAIL, "panel profile: %s" % exc, "set [panel] profile to a gateway profile under hw/ (see `linli hw`)")]
    if profile is None:
        return [Result("gpio", SKIP, why)]
    from linli.panel import Panel

    model = pi_model(ctx)
    if model is not None:
        gw = gateway_pids(ctx.probes.pid)
        if gw:  # its panel holds the pins; claiming them here would fail (or steal them)
            return [Result("gpio", PASS, "panel pins %s are held by the running gateway (pid %d)" % (profile.pins, gw[0]), data={"pins": dict(profile.pins)})]
    factory = None
    if model is None:
        from gpiozero.pins.mock import MockFactory

        factory = MockFactory()
    try:
        panel = Panel.from_profile(profile, pin_factory=factory, start=False)
    except Exception as exc:  # gpiozero: GPIOPinInUse, BadPinFactory, PinInvalidPin ...
        return [Result("gpio", FAIL, "cannot claim the panel pins %s: %s: %s" % (profile.pins, type(exc).__name__, exc),
                       "stop whatever holds those pins (another service, a leftover gpio export) or fix the pin numbers in the hw/ profile")]
    panel.close()
    where = "mock pins: not a Raspberry Pi" if model is None else model
    pins = ", ".join("%s GPIO%s" % kv for kv in sorted(profile.pins.items()))
    return [Result("gpio", PASS, "panel pins claimed (%s): %s" % (where, pins), data={"pins": dict(profile.pins), "mock": model is None})]
