"""``linli flash``: the command line, the batch tray and the summaries (docs/flashing.md).

    linli flash --board esp32-devkitc --role bin --site dong-3 --node-id bin-0001 \\
        --gateway 192.168.4.1 --wifi-ssid linli --secrets site.json --keystore /var/lib/linli/keys.db
    linli flash --batch tray.csv --secrets site.json --export keys.txt
    linli flash --import-keys keys.txt --keystore /var/lib/linli/keys.db      # on the gateway

Exit codes: 0 done, 1 a board failed (the message says what to do; a re-run repairs), 2 the
command line, the plan or a batch file is wrong (nothing was touched).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Optional

from linli.flash import job as jobs
from linli.flash import ports, provision
from linli.flash.deploy import MODES
from linli.flash.errors import FlashError, PlanError
from linli.flash.provision import Network, Registry

ROLES = ("bin", "streetlight", "petscan")
REQUIRED = ("board", "role", "site", "node_id")
BATCH_COLUMNS = ("port", "board", "role", "site", "node_id", "firmware", "gateway", "wifi_ssid", "transport",
                 "report_s", "health_s", "new_key", "deploy")
SECRETS_KEYS = ("wifi_ssid", "wifi_password", "broker_password", "gateway")


def register(sub) -> None:
    p = sub.add_parser("flash", help="write, deploy, provision and register a node (docs/flashing.md)",
                       description="Write MicroPython (optional), deploy the role's firmware bundle, provision the "
                                   "node's config and key, and register the key with the gateway. Safe to re-run.")
    p.add_argument("--port", help="serial port (default: the one USB-serial board plugged in)")
    p.add_argument("--board", help="board profile id from hw/boards (e.g. esp32-devkitc)")
    p.add_argument("--role", choices=ROLES)
    p.add_argument("--site", help="the site (community) the node belongs to")
    p.add_argument("--node-id", dest="node_id", help="1-16 chars of A-Z a-z 0-9 . _ -")
    p.add_argument("--firmware", type=Path, metavar="IMAGE", help="write this MicroPython image with esptool first")
    p.add_argument("--erase", action="store_true", help="with --firmware: erase the whole flash first")
    p.add_argument("--bundle", type=Path, help="a `linli firmware build` folder (default: built and cached)")
    p.add_argument("--deploy", choices=MODES, default="auto",
                   help="romfs: the modules as one image in the board's ROMFS partition (they run in place: less "
                        "heap); files: every file on the filesystem; auto (default): romfs when the board has a "
                        "partition big enough, else files")
    p.add_argument("--gateway", metavar="HOST[:PORT]", help="the gateway's MQTT broker")
    p.add_argument("--wifi-ssid", dest="wifi_ssid")
    p.add_argument("--wifi-password", dest="wifi_password", help="(or $LINLI_WIFI_PASSWORD, or --secrets)")
    p.add_argument("--broker-password", dest="broker_password", help="(or $LINLI_BROKER_PASSWORD, or --secrets)")
    p.add_argument("--secrets", type=Path, metavar="FILE",
                   help="JSON with any of wifi_ssid, wifi_password, broker_password, gateway")
    p.add_argument("--transport", choices=("mqtt", "serial"), default=None)
    p.add_argument("--report-s", dest="report_s", type=int, help="the role's report period (s)")
    p.add_argument("--health-s", dest="health_s", type=int, help="health report period (s)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--keystore", type=Path, metavar="PATH", help="the gateway's key store (keys.db)")
    where.add_argument("--export", type=Path, metavar="FILE", help="append the key to this file for the gateway")
    p.add_argument("--new-key", dest="new_key", action="store_true", help="give the node a new key (replaces the registered one)")
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the plan, touch nothing")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask: re-provision boards that are another node")
    p.add_argument("--no-reset", dest="reset", action="store_false",
                   help="leave the board in its REPL afterwards (an ESP32 still resets within 60 s: the watchdog "
                        "the session armed)")
    p.add_argument("--batch", type=Path, metavar="PLAN.CSV", help="one row per node: port,board,role,site,node_id[,...]")
    p.add_argument("--import-keys", dest="import_keys", type=Path, metavar="FILE",
                   help="on the gateway: load an --export file into --keystore")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--tries", type=int, default=3, help="attempts to reach the REPL")
    p.add_argument("--answer-timeout", dest="answer_s", type=float, default=2.0, help="seconds to wait per attempt")
    p.set_defaults(handler=main)


def _err(msg: str) -> None:
    print("linli flash: %s" % msg, file=sys.stderr)


def main(args) -> int:
    try:
        if args.import_keys is not None:
            if args.keystore is None:
                raise PlanError(None, "--import-keys needs --keystore PATH (the gateway's keys.db)")
            n = provision.import_keys(args.import_keys, args.keystore, replace=args.new_key)
            print("imported %d key(s) from %s into %s" % (n, args.import_keys, args.keystore))
            return 0
        base = _secrets(args)
        registry = Registry(args.keystore, args.export)
        if args.batch is not None:
            return _batch(args, base, registry)
        missing = ["--" + k.replace("_", "-") for k in REQUIRED if not getattr(args, k)]
        if missing:
            raise PlanError(None, "missing %s (or use --batch PLAN.CSV)" % ", ".join(missing))
        job = _job(args, base, {})
        if args.dry_run:
            if job.port is None:
                found = ports.candidates()
                job.port = found[0].device if len(found) == 1 else None
            print("\n".join(jobs.plan(job, registry)))
            return 0
        if job.port is None:
            ask = ports.ask_on_terminal if sys.stdin.isatty() and not args.yes else None
            job.port = ports.find_port(ask=ask)
            print("using %s" % job.port)
        res = jobs.run(job, registry, progress_out=sys.stdout, confirm=_confirm if sys.stdin.isatty() else None)
    except FlashError as exc:
        _err(str(exc))
        return exc.exit_code
    print("\n".join(jobs.summary(res)))
    return 0


def _confirm(question: str) -> bool:
    try:
        return input(question + " [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _secrets(args) -> dict:
    """Credentials: --secrets FILE, then the environment, then flags (later ones win)."""
    out: dict = {}
    if args.secrets is not None:
        try:
            data = json.loads(args.secrets.read_text())
        except (OSError, ValueError) as exc:
            raise PlanError(str(args.secrets), "cannot read it as JSON: %s" % exc) from None
        if not isinstance(data, dict):
            raise PlanError(str(args.secrets), "must hold a JSON object")
        for k, v in data.items():
            if k not in SECRETS_KEYS:
                raise PlanError(str(args.secrets), "unknown key %s (known: %s)" % (k, ", ".join(SECRETS_KEYS)))
            if not isinstance(v, str):
                raise PlanError(str(args.secrets), "%s must be a string" % k)
            out[k] = v
    for k, env in (("wifi_password", "LINLI_WIFI_PASSWORD"), ("broker_password", "LINLI_BROKER_PASSWORD")):
        if os.environ.get(env):
            out[k] = os.environ[env]
    for k in SECRETS_KEYS:
        if getattr(args, k, None):
            out[k] = getattr(args, k)
    return out


def _gateway(text: Optional[str], where: str) -> tuple[Optional[str], Optional[int]]:
    if not text:
        return None, None
    host, sep, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if not sep:
        return text, None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise PlanError(where, "gateway %r: the port must be a number 1-65535" % text)
    return host, int(port)


def _int(v, name: str, where: str) -> Optional[int]:
    if v in (None, ""):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        raise PlanError(where, "%s must be a whole number of seconds, got %r" % (name, v)) from None


def _job(args, base: dict, row: dict, where: str = "command line") -> jobs.Job:
    """A Job from the flags, overridden by one batch row's non-empty cells."""
    def get(name):
        v = row.get(name)
        return v if v not in (None, "") else getattr(args, name, None)

    role = get("role")
    if role not in ROLES:
        raise PlanError(where, "role %r: use one of %s" % (role, ", ".join(ROLES)))
    host, port = _gateway(row.get("gateway") or base.get("gateway"), where)
    transport = get("transport") or "mqtt"
    if transport not in ("mqtt", "serial"):
        raise PlanError(where, "transport %r: use mqtt or serial" % transport)
    net = Network(host=host, port=port, wifi_ssid=row.get("wifi_ssid") or base.get("wifi_ssid"),
                  wifi_password=base.get("wifi_password", ""), broker_password=base.get("broker_password", ""),
                  transport=transport)
    new_key = str(row.get("new_key", "")).strip().lower() in ("1", "yes", "true", "y") or args.new_key
    mode = get("deploy") or "auto"
    if mode not in MODES:
        raise PlanError(where, "deploy %r: use one of %s" % (mode, ", ".join(MODES)))
    firmware = get("firmware")
    return jobs.Job(
        board=get("board"), role=role, site=get("site"), node_id=get("node_id"), port=get("port"),
        firmware=Path(firmware) if firmware else None, erase=args.erase, bundle=args.bundle, net=net,
        report_s=_int(get("report_s"), "report_s", where), health_s=_int(get("health_s"), "health_s", where),
        new_key=new_key, yes=args.yes, reset=args.reset, baud=args.baud, tries=args.tries, answer_s=args.answer_s,
        deploy_mode=mode,
    )


def read_batch(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) of a batch file; PlanError naming the file, line and column otherwise."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise PlanError(str(path), "cannot read: %s" % exc.strerror) from None
    numbered = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader([ln for _, ln in numbered])
    cols = [c.strip() for c in (reader.fieldnames or [])]
    unknown = [c for c in cols if c not in BATCH_COLUMNS]
    if unknown:
        raise PlanError(str(path), "unknown column %s (known: %s)" % (unknown[0], ", ".join(BATCH_COLUMNS)))
    need = [c for c in ("port",) + REQUIRED if c not in cols]
    if need:
        raise PlanError(str(path), "missing column %s (a header line: %s)" % (need[0], ",".join(("port",) + REQUIRED)))
    rows = []
    for row in reader:  # line_num: lines read so far, so the row's last line in the file
        if None in row:
            raise PlanError(str(path), "line %d: more cells than columns" % numbered[reader.line_num - 1][0])
        rows.append((numbered[reader.line_num - 1][0], {(k or "").strip(): (v or "").strip() for k, v in row.items()}))
    if not rows:
        raise PlanError(str(path), "no rows below the header")
    return rows


def _batch(args, base: dict, registry: Registry) -> int:
    rows = read_batch(args.batch)
    results = []  # (node, port, ok, outcome or error text)
    for n, (line, row) in enumerate(rows, 1):
        where = "%s line %d" % (args.batch, line)
        print("== %d/%d: %s on %s" % (n, len(rows), row.get("node_id") or "?", row.get("port") or "?"))
        try:
            job = _job(args, base, row, where)
            for k in REQUIRED + ("port",):
                if not getattr(job, k):
                    raise PlanError(where, "the %s cell is empty" % k)
            if args.dry_run:
                print("\n".join(jobs.plan(job, registry)))
                results.append((job.node_id, job.port, True, None))
                continue
            res = jobs.run(job, registry, progress_out=sys.stdout)
            print("\n".join(jobs.summary(res)))
            results.append((job.node_id, job.port, True, res))
        except FlashError as exc:  # one board's failure does not stop the tray
            _err(str(exc))
            results.append((row.get("node_id") or "?", row.get("port") or "?", False, str(exc)))
    print("\n".join(batch_table(results)))
    return 0 if all(ok for _, _, ok, _ in results) else 1


def batch_table(results) -> list[str]:
    """The tray's summary: one line per node."""
    row = "%-16s %-22s %-7s %-6s %7s %7s  %-8s  %s"
    out = ["", row % ("node", "port", "result", "deploy", "written", "same", "key", "error / next")]
    for node, port, ok, r in results:
        if ok and r is not None:
            d = r.deploy
            out.append(row % (node, port, "ok", d.mode, len(d.written) + len(r.config_written) + bool(d.image_bytes),
                              len(d.skipped) + len(r.config_skipped), r.key_fp, ""))
        elif ok:
            out.append(row % (node, port, "planned", "-", "-", "-", "-", ""))
        else:
            out.append(row % (node, port, "FAILED", "-", "-", "-", "-", r))
    failed = sum(1 for _, _, ok, _ in results if not ok)
    out.append("%d of %d node(s) done%s" % (len(results) - failed, len(results),
                                            "; fix the failed ones and run the same batch again (done ones are skipped quickly)" if failed else ""))
    return out
