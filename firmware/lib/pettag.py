"""Pet tag QR codes on the node: layout and check character (docs/protocol.md section 7).

A tag reads ``LP1-IIIIIIII-SSSSSS-C``: the pet id (8 Crockford base32 characters), a signature
(6) only the gateway can verify, and a Luhn mod 32 check character over id + signature, so a
scanner catches a misread or a typo (any single wrong character, most transpositions) alone::

    import pettag
    pid = pettag.check_format("LP1-7Q2M9XKD-ABCDEF-X")   # the pet id, or TagError
    if not pettag.valid(text):
        buzz("error")                                   # nothing is sent

Same rules and messages as the gateway's ``linli.pettag.check_format`` (the contract test
``tests/test_pettag_firmware.py`` runs the same tags through both). One difference by design:
text with non-ASCII letters is always refused here, while CPython's ``upper()`` may turn a few
of them into ASCII (``"ß"`` -> ``"SS"``); the scanner is only ever the stricter side. The node holds no tag key:
it cannot check (or mint) the signature.
"""

from micropython import const

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
_ID_LEN = const(8)
_SIG_LEN = const(6)
_TAG_LEN = const(21)  # "LP1-" 4 + 8 + "-" + 6 + "-" + 1


class TagError(ValueError):
    """The scanned text is not a well-formed pet tag (the message says why)."""


def luhn32(chars, start=0, end=None):
    """Luhn mod 32 check character over ``chars[start:end]`` (Crockford base32 characters)."""
    if end is None:
        end = len(chars)
    factor = 2
    total = 0
    i = end - 1
    while i >= start:
        v = ALPHABET.find(chars[i])
        if v < 0:
            raise TagError("pet tag has the wrong length or characters outside base32")
        addend = factor * v
        factor = 1 if factor == 2 else 2
        total += (addend >> 5) + (addend & 31)
        i -= 1
    return ALPHABET[(32 - total % 32) % 32]


def check_format(text):
    """The pet id of a well-formed tag; ``TagError`` naming the problem otherwise.

    Accepts ``str`` or ``bytes``; surrounding white space and lower case are tolerated, as on
    the gateway.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = str(text, "utf-8")
        except UnicodeError:
            raise TagError("not a pet tag (expected LP1-IIIIIIII-SSSSSS-C)")
    t = text.strip().upper()
    # The gateway splits on "-": a tag with the wrong number of parts or prefix is "not a tag",
    # one with the right layout but wrong part lengths or letters is "wrong length/characters".
    if t.count("-") != 3 or not t.startswith("LP1-"):
        raise TagError("not a pet tag (expected LP1-IIIIIIII-SSSSSS-C)")
    if len(t) != _TAG_LEN or t[12] != "-" or t[19] != "-":
        raise TagError("pet tag has the wrong length or characters outside base32")
    for i in range(4, _TAG_LEN):
        if i != 12 and i != 19 and ALPHABET.find(t[i]) < 0:
            raise TagError("pet tag has the wrong length or characters outside base32")
    # id + signature are t[4:12] + t[13:19]: walk both without building the joined string.
    factor = 2
    total = 0
    for i in (18, 17, 16, 15, 14, 13, 11, 10, 9, 8, 7, 6, 5, 4):
        addend = factor * ALPHABET.find(t[i])
        factor = 1 if factor == 2 else 2
        total += (addend >> 5) + (addend & 31)
    if ALPHABET[(32 - total % 32) % 32] != t[20]:
        raise TagError("bad check character (misread or typo)")
    return t[4:12]


def valid(text):
    """True when ``text`` is a well-formed pet tag (layout and check character)."""
    try:
        check_format(text)
    except TagError:
        return False
    return True
