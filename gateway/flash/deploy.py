"""Put a role's bundle on the board so that any interruption leaves a state a re-run repairs.

The order matters:

1. hash what the board has (one snippet for every file, and its ROMFS partition) and skip what
   already matches;
2. check the free space for what is left to write (a temporary copy included);
3. set the board's ``manifest.json`` aside as ``manifest.old.json``: from here on the board
   says "incomplete" (no manifest), and the old list still names files to clean up;
4. remove files of the old bundle(s) that the new one does not have on the filesystem;
5. write the ROMFS image into the partition (ROMFS mode) or erase an old one (files mode);
6. write each changed file under a temporary name, check its hash on the board, rename it;
7. hash every file of the bundle once more, then write ``manifest.json`` last and drop the old one.

Two modes (``mode``): ``romfs`` puts the bundle's ``lib/`` modules into the board's ROMFS
partition as one image (mounted on /rom, they run in place: the heap a node needs drops by a
third, docs/flashing.md) and only ``boot.py`` and ``main.py`` on the filesystem; ``files`` puts
every file on the filesystem. ``auto`` (the default) is ``romfs`` when the board has a partition
big enough, else ``files``. The board's ``manifest.json`` says which (``"deploy"``) and lists
what its filesystem holds; a board whose ``manifest.json`` is present and whose files (and image)
match it holds a complete deploy.

    result = deploy(dev, Path("bundles/bin"), progress=bar.advance)
    result.mode, result.image_bytes       # 'romfs', 57592
    result.written, result.skipped        # ['main.py'], ['boot.py']
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from linli.flash.device import Device, sha256
from linli.flash.errors import FlashFull, NoRomfs, WriteFailed

MANIFEST = "manifest.json"
OLD_MANIFEST = "manifest.old.json"
MODES = ("auto", "romfs", "files")
_MARGIN_BLOCKS = 2
GET_A_PARTITION = ("write a MicroPython image (1.25 or later) whose partition table has a romfs partition (built with "
                   "ports/esp32/partitions-4MiB-romfs.csv: 128 KiB) with --firmware IMAGE, or use --deploy files "
                   "(the node then needs more heap: docs/flashing.md)")


@dataclass
class DeployResult:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bytes_written: int = 0
    version: str = "?"
    mode: str = "files"  # "romfs": the modules are in the ROMFS partition; "files": on the filesystem
    why: str = ""  # why that mode, for the summary
    image_bytes: int = 0  # ROMFS image bytes written (0: the partition held it already)
    rom_erased: bool = False  # files mode: an old image was erased (its modules would shadow the files)


def _blocks(size: Optional[int], block: int) -> int:
    return 0 if not size else -(-size // block) * block


def _listed(raw: Optional[bytes]) -> set[str]:
    """Paths an old manifest names (nothing if it is missing or damaged)."""
    if not raw:
        return set()
    try:
        return {f["path"] for f in json.loads(raw)["files"]}
    except (ValueError, KeyError, TypeError):
        return set()


def plan_bytes(bundle: Path) -> tuple[int, int]:
    """(files, bytes) of a bundle, for the plan."""
    files = json.loads((bundle / MANIFEST).read_text())["files"]
    return len(files), sum(f["size"] for f in files)


def choose_mode(mode: str, manifest: dict, partition: Optional[tuple[int, int, bool]],
                port: Optional[str] = None) -> tuple[str, str]:
    """("romfs" or "files", why) for ``--deploy mode``; NoRomfs when ``romfs`` cannot be.

    >>> m = {"romfs": {"size": 57592}}
    >>> choose_mode("auto", m, (131072, 131072, False))
    ('romfs', 'the board has a 128 KiB ROMFS partition')
    >>> choose_mode("auto", m, None)
    ('files', 'the board has no ROMFS partition')
    """
    rom = manifest.get("romfs")
    if mode == "files":
        return "files", "--deploy files"
    if not rom:
        if mode == "romfs":
            raise NoRomfs(port, "the bundle has no ROMFS image (built by an older linli): rebuild it with "
                                "`linli firmware build`, or use --deploy files")
        return "files", "the bundle has no ROMFS image"
    if partition is None:
        why = "the board has no ROMFS partition"
    elif partition[0] < rom["size"]:
        why = "the board's ROMFS partition (%.1f KiB) is smaller than the image (%.1f KiB)" % (
            partition[0] / 1024, rom["size"] / 1024)
    else:
        return "romfs", "the board has a %d KiB ROMFS partition" % (partition[0] // 1024)
    if mode == "romfs":
        raise NoRomfs(port, "--deploy romfs, but %s: %s" % (why, GET_A_PARTITION))
    return "files", why


def board_manifest(manifest: dict, mode: str) -> bytes:
    """The ``manifest.json`` the board gets: the bundle's, saying how it was deployed, with only
    what its filesystem holds under ``files`` (in ROMFS mode the modules are in the image)."""
    m = dict(manifest, deploy=mode)
    if mode == "romfs":
        inside = set(manifest["romfs"]["files"])
        m["files"] = [f for f in manifest["files"] if f["path"] not in inside]
    else:
        m.pop("romfs", None)
    return (json.dumps(m, indent=1) + "\n").encode()


def deploy(dev: Device, bundle: Path, *, mode: str = "auto", progress: Optional[Callable[[int], object]] = None,
           on_file: Optional[Callable[[int, str], None]] = None) -> DeployResult:
    """Deploy ``bundle`` (a ``linli firmware build`` folder) to ``dev`` (``mode``: see above).

    ``progress(total_bytes)`` makes a bar (``advance(nbytes, note)``, ``done()``, as
    :class:`~linli.flash.progress.Progress`) when there is something to write;
    ``on_file(i, path)`` is called after each file is in place (tests pull the plug there).
    """
    manifest = json.loads((bundle / MANIFEST).read_bytes())
    res = DeployResult(version=manifest.get("version", "?"))
    if mode not in MODES:
        raise ValueError("mode must be one of %s, not %r" % (", ".join(MODES), mode))
    partition = dev.rom_partition()  # in files mode too: an old image in it must go
    res.mode, res.why = choose_mode(mode, manifest, partition, dev.port)
    rom = manifest["romfs"] if res.mode == "romfs" else None
    in_rom = set(rom["files"]) if rom else set()
    want = {f["path"]: f for f in manifest["files"] if f["path"] not in in_rom}
    manifest_bytes = board_manifest(manifest, res.mode)

    old = _listed(dev.read(MANIFEST)) | _listed(dev.read(OLD_MANIFEST))
    # In ROMFS mode the bundle's modules must not stay on the filesystem: they waste space, and
    # an old copy in /lib could be imported instead if the image were ever missing.
    stale = sorted((old | in_rom) - set(want) - {MANIFEST, OLD_MANIFEST})
    # Temporary files an interrupted write may have left.
    dev.remove([p + ".tmp" for p in sorted(set(want) | set(stale) | {MANIFEST, OLD_MANIFEST})])
    have = dev.hashes(list(want) + stale + [MANIFEST, OLD_MANIFEST])
    todo = [p for p in want if have[p][0] != want[p]["sha256"]]
    stale = [p for p in stale if have[p][0] is not None]
    res.skipped = [p for p in want if p not in todo]
    if rom:
        image = (bundle / rom["path"]).read_bytes()
        if sha256(image) != rom["sha256"]:
            raise WriteFailed(None, "%s in %s changed since the bundle was built: rebuild it" % (rom["path"], bundle))
        rom_todo = dev.rom_hash(len(image)) != rom["sha256"]
    else:
        # MicroPython puts /rom/lib before /lib on sys.path: an old image would shadow the files.
        image, rom_todo = None, partition is not None and partition[2]
    complete = have[MANIFEST][0] == sha256(manifest_bytes) and have[OLD_MANIFEST][0] is None
    if not todo and not stale and not rom_todo and complete:
        return res

    free, block = dev.free_bytes()
    need = sum(_blocks(want[p]["size"], block) - _blocks(have[p][1], block) for p in todo)
    need -= sum(_blocks(have[p][1], block) for p in stale)
    need += max((_blocks(want[p]["size"], block) for p in todo), default=0)  # the temporary copy
    need += _blocks(len(manifest_bytes), block) + _MARGIN_BLOCKS * block
    if need > free:
        raise FlashFull(dev.port, "the %s bundle needs %.1f KiB more and the board has %.1f KiB free: remove "
                                  "other files (mpremote rm), erase it (--firmware IMAGE --erase) or use a board "
                                  "with more flash" % (manifest.get("role", "?"), need / 1024, free / 1024))

    # From here the board has no manifest: "incomplete" until the end.
    if have[MANIFEST][0] is not None:
        if have[OLD_MANIFEST][0] is None:
            dev.rename(MANIFEST, OLD_MANIFEST)
        else:  # an earlier run was cut short: keep every path either list names
            listed = sorted(old - {MANIFEST, OLD_MANIFEST})
            dev.write(OLD_MANIFEST, json.dumps({"files": [{"path": p} for p in listed]}).encode())
            dev.remove([MANIFEST])
    res.removed = stale
    dev.remove(stale)
    dev.remove_empty_dirs({p.rpartition("/")[0] for p in stale})
    dev.makedirs({p.rpartition("/")[0] for p in todo})

    total = sum(want[p]["size"] for p in todo) + (len(image) if image is not None and rom_todo else 0)
    bar = progress(total) if progress and total else None
    try:
        if rom_todo and image is not None:
            if bar is not None:
                dev.on_chunk = lambda n: bar.advance(n, "ROMFS image")
            dev.write_rom(image)
            res.image_bytes = len(image)
        elif rom_todo:
            dev.erase_rom()
            res.rom_erased = True
        for i, path in enumerate(todo):
            data = (bundle / path).read_bytes()
            if sha256(data) != want[path]["sha256"]:
                raise WriteFailed(None, "%s in %s changed since the bundle was built: rebuild it" % (path, bundle))
            if bar is not None:
                dev.on_chunk = lambda n, _p=path: bar.advance(n, _p)
            dev.write(path, data)
            res.written.append(path)
            res.bytes_written += len(data)
            if on_file:
                on_file(i, path)
    finally:
        dev.on_chunk = None
    if bar is not None:
        bar.done()

    check = dev.hashes(list(want))
    bad = [p for p in want if check[p][0] != want[p]["sha256"]]
    if bad:
        raise WriteFailed(dev.port, "%d file(s) do not match after writing (%s): run again" % (len(bad), ", ".join(bad[:3])))
    dev.write(MANIFEST, manifest_bytes)
    dev.remove([OLD_MANIFEST])
    return res
