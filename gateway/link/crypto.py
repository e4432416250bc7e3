"""Per-node keys, AES-128-CTR and the truncated HMAC-SHA256 tag of link protocol v1."""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_SIZE = 32
TAG_SIZE = 8
UP = 0
DOWN = 1


class LinkKeys:
    """The two sub-keys derived from a node's 32-byte key (docs/protocol.md section 2)."""

    __slots__ = ("enc_key", "mac_key", "_ecb", "_inner", "_outer", "fp")

    def __init__(self, key: bytes):
        if len(key) != KEY_SIZE:
            raise ValueError("a node key is %d bytes, got %d" % (KEY_SIZE, len(key)))
        self.enc_key = hmac.digest(key, b"linli v1 enc", "sha256")[:16]
        self.mac_key = hmac.digest(key, b"linli v1 mac", "sha256")
        # Names the key without revealing it (the replay window remembers which key it saw).
        self.fp = hashlib.sha256(self.mac_key).hexdigest()[:16]
        # ECB on a reused context: no padding, no state between calls, so one per key is safe.
        self._ecb = Cipher(algorithms.AES(self.enc_key), modes.ECB()).encryptor()
        # HMAC (RFC 2104) with its keyed inner and outer SHA-256 states computed once: a tag is
        # then two copies and three updates, less than half of hmac.digest()'s cost, which
        # keys both states again for every frame (twice per frame received: its tag and its ack's).
        block = self.mac_key.ljust(64, b"\0")  # 32 bytes: shorter than SHA-256's block, never hashed
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def tag(self, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:TAG_SIZE]

    def crypt(self, node_id: bytes, direction: int, counter: int, data: bytes) -> bytes:
        """Encrypt or decrypt (CTR is symmetric) one payload.

        CTR built from one cached ECB context per key: creating a ``Cipher`` per frame cost
        more than the AES itself (bench/protocol.py).
        """
        if not data:
            return b""
        n = len(data)
        nonce = node_prefix(node_id) + _DIRECTION[direction] + counter.to_bytes(4, "big")
        nb = (n + 15) >> 4
        # nonce + nonce.join([c0, c1, ...]) is nonce c0 nonce c1 ...: the counter blocks, one join.
        ctrs = _CTRS[:nb] if nb <= len(_CTRS) else [i.to_bytes(4, "big") for i in range(nb)]
        stream = self._ecb.update(nonce + nonce.join(ctrs))[:n]
        return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


_CTRS = tuple(i.to_bytes(4, "big") for i in range(16))  # a frame's payload fits in 16 blocks
_DIRECTION = (b"\x00", b"\x01")
_prefix_cache: dict[bytes, bytes] = {}


def node_prefix(node_id: bytes) -> bytes:
    """SHA-256(node id)[0:7]: the node part of every CTR nonce (cached: it never changes)."""
    p = _prefix_cache.get(node_id)
    if p is None:
        if len(_prefix_cache) > 4096:
            _prefix_cache.clear()
        p = _prefix_cache[node_id] = hashlib.sha256(node_id).digest()[:7]
    return p
