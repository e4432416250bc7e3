"""Small-file helpers for flash (LittleFS on the board, a folder in the simulator)."""

# write_atomic(path, data): PATH.tmp renamed over path, so a reader sees the old file or the new
# one, never half of one (rename is atomic on LittleFS and POSIX). On FAT, which refuses to
# rename over a file, the old one is removed first and read() falls back to the .tmp file. The
# link's counter files need it first, so it lives in link.replay (always loaded by the runtime).
from link.replay import write_atomic  # noqa: F401


def read(path):
    """The bytes of ``path`` (or of a leftover ``PATH.tmp``); None if neither exists."""
    for p in (path, path + ".tmp"):
        try:
            with open(p, "rb") as f:
                return f.read()
        except OSError:
            pass
    return None
