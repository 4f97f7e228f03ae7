from __future__ import annotations

import ipaddress

import pytest

from keyplane.auth.clientip import client_ip

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "xff", "proxies", "expected"),
    [
        ("203.0.113.5", [], (), "203.0.113.5"),
        # A client that sends its own X-Forwarded-For straight to keyplane changes nothing.
        ("203.0.113.5", ["1.2.3.4"], (), "203.0.113.5"),
        ("203.0.113.5", ["1.2.3.4"], PROXIES, "203.0.113.5"),
        # Through a trusted proxy, the last untrusted hop is the client, read from the right.
        ("10.0.0.1", ["198.51.100.7"], PROXIES, "198.51.100.7"),
        ("10.0.0.1", ["1.2.3.4, 198.51.100.7, 10.0.0.2"], PROXIES, "198.51.100.7"),
        ("10.0.0.1", ["1.2.3.4", "198.51.100.7"], PROXIES, "198.51.100.7"),
        ("10.0.0.1", ["10.0.0.3"], PROXIES, "10.0.0.3"),
        ("10.0.0.1", [], PROXIES, "10.0.0.1"),
        ("10.0.0.1", ["garbage"], PROXIES, "10.0.0.1"),
        ("fd00::1", ["2001:db8::5"], PROXIES, "2001:db8::5"),
        ("::ffff:203.0.113.5", [], (), "203.0.113.5"),
        (None, ["1.2.3.4"], PROXIES, None),
    ],
)
def test_client_ip(peer, xff, proxies, expected):
    ip = client_ip(peer, xff, proxies)
    assert (None if ip is None else str(ip)) == expected
