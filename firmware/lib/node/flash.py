"""Small-file helpers for flash (LittleFS on the board, a folder in the simulator)."""

import os


def write_atomic(path, data):
    """Write ``data`` to ``PATH.tmp`` and rename it over ``path``: a reader sees the old file or
    the new one, never half of one (rename is atomic on LittleFS and POSIX). On FAT, which
    refuses to rename over a file, the old one is removed first and :func:`read` falls back to
    the ``.tmp`` file."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        os.rename(tmp, path)
    except OSError:
        os.remove(path)
        os.rename(tmp, path)


def read(path):
    """The bytes of ``path`` (or of a leftover ``PATH.tmp``); None if neither exists."""
    for p in (path, path + ".tmp"):
        try:
            with open(p, "rb") as f:
                return f.read()
        except OSError:
            pass
    return None
