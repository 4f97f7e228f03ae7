"""The holder side's client library: it talks HTTP like any third-party tool and imports nothing
from the server packages.

- ``ccxt_exchange(profile_or_url, ...)``: a safe ccxt instance (``ccxt_async_exchange`` and
  ``ccxt_pro_exchange`` for ccxt's async and pro forms; ``ccxt_config`` for a program that builds
  its own from a config dict);
- ``KeyplaneClient``: the signing SDK;
- ``ProfileStore``/``Keystore``/``Profile``: encrypted credentials;
- ``redact.RedactingFilter``: a logging filter that keeps credentials out of logs.
"""

from __future__ import annotations

from keyplane.client.ccxt_factory import ccxt_async_exchange, ccxt_config, ccxt_exchange, ccxt_pro_exchange
from keyplane.client.keystore import Keystore
from keyplane.client.profile import Profile, Secret
from keyplane.client.sdk import KeyplaneClient
from keyplane.client.store import ProfileStore

__all__ = [
    "KeyplaneClient",
    "Keystore",
    "Profile",
    "ProfileStore",
    "Secret",
    "ccxt_async_exchange",
    "ccxt_config",
    "ccxt_exchange",
    "ccxt_pro_exchange",
]
