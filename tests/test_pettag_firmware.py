"""Pet tags: the node's check (firmware/lib/pettag.py, on MicroPython as .mpy) against the
gateway's (linli.pettag, CPython), over the same tags (docs/protocol.md section 7).

Tags are made by the gateway with several keys and pet ids, then damaged the ways a scanner or
a person damages them: every single-character substitution of some tags, adjacent swaps, cut
and padded text, other prefixes, lower case and white space, random junk. Both ends must agree
on every one: accepted or not, the pet id, and the reason.
"""

from __future__ import annotations

import random

import pytest

from linli.pettag import ALPHABET, TagError, check_format, luhn32, make_tag

pytestmark = pytest.mark.micropython


def corpus() -> list[str]:
    rnd = random.Random(20240620)
    tags = [make_tag("".join(rnd.choice(ALPHABET) for _ in range(8)), rnd.randbytes(32)) for _ in range(60)]
    tags += [make_tag("00000000", b"k" * 32), make_tag("ZZZZZZZZ", b"k" * 32), make_tag("7Q2M9XKD", b"k" * 32)]
    out = list(tags)
    for tag in tags[:6]:  # every single-character substitution in id, signature and check char
        for i in range(4, len(tag)):
            if tag[i] == "-":
                continue
            for c in ALPHABET[::3] + "ILOU*a-":
                if c != tag[i]:
                    out.append(tag[:i] + c + tag[i + 1:])
    for tag in tags[6:30]:
        for i in range(4, len(tag) - 1):  # adjacent transpositions
            if tag[i] != tag[i + 1]:
                out.append(tag[:i] + tag[i + 1] + tag[i] + tag[i + 2:])
    for tag in tags[30:]:
        out += [
            tag.lower(), " %s\r\n" % tag, "\t" + tag.lower() + " ", tag[:-1], tag + "X", tag[1:], "LP2" + tag[3:],
            tag.replace("-", "", 1), tag.replace("-", "_"), tag + "-", "-" + tag, tag[:12] + tag[13:],
            tag[:4] + tag[5:12] + "-" + tag[12:],
        ]
    out += ["", " ", "-", "---", "LP1", "LP1-", "LP1---", "LP1-12345678-123456-", "http://example.com/pets/1",
            "LP1-12345678-1234567-0", "LP1-1234567-123456-00", "\u00e9" * 21]
    for _ in range(200):  # random junk in the tag's shape and out of it
        n = rnd.choice((21, 21, 21, rnd.randrange(0, 40)))
        out.append("".join(rnd.choice(ALPHABET + "-ILOU lp") for _ in range(n)))
    return out


def gateway(text: str):
    try:
        return {"ok": check_format(text)}
    except TagError as e:
        return {"err": str(e)}


def test_node_and_gateway_agree_on_every_tag(mpy, tmp_path):
    import json

    texts = corpus()
    vectors = tmp_path / "tags.jsonl"
    vectors.write_text("".join(json.dumps({"t": t}) + "\n" for t in texts))
    got = mpy.run_vectors(vectors, """
        import pettag

        def check(v):
            try:
                return {"ok": pettag.check_format(v["t"]), "valid": pettag.valid(v["t"])}
            except pettag.TagError as e:
                return {"err": str(e), "valid": pettag.valid(v["t"])}
    """)
    assert len(got) == len(texts)
    accepted = 0
    for text, g in zip(texts, got):
        want = gateway(text)
        assert g.pop("valid") == ("ok" in want), text
        assert g == want, text
        accepted += "ok" in want
    # The corpus exercises both sides: every generated tag passes, and most damage is caught.
    assert accepted >= 63 + 40
    assert len(texts) - accepted > 1000


def test_every_single_character_error_is_caught(mpy, tmp_path):
    # Luhn mod 32 catches any one wrong character: run all of them for one tag on the node.
    tag = make_tag("7Q2M9XKD", b"k" * 32)
    r = mpy.run("""
import pettag
tag = %r
missed = []
for i in range(4, len(tag)):
    if tag[i] == "-":
        continue
    for c in pettag.ALPHABET:
        if c != tag[i] and pettag.valid(tag[:i] + c + tag[i + 1:]):
            missed.append(i)
print(len(missed), pettag.valid(tag))
""" % tag).expect_ok()
    assert r.stdout.split() == ["0", "True"]


def test_luhn32_matches_the_gateway(mpy, tmp_path):
    import json

    rnd = random.Random(5)
    strings = ["".join(rnd.choice(ALPHABET) for _ in range(rnd.randrange(1, 30))) for _ in range(300)]
    vectors = tmp_path / "luhn.jsonl"
    vectors.write_text("".join(json.dumps({"s": s}) + "\n" for s in strings))
    got = mpy.run_vectors(vectors, """
        import pettag

        def check(v):
            return pettag.luhn32(v["s"])
    """)
    assert got == [luhn32(s) for s in strings]
