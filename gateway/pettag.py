"""Pet tag QR codes: ``LP1-IIIIIIII-SSSSSS-C`` (docs/protocol.md section 7).

>>> key = b"k" * 32
>>> tag = make_tag("7Q2M9XKD", key)
>>> check(tag, key)
'7Q2M9XKD'
>>> check(tag[:-1] + ("0" if tag[-1] != "0" else "1"), key)
Traceback (most recent call last):
...
linli.pettag.TagError: bad check character (misread or typo)
"""

from __future__ import annotations

import hmac

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


class TagError(ValueError):
    """A scanned text is not a valid pet tag; ``forged`` is True when only the signature failed."""

    def __init__(self, msg: str, forged: bool = False):
        super().__init__(msg)
        self.forged = forged


def luhn32(chars: str) -> str:
    """Luhn mod N check character over Crockford base32 characters."""
    factor, total = 2, 0
    for c in reversed(chars):
        addend = factor * _INDEX[c]
        factor = 1 if factor == 2 else 2
        total += addend // 32 + addend % 32
    return ALPHABET[(32 - total % 32) % 32]


def signature(pet_id: str, key: bytes) -> str:
    d = hmac.digest(key, ("LP1-" + pet_id).encode(), "sha256")
    v = int.from_bytes(d[:4], "big") >> 2  # first 30 bits
    return "".join(ALPHABET[(v >> s) & 31] for s in (25, 20, 15, 10, 5, 0))


def make_tag(pet_id: str, key: bytes) -> str:
    if len(pet_id) != 8 or any(c not in _INDEX for c in pet_id):
        raise TagError("a pet id is 8 Crockford base32 characters")
    sig = signature(pet_id, key)
    return "LP1-%s-%s-%s" % (pet_id, sig, luhn32(pet_id + sig))


def check_format(text: str) -> str:
    """What a scanner can check alone: layout and check character. Returns the pet id."""
    parts = text.strip().upper().split("-")
    if len(parts) != 4 or parts[0] != "LP1":
        raise TagError("not a pet tag (expected LP1-IIIIIIII-SSSSSS-C)")
    pid, sig, c = parts[1:]
    if len(pid) != 8 or len(sig) != 6 or len(c) != 1 or any(ch not in _INDEX for ch in pid + sig + c):
        raise TagError("pet tag has the wrong length or characters outside base32")
    if luhn32(pid + sig) != c:
        raise TagError("bad check character (misread or typo)")
    return pid


def check(text: str, key: bytes) -> str:
    """Full check including the signature (gateway/backend only). Returns the pet id."""
    pid = check_format(text)
    if not hmac.compare_digest(signature(pid, key), text.strip().upper().split("-")[2]):
        raise TagError("pet tag signature does not verify (forged tag?)", forged=True)
    return pid
