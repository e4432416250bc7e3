"""Keys, HMAC-SHA256 and AES-128-CTR for the link (docs/protocol.md, section 2).

MicroPython has no ``hmac`` module and its ``hashlib.sha256`` objects have no ``copy()`` (checked
on 1.29), so :class:`Mac` implements RFC 2104 by keeping the two 64-byte padded key blocks
(``K ^ ipad``, ``K ^ opad``) computed once and hashing them in front of each message. AES-CTR is
built on ``cryptolib.aes(key, 1)`` (ECB): one 16-byte counter block and one keystream block are
kept in the :class:`LinkKeys` object and reused for every frame, so encrypting allocates nothing
per byte::

    from link.crypto import LinkKeys, hmac_sha256
    keys = LinkKeys(key32)           # once at boot: derives enc_key and mac_key
    keys.ctr(b"bin-01", 0, 5, mv)    # XOR mv in place with the keystream of uplink counter 5
    tag = keys.mac.digest(mv)[:8]    # 32-byte HMAC-SHA256 under mac_key

    hmac_sha256(b"key", b"message")  # plain RFC 2104, for anything else
"""

import hashlib
import struct

import cryptolib
from micropython import const

_BLOCK = const(64)  # SHA-256 block size, the HMAC pad length
_AES_ECB = const(1)


class Mac:
    """HMAC-SHA256 under one key, with the padded key blocks precomputed.

    ``Mac(key).digest(data)`` equals ``hmac.new(key, data, sha256).digest()`` on CPython.
    ``data`` may be ``bytes``, ``bytearray`` or a ``memoryview`` slice (nothing is copied).
    """

    def __init__(self, key):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        k = bytearray(_BLOCK)
        k[0 : len(key)] = key
        for i in range(_BLOCK):
            k[i] ^= 0x36
        self._ipad = bytes(k)
        for i in range(_BLOCK):
            k[i] ^= 0x6A  # 0x36 ^ 0x5C: turn the ipad block into the opad block
        self._opad = bytes(k)

    def digest(self, data):
        """Return the 32-byte HMAC of ``data``."""
        h = hashlib.sha256(self._ipad)
        h.update(data)
        inner = h.digest()
        h = hashlib.sha256(self._opad)
        h.update(inner)
        return h.digest()


def hmac_sha256(key, msg):
    """RFC 2104 HMAC-SHA256 of ``msg`` under ``key`` (any length); returns 32 bytes."""
    return Mac(key).digest(msg)


def derive(key):
    """Return ``(enc_key, mac_key)``: 16 and 32 bytes derived from the 32-byte node key."""
    if len(key) != 32:
        raise ValueError("node key must be 32 bytes, got %d" % len(key))
    return hmac_sha256(key, b"linli v1 enc")[0:16], hmac_sha256(key, b"linli v1 mac")


class LinkKeys:
    """The sub-keys of one node key, derived once, plus the reusable CTR buffers.

    Attributes: ``enc`` (the ``cryptolib.aes`` ECB object for enc_key) and ``mac`` (a
    :class:`Mac` under mac_key). One object per node key; not safe to share between tasks
    that encrypt at the same time (the CTR buffers are reused).
    """

    def __init__(self, key):
        enc_key, mac_key = derive(key)
        self.enc = cryptolib.aes(enc_key, _AES_ECB)
        self.mac = Mac(mac_key)
        self._blk = bytearray(16)  # counter block: SHA-256(id)[0:7] | dir | counter | i
        self._ks = bytearray(16)  # keystream block
        self._nid = None  # node id whose hash prefix is in _blk[0:7]

    def ctr(self, node_id, down, counter, data):
        """XOR ``data`` (a writable buffer) in place with the AES-128-CTR keystream.

        ``down`` is 1 for a downlink frame (gateway to node), 0 for uplink. Encrypting and
        decrypting are the same operation.
        """
        blk = self._blk
        if self._nid is None or self._nid != node_id:
            nid = bytes(node_id)
            blk[0:7] = memoryview(hashlib.sha256(nid).digest())[0:7]
            self._nid = nid
        blk[7] = 1 if down else 0
        struct.pack_into(">I", blk, 8, counter)
        ks = self._ks
        enc = self.enc
        n = len(data)
        pos = 0
        i = 0
        while pos < n:
            struct.pack_into(">I", blk, 12, i)
            enc.encrypt(blk, ks)
            end = pos + 16
            if end > n:
                end = n
            j = 0
            while pos < end:
                data[pos] ^= ks[j]
                pos += 1
                j += 1
            i += 1
