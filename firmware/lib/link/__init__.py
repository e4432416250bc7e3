"""linli link protocol v1, node side (docs/protocol.md).

Import the part you need, nothing is loaded here::

    from link.crypto import LinkKeys      # keys, HMAC-SHA256, AES-128-CTR
    from link import frame                # seal / open a frame, kinds, flags, reason codes
    from link import serial               # COBS + CRC-16 wire frames, streaming decoder
    from link.replay import Window, Reservation
"""
