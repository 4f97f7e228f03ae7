"""The client's IP address.

It is the socket peer, unless the peer is one of ``KEYPLANE_TRUSTED_PROXIES``. Only then is
``X-Forwarded-For`` read, from the right, skipping hops that are themselves trusted proxies: the
first untrusted address is the client. A client that sends its own ``X-Forwarded-For`` straight to
keyplane changes nothing, because its socket address is not a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: IPAddress, proxies: Sequence[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in proxies)


def client_ip(
    peer: str | None,
    forwarded_for: Sequence[str],
    trusted_proxies: Sequence[IPNetwork],
) -> IPAddress | None:
    """The client's address, given the socket peer and every ``X-Forwarded-For`` header value."""
    ip = _parse(peer) if peer else None
    if ip is None or not trusted_proxies or not _trusted(ip, trusted_proxies):
        return ip
    hops = [h for value in forwarded_for for h in value.split(",")]
    for hop in reversed(hops):
        hop_ip = _parse(hop)
        if hop_ip is None:
            # A garbled hop from a trusted proxy: stop at the last address we can stand behind.
            return ip
        if not _trusted(hop_ip, trusted_proxies):
            return hop_ip
        ip = hop_ip
    return ip


def scope_ip(scope: Mapping[str, Any], trusted_proxies: Sequence[IPNetwork]) -> str | None:
    """The client's address for an ASGI connection (HTTP or WebSocket), as text."""
    client = scope.get("client")
    peer = client[0] if client else None
    if not trusted_proxies:
        return peer
    forwarded = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
    ip = client_ip(peer, forwarded, trusted_proxies)
    return None if ip is None else str(ip)
