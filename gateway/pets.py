"""The pet registry cache: answers a scanner green/yellow/red without the uplink.

The backend publishes the registry retained on ``linli/v1/{site}/pets/registry``::

    {"version": 7, "pets": {"7Q2M9XKD": {"status": "green"}, "...": {"status": "red"}}}

The gateway keeps the last one on disk (``pets.json``), so a scanner gets an answer within
milliseconds even when the uplink or the gateway's last restart came before the backend's.

>>> import tempfile, os
>>> reg = PetRegistry(os.path.join(tempfile.mkdtemp(), "pets.json"), tag_key=b"k" * 32)
>>> reg.update({"version": 1, "pets": {"7Q2M9XKD": {"status": "green"}}})
1
>>> from linli.pettag import make_tag
>>> reg.answer(make_tag("7Q2M9XKD", b"k" * 32))
('green', '7Q2M9XKD', 'registered')
>>> reg.answer("hello")[0]
'red'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from linli.pettag import TagError, check, check_format

STATUSES = ("green", "yellow", "red")
BUZZ = {"green": "ok", "yellow": "warn", "red": "alarm"}


class RegistryError(ValueError):
    """The backend's pet registry message is malformed; the previous registry stays in use."""


class PetRegistry:
    def __init__(self, path: str | os.PathLike, tag_key: Optional[bytes] = None):
        self.path = Path(path)
        self.tag_key = tag_key
        self.version = 0
        self.pets: dict[str, str] = {}
        if self.path.exists():
            try:
                self._apply(json.loads(self.path.read_text()))
            except (ValueError, RegistryError):
                pass  # a torn file: wait for the backend's retained copy

    def _apply(self, msg: dict) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("pets"), dict):
            raise RegistryError("registry must be an object with a 'pets' object")
        pets = {}
        for pid, rec in msg["pets"].items():
            status = rec.get("status") if isinstance(rec, dict) else None
            if status not in STATUSES:
                raise RegistryError("pet %r: status must be one of %s" % (pid, ", ".join(STATUSES)))
            pets[str(pid).upper()] = status
        self.pets = pets
        self.version = int(msg.get("version", 0))

    def update(self, msg: dict) -> int:
        """Replace the registry (persisted atomically); returns the number of pets."""
        self._apply(msg)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(msg))
        os.replace(tmp, self.path)
        return len(self.pets)

    def answer(self, text: str) -> tuple[str, Optional[str], str]:
        """(status, pet id or None, reason) for a scanned tag."""
        try:
            pid = check(text, self.tag_key) if self.tag_key else check_format(text)
        except TagError as exc:
            return "red", None, "forged" if exc.forged else "invalid tag"
        status = self.pets.get(pid)
        if status is None:
            return "yellow", pid, "not registered"
        return status, pid, "registered"
