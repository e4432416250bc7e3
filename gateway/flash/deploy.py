"""Put a role's bundle on the board so that any interruption leaves a state a re-run repairs.

The order matters:

1. hash what the board has (one snippet for every file) and skip files that already match;
2. check the free space for what is left to write (a temporary copy included);
3. set the board's ``manifest.json`` aside as ``manifest.old.json``: from here on the board
   says "incomplete" (no manifest), and the old list still names files to clean up;
4. remove files of the old bundle(s) that the new one does not have;
5. write each changed file under a temporary name, check its hash on the board, rename it;
6. hash every file of the bundle once more, then write ``manifest.json`` last and drop the old one.

A board whose ``manifest.json`` is present and whose files match it holds a complete deploy.

    result = deploy(dev, Path("bundles/bin"), progress=bar.advance)
    result.written, result.skipped        # ['lib/node/runtime.mpy'], ['boot.py', ...]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from linli.flash.device import Device, sha256
from linli.flash.errors import FlashFull, WriteFailed

MANIFEST = "manifest.json"
OLD_MANIFEST = "manifest.old.json"
_MARGIN_BLOCKS = 2


@dataclass
class DeployResult:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bytes_written: int = 0
    version: str = "?"


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


def deploy(dev: Device, bundle: Path, *, progress: Optional[Callable[[int], object]] = None,
           on_file: Optional[Callable[[int, str], None]] = None) -> DeployResult:
    """Deploy ``bundle`` (a ``linli firmware build`` folder) to ``dev``.

    ``progress(total_bytes)`` makes a bar (``advance(nbytes, note)``, ``done()``, as
    :class:`~linli.flash.progress.Progress`) when there is something to write;
    ``on_file(i, path)`` is called after each file is in place (tests pull the plug there).
    """
    manifest_bytes = (bundle / MANIFEST).read_bytes()
    manifest = json.loads(manifest_bytes)
    want = {f["path"]: f for f in manifest["files"]}
    res = DeployResult(version=manifest.get("version", "?"))

    old = _listed(dev.read(MANIFEST)) | _listed(dev.read(OLD_MANIFEST))
    stale = sorted(old - set(want) - {MANIFEST, OLD_MANIFEST})
    # Temporary files an interrupted write may have left.
    dev.remove([p + ".tmp" for p in sorted(set(want) | set(stale) | {MANIFEST, OLD_MANIFEST})])
    have = dev.hashes(list(want) + stale + [MANIFEST, OLD_MANIFEST])
    todo = [p for p in want if have[p][0] != want[p]["sha256"]]
    stale = [p for p in stale if have[p][0] is not None]
    res.skipped = [p for p in want if p not in todo]
    complete = have[MANIFEST][0] == sha256(manifest_bytes) and have[OLD_MANIFEST][0] is None
    if not todo and not stale and complete:
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

    # From here the board has no manifest: "incomplete" until step 6.
    if have[MANIFEST][0] is not None:
        if have[OLD_MANIFEST][0] is None:
            dev.rename(MANIFEST, OLD_MANIFEST)
        else:  # an earlier run was cut short: keep every path either list names
            listed = sorted(old - {MANIFEST, OLD_MANIFEST})
            dev.write(OLD_MANIFEST, json.dumps({"files": [{"path": p} for p in listed]}).encode())
            dev.remove([MANIFEST])
    res.removed = stale
    dev.remove(stale)
    dev.makedirs({p.rpartition("/")[0] for p in todo})

    bar = progress(sum(want[p]["size"] for p in todo)) if progress and todo else None
    try:
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
