"""One node, start to finish: check the plan, write the image, deploy, provision, register.

Everything that can be checked without the board is checked first (board profile, config as
the firmware will validate it, image header, bundle), so a typo never leaves a board
half-done. Then, on the board: image (optional), raw REPL, the bundle, ``config.json`` and
``secrets.json``, the key at the gateway, a reset::

    job = Job(board="esp32-devkitc", role="bin", site="dong-3", node_id="bin-0001", port="/dev/ttyUSB0",
              net=Network("192.168.4.1", 1883, "linli", "pw"))
    outcome = run(job, Registry(keystore=Path("/var/lib/linli/keys.db")))
    outcome.key_fp, outcome.deploy.written
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from linli.flash import bundle as bundles
from linli.flash import image as images
from linli.flash import provision
from linli.flash.deploy import DeployResult, deploy, plan_bytes
from linli.flash.device import Device, sha256
from linli.flash.errors import PlanError, RegisterError
from linli.flash.progress import Progress
from linli.flash.provision import Identity, Network, Registry

CONFIG, SECRETS = "config.json", "secrets.json"


@dataclass
class Job:
    board: str
    role: str
    site: str
    node_id: str
    port: Optional[str] = None
    firmware: Optional[Path] = None
    erase: bool = False
    bundle: Optional[Path] = None
    net: Network = field(default_factory=Network)
    report_s: Optional[int] = None
    health_s: Optional[int] = None
    new_key: bool = False
    yes: bool = False
    reset: bool = True
    baud: int = 115200
    tries: int = 3
    answer_s: float = 2.0
    deploy_mode: str = "auto"  # "auto", "romfs" or "files" (linli.flash.deploy)

    @property
    def ident(self) -> Identity:
        return Identity(self.node_id, self.role, self.board, self.site)


@dataclass
class Outcome:
    job: Job
    port: str
    chip: str = "?"
    board_name: str = "?"
    image: Optional[str] = None  # what was written, None without --firmware
    deploy: DeployResult = field(default_factory=DeployResult)
    config_written: list[str] = field(default_factory=list)
    config_skipped: list[str] = field(default_factory=list)
    key_fp: str = "?"
    key_how: str = "?"
    registered: str = "?"
    was: Optional[str] = None  # the node the board was before, when it was another one
    reset: bool = False


@dataclass
class Checked:
    """What the plan resolved to before touching anything."""

    board: object
    image: Optional[images.Image]
    bundle: Optional[Path]
    manifest: Optional[dict]


def check_plan(job: Job, *, build: bool = True) -> Checked:
    """Everything that needs no board; PlanError (or WrongBoard for the image) otherwise."""
    from linli import hw
    from linli.errors import HwError

    try:
        board = hw.load_board(job.board)
    except HwError as exc:
        raise PlanError(None, str(exc)) from None
    if job.role not in board.roles:
        raise PlanError(None, "board %s has no pin map for role %r (it has: %s): see `linli hw show %s`"
                              % (job.board, job.role, ", ".join(board.roles), job.board))
    provision.node_files(job.ident, bytes(provision.KEY_BYTES), job.net, report_s=job.report_s, health_s=job.health_s)
    img = None
    if job.erase and job.firmware is None:
        raise PlanError(None, "--erase erases the flash before writing an image: it needs --firmware IMAGE")
    if job.firmware is not None:
        img = images.read_image(job.firmware)
        images.check_for_board(img, job.board, board.chip)
    arch = bundles.arch_for(board.chip)
    if build or job.bundle is not None:
        path, manifest = bundles.get_bundle(job.role, arch, job.bundle)
    else:
        path = bundles.cached(job.role, arch)
        manifest = bundles.load_manifest(path, job.role) if path else None
    return Checked(board, img, path, manifest)


def plan(job: Job, registry: Registry) -> list[str]:
    """What ``--dry-run`` prints: the whole plan, touching nothing (no board, no key store)."""
    c = check_plan(job, build=False)
    b = c.board
    arch = bundles.arch_for(b.chip) or "bytecode"
    lines = ["linli flash --dry-run: %s, nothing is touched" % job.node_id,
             "  port       %s" % (job.port or "auto-detected (USB-serial bridges: CP210x, CH340, FTDI, ESP32-S3 USB)"),
             "  board      %s: %s, chip %s, %d MB flash" % (b.id, b.name, b.chip, b.flash_mb),
             "  node       %s, role %s, site %s" % (job.node_id, job.role, job.site)]
    if c.image:
        lines.append("  image      %s image, %.1f KiB: %s" % (c.image.chip, c.image.size / 1024,
                                                               images.command(c.image, job.port or "PORT", erase=job.erase)))
    else:
        lines.append("  image      none (the board must run MicroPython already; --firmware IMAGE writes it)")
    if c.bundle:
        n, size = plan_bytes(c.bundle)
        lines.append("  bundle     %s %s for %s: %d files, %.1f KiB, %s" % (job.role, c.manifest.get("version", "?"),
                                                                           c.manifest.get("arch", arch), n, size / 1024, c.bundle))
    else:
        lines.append("  bundle     %s for %s: built into %s" % (job.role, arch, bundles.cache_path(job.role, bundles.arch_for(b.chip))))
    lines.append("  deploy     " + _plan_mode(job.deploy_mode, c.manifest))
    lines.append("             raw REPL; what matches its SHA-256 is skipped, what is written is checked, manifest.json last")
    cfg, sec = provision.node_files(job.ident, bytes(provision.KEY_BYTES), job.net, report_s=job.report_s,
                                    health_s=job.health_s)
    lines.append("  config     " + " ".join("%s=%s" % (k, _short(v)) for k, v in cfg.items() if not k.startswith("_") and v is not None))
    shown = {k: ("***" if k in ("key", "wifi_password", "broker_password") and v else v) for k, v in sec.items()}
    shown["key"] = "new 32 bytes" if job.new_key else "the board's own if it is already %s, else new 32 bytes" % job.node_id
    lines.append("  secrets    " + " ".join("%s=%s" % kv for kv in shown.items()))
    lines.append("  register   %s%s" % (registry.where, " (replacing the registered key)" if job.new_key else ""))
    lines.append("  then       %s" % ("reset the board: it boots the node" if job.reset else "leave the board in its REPL (--no-reset)"))
    return lines


def _plan_mode(mode: str, manifest: Optional[dict]) -> str:
    rom = (manifest or {}).get("romfs")
    image = ("the %.1f KiB ROMFS image" % (rom["size"] / 1024)) if rom else "the ROMFS image"
    if mode == "files":
        return ("--deploy files: every file on the filesystem (an image in a ROMFS partition is erased: it would "
                "shadow them); the node needs more heap this way (docs/flashing.md)")
    if mode == "romfs":
        return ("--deploy romfs: %s into the board's ROMFS partition, boot.py and main.py on the filesystem; a board "
                "without a partition big enough is refused" % image)
    return ("auto: %s into the board's ROMFS partition if it has one big enough (boot.py and main.py on the "
            "filesystem), else every file on the filesystem (the node then needs more heap: docs/flashing.md)" % image)


def _short(v) -> str:
    if isinstance(v, dict):
        inner = v.get("pins", v)
        return ",".join("%s:%s" % kv for kv in inner.items() if kv[1] is not None) or "-"
    return str(v)


def run(job: Job, registry: Registry, *, out: Callable[[str], None] = print, progress_out=None,
        confirm: Optional[Callable[[str], bool]] = None, on_file: Optional[Callable[[int, str], None]] = None,
        detect: Optional[Callable] = None) -> Outcome:
    """Flash one node (see the module docstring). ``confirm(question)`` is asked before
    re-provisioning a board that is another node (None: refuse unless ``job.yes``)."""
    if not job.port:
        raise PlanError(None, "no port (the CLI finds one when --port is left out)")
    c = check_plan(job)
    res = Outcome(job, job.port, chip=c.board.chip, board_name=c.board.name)
    tries = job.tries
    if c.image is not None:
        out("writing the %s image (%.1f KiB) with esptool ..." % (c.image.chip, c.image.size / 1024))
        res.chip = images.write(c.image, job.port, job.board, c.board.chip, erase=job.erase, detect=detect)
        res.image = "%s image, %.1f KiB at 0x%x" % (c.image.chip, c.image.size / 1024, c.image.offset)
        tries += 3  # MicroPython's first boot makes its filesystem before the REPL answers

    with Device(job.port, baud=job.baud, tries=tries, answer_s=job.answer_s).open() as dev:
        images.check_running(*dev.uname(), job.port, job.board, c.board.chip)
        found = provision.existing(dev.read(SECRETS))
        if found and (found["node_id"], found["role"]) != (job.node_id, job.role):
            res.was = "%s (%s)" % (found["node_id"], found["role"])
            question = "this board is node %s; re-provision it as %s (%s)?" % (res.was, job.node_id, job.role)
            if not (job.yes or (confirm is not None and confirm(question))):
                raise PlanError(job.port, "this board is node %s: pass --yes to re-provision it as %s"
                                          % (res.was, job.node_id))
        key, res.key_how = provision.choose_key(found, job.ident, job.new_key)
        res.key_fp = provision.fingerprint(key)
        why = registry.conflict(job.node_id, job.role, key)
        if why and not job.new_key:
            raise RegisterError(job.port, "%s: run again with --new-key to give this board a new key and replace "
                                          "the registered one (the old board stops being accepted)" % why)

        bar = (lambda total: Progress(total, "deploy", progress_out)) if progress_out is not None else None
        res.deploy = deploy(dev, c.bundle, mode=job.deploy_mode, progress=bar, on_file=on_file)

        cfg, sec = provision.node_files(job.ident, key, job.net, report_s=job.report_s, health_s=job.health_s)
        files = {CONFIG: provision.encode(cfg), SECRETS: provision.encode(sec)}
        have = dev.hashes(list(files))
        for name, data in files.items():
            if have[name][0] == sha256(data):
                res.config_skipped.append(name)
            else:
                dev.write(name, data)
                res.config_written.append(name)
        res.registered = registry.add(job.node_id, job.role, key, replace=job.new_key or bool(why))
        if job.reset:
            res.reset = dev.reset()
    return res


def _summary_mode(d: DeployResult) -> list[str]:
    if d.mode == "romfs":
        return ["  deploy     ROMFS: the modules run in place from the board's ROMFS partition (%s)" % d.why]
    return ["  deploy     files: every file on the filesystem (%s)" % d.why,
            "  heap       the node needs more heap than from ROMFS (its modules are copied into the heap at import): "
            "a board with a ROMFS partition avoids that (docs/flashing.md, ROMFS)"]


def _summary_image(d: DeployResult) -> str:
    if d.mode == "romfs":
        return ("ROMFS image written (%.1f KiB), " % (d.image_bytes / 1024)) if d.image_bytes else "ROMFS image unchanged, "
    return "old ROMFS image erased, " if d.rom_erased else ""


def summary(res: Outcome) -> list[str]:
    """The one-screen report after a flash."""
    j, d = res.job, res.deploy
    net = j.net
    reach = ("%s:%s over Wi-Fi %r" % (net.host, net.port or 1883, net.wifi_ssid)) if net.transport == "mqtt" else "its serial line"
    lines = [
        "linli flash: %s is ready" % j.node_id,
        "  board      %s (%s), chip %s, port %s" % (j.board, res.board_name, res.chip, res.port),
        "  node       %s, role %s, site %s%s" % (j.node_id, j.role, j.site, (", was " + res.was) if res.was else ""),
        "  image      %s" % (res.image or "not written (no --firmware)"),
        *_summary_mode(d),
        "  firmware   %s: %s%d file(s) written (%.1f KiB), %d unchanged, %d old removed"
        % (d.version, _summary_image(d), len(d.written), d.bytes_written / 1024, len(d.skipped), len(d.removed)),
        "  config     %s" % ", ".join([n + " written" for n in res.config_written] + [n + " unchanged" for n in res.config_skipped]),
        "  key        %s, fingerprint %s" % ({"kept": "kept the board's key", "new": "new key",
                                               "renewed": "new key (--new-key)"}.get(res.key_how, res.key_how), res.key_fp),
        "  registered %s" % res.registered,
    ]
    if j.reset and res.reset:
        nxt = "the board restarted; it reports to %s: watch it arrive with `linli nodes` on the gateway" % reach
    else:
        nxt = "reset the board (EN/RST) to start the node; it reports to %s" % reach
    if res.registered.startswith("export file"):
        nxt += "; first copy the export file to the gateway and run `linli flash --import-keys FILE --keystore KEYS.DB`"
    lines.append("  next       " + nxt)
    return lines
