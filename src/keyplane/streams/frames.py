"""A WebSocket text frame as a server sends it (RFC 6455 §5.2: final, unmasked), as bytes: built
once per event and written to every subscriber's socket (pure)."""

from __future__ import annotations

import struct


def text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload
