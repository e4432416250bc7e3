"""A plain-text progress bar: redrawn in place on a terminal, a line per tenth elsewhere (logs, CI).

>>> import io
>>> out = io.StringIO()
>>> bar = Progress(1000, "deploy", out, tty=False)
>>> bar.advance(500, "lib/a.mpy"); bar.advance(500, "lib/b.mpy"); bar.done()
>>> print(out.getvalue().strip().splitlines()[-1])
deploy [##############################] 100%  1000/1000 B
"""

from __future__ import annotations

import sys
from typing import Optional, TextIO

WIDTH = 30


class Progress:
    def __init__(self, total: int, label: str, out: Optional[TextIO] = None, *, tty: Optional[bool] = None):
        self.total = max(int(total), 0)
        self.label = label
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.done_bytes = 0
        self._tenth = -1
        self._drawn = False

    def _line(self, note: str = "") -> str:
        frac = 1.0 if not self.total else min(self.done_bytes / self.total, 1.0)
        fill = int(frac * WIDTH)
        unit = "B" if self.total < 10240 else "KiB"
        scale = 1 if unit == "B" else 1024
        return "%s [%s%s] %3d%%  %d/%d %s%s" % (
            self.label, "#" * fill, "." * (WIDTH - fill), int(frac * 100),
            self.done_bytes // scale, self.total // scale, unit, ("  " + note) if note else "",
        )

    def advance(self, nbytes: int, note: str = "") -> None:
        self.done_bytes += nbytes
        if self.tty:
            self.out.write("\r\033[K" + self._line(note))
            self.out.flush()
            self._drawn = True
            return
        tenth = 10 if not self.total else int(10 * self.done_bytes / self.total)
        if tenth > self._tenth and tenth < 10:
            self._tenth = tenth
            self.out.write(self._line() + "\n")

    def done(self) -> None:
        self.done_bytes = max(self.done_bytes, self.total)
        if self.tty:
            self.out.write("\r\033[K" + self._line() + "\n")
        else:
            self.out.write(self._line() + "\n")
        self.out.flush()
