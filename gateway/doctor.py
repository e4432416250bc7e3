"""`linli doctor`: the gateway's self-check for a technician on site.

Each check returns a verdict (``pass``, ``warn``, ``fail``, ``skip``), a one-line finding and the
fix in one sentence. The checks (in order): config, key store, local broker, upstream broker,
serial ports, cameras, model, disk, outbox backlog, clock, CPU temperature / throttling, GPIO.
The exit code is 1 when any check fails, 0 otherwise; ``--json`` prints a list of results.

System probes (disk usage, files under /sys and /proc, commands such as ``timedatectl`` and
``vcgencmd``) go through :class:`Probes`, so tests can simulate a nearly full disk or a hot Pi.

>>> results = run_checks(None, only=["clock"], probes=Probes(run=lambda cmd, timeout: None))
>>> [(r.check, r.status) for r in results]
[('clock', 'skip')]
>>> # linli doctor --config gateway.toml --json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
_RANK = {SKIP: 0, PASS: 1, WARN: 2, FAIL: 3}


@dataclass
class Result:
    """One check's verdict: ``check`` is its name (``camera:gate`` for one of several)."""

    check: str
    status: str
    finding: str
    fix: str = ""
    data: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def worst(results: list[Result]) -> str:
    """The worst verdict of ``results`` (``skip`` when there are none).

    >>> worst([Result("a", PASS, ""), Result("b", WARN, "")])
    'warn'
    """
    return max((r.status for r in results), key=_RANK.__getitem__, default=SKIP)


def _run_command(cmd: list[str], timeout: float) -> Optional[subprocess.CompletedProcess]:
    """Run a system command; None when it is not installed."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(cmd, 124, "", str(exc))


def _read_text(path: str) -> Optional[str]:
    """A small system file's text; None when it is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode("utf-8", "replace")
    except OSError:
        return None


@dataclass
class Probes:
    """The seams to the system; replace any of them in tests.

    ``run(cmd, timeout)`` returns a ``CompletedProcess`` or None when the command is missing.
    """

    disk_usage: Callable[[str], Any] = shutil.disk_usage
    read_text: Callable[[str], Optional[str]] = _read_text
    run: Callable[[list[str], float], Optional[subprocess.CompletedProcess]] = _run_command
    now: Callable[[], float] = time.time
    pid: int = field(default_factory=os.getpid)


@dataclass
class Options:
    """Thresholds and timeouts (the command-line flags)."""

    timeout: float = 5.0  # per network check
    camera_timeout: float = 10.0  # a frame within this many seconds
    status_max_age: float = 60.0  # cameras.json older than this: the gateway is not running
    disk_warn_gib: float = 1.0
    disk_warn_pct: float = 10.0
    disk_fail_mib: float = 200.0
    cert_warn_days: float = 30.0
    backlog_warn_s: float = 600.0
    temp_warn_c: float = 70.0
    temp_fail_c: float = 80.0


@dataclass
class Context:
    """What every check gets: the config (None if it did not load), options, probes."""

    config_path: Optional[str]
    cfg: Any
    options: Options
    probes: Probes
    config_error: Optional[str] = None


# name -> "module:function"; each function takes a Context and returns a list of Results.
CHECKS: dict[str, str] = {
    "config": "linli.doctor_checks:check_config",
    "keystore": "linli.doctor_checks:check_keystore",
    "local-broker": "linli.doctor_mqtt:check_local_broker",
    "upstream-broker": "linli.doctor_mqtt:check_upstream_broker",
    "serial": "linli.doctor_checks:check_serial",
    "camera": "linli.doctor_vision:check_cameras",
    "model": "linli.doctor_vision:check_model",
    "disk": "linli.doctor_checks:check_disk",
    "outbox": "linli.doctor_checks:check_outbox",
    "clock": "linli.doctor_checks:check_clock",
    "thermal": "linli.doctor_checks:check_thermal",
    "gpio": "linli.doctor_checks:check_gpio",
}


def load_config(path: Optional[str]):
    """(cfg, error text): the config, or why it did not load."""
    if path is None:
        return None, "no --config given"
    from linli.config import Config
    from linli.errors import ConfigError

    try:
        return Config.load(path), None
    except ConfigError as exc:
        return None, str(exc)


def run_checks(config_path: Optional[str], *, only: Optional[list[str]] = None, options: Optional[Options] = None,
               probes: Optional[Probes] = None, cfg: Any = None) -> list[Result]:
    """Run the checks (all, or those named in ``only``) and return their results in order.

    ``cfg`` may be given instead of loading ``config_path`` (the panel passes the running
    gateway's). A check that crashes is reported as a ``fail`` naming the exception; the other
    checks still run.
    """
    import importlib

    unknown = [n for n in only or () if n not in CHECKS]
    if unknown:
        raise ValueError("unknown check(s) %s (known: %s)" % (", ".join(unknown), ", ".join(CHECKS)))
    err = None
    if cfg is None:
        cfg, err = load_config(config_path)
    ctx = Context(config_path, cfg, options or Options(), probes or Probes(), err)
    results: list[Result] = []
    for name, spec in CHECKS.items():
        if only and name not in only:
            continue
        module, _, fn = spec.partition(":")
        try:
            results.extend(getattr(importlib.import_module(module), fn)(ctx))
        except Exception as exc:  # one broken check must not hide the others
            results.append(Result(name, FAIL, "the check itself crashed: %s: %s" % (type(exc).__name__, exc),
                                  "report this as a linli bug with the output of `linli doctor --json`"))
    return results


_MARK = {PASS: "PASS", WARN: "WARN", FAIL: "FAIL", SKIP: "skip"}


def format_text(results: list[Result]) -> str:
    """The report for a person: one line per check, the fix under each warning or failure."""
    width = max([len(r.check) for r in results] + [8])
    lines = []
    for r in results:
        lines.append("%s  %-*s  %s" % (_MARK[r.status], width, r.check, r.finding))
        if r.fix and r.status in (WARN, FAIL):
            lines.append("      %-*s  fix: %s" % (width, "", r.fix))
    counts = {s: sum(r.status == s for r in results) for s in (PASS, WARN, FAIL, SKIP)}
    lines.append("%d pass, %d warn, %d fail, %d skipped" % (counts[PASS], counts[WARN], counts[FAIL], counts[SKIP]))
    return "\n".join(lines)


def exit_code(results: list[Result]) -> int:
    return 1 if any(r.status == FAIL for r in results) else 0


def write_report(results: list[Result], data_dir: Path, now: Optional[float] = None) -> Path:
    """Write ``data_dir/diagnostics-<unix ts>.json`` (the panel's diagnostics mode)."""
    now = time.time() if now is None else now
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / ("diagnostics-%d.json" % now)
    path.write_text(json.dumps({"time": now, "worst": worst(results), "results": [r.as_dict() for r in results]}, indent=1))
    return path


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check the gateway and say what to fix")
    p.add_argument("--config", "-c", default="gateway.toml", help="gateway.toml (default: ./gateway.toml)")
    p.add_argument("--json", action="store_true", help="print a JSON list of results")
    p.add_argument("--timeout", type=float, default=Options.timeout, metavar="S", help="seconds per network check (default %(default)s)")
    p.add_argument("--camera-timeout", type=float, default=Options.camera_timeout, metavar="S", help="a camera must give a frame within S seconds (default %(default)s)")
    p.add_argument("--only", metavar="CHECK,...", help="run only these checks: " + ", ".join(CHECKS))
    p.add_argument("--disk-warn-gib", type=float, default=Options.disk_warn_gib, metavar="GIB")
    p.add_argument("--disk-warn-pct", type=float, default=Options.disk_warn_pct, metavar="PCT")
    p.add_argument("--disk-fail-mib", type=float, default=Options.disk_fail_mib, metavar="MIB")
    p.add_argument("--cert-warn-days", type=float, default=Options.cert_warn_days, metavar="DAYS")
    p.set_defaults(handler=_main)


def _main(args) -> int:
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    opts = Options(timeout=args.timeout, camera_timeout=args.camera_timeout, disk_warn_gib=args.disk_warn_gib,
                   disk_warn_pct=args.disk_warn_pct, disk_fail_mib=args.disk_fail_mib, cert_warn_days=args.cert_warn_days)
    try:
        results = run_checks(args.config, only=only, options=opts)
    except ValueError as exc:
        print("linli doctor: %s" % exc, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=1))
    else:
        print(format_text(results))
    return exit_code(results)
