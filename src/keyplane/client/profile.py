"""A profile: one exchange account's credentials and what is known about them.

Secret values are wrapped in ``Secret``, whose ``repr`` and ``str`` never show the value, so a
profile can be printed, logged or end up in a traceback without leaking anything.

Profiles also come from the environment, for unattended servers that cannot type a passphrase::

    KEYPLANE_PROFILE_<NAME>_API_KEY        required
    KEYPLANE_PROFILE_<NAME>_SECRET         HMAC secret (or the PEM of an Ed25519 private key)
    KEYPLANE_PROFILE_<NAME>_PRIVATE_KEY_FILE   path of an Ed25519 private key PEM, instead of SECRET
    KEYPLANE_PROFILE_<NAME>_PASSWORD       for exchanges that need one (ccxt ``password``)
    KEYPLANE_PROFILE_<NAME>_EXCHANGE       keyplane (default), binance, or any ccxt exchange id
    KEYPLANE_PROFILE_<NAME>_BASE_URL       the keyplane server (default http://127.0.0.1:8000)

``<NAME>`` is upper case in the variable and lower case as a profile name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyplane.client.errors import KeystoreError
from keyplane.client.redact import mask_key

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
ENV_PREFIX = "KEYPLANE_PROFILE_"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
CREDENTIALS = ("api_key", "secret", "private_key_pem", "password")  # the fields a keystore encrypts
_ENV_FIELDS = ("API_KEY", "SECRET", "PRIVATE_KEY_FILE", "PASSWORD", "EXCHANGE", "BASE_URL")


class Secret:
    """A string that does not print. ``reveal()`` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        import hmac

        return isinstance(other, Secret) and hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise KeystoreError(f"invalid profile name {name!r}: use lower-case letters, digits, '-' and '_'")
    return name


@dataclass(frozen=True)
class Profile:
    """One account's credentials. ``exchange`` is ``keyplane`` or a ccxt exchange id."""

    name: str
    exchange: str = "keyplane"
    api_key: Secret | None = None
    secret: Secret | None = None
    private_key_pem: Secret | None = None
    password: Secret | None = None
    base_url: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = "keystore"

    def __repr__(self) -> str:
        key = mask_key(self.api_key.reveal()) if self.api_key else None
        return (
            f"Profile(name={self.name!r}, exchange={self.exchange!r}, api_key={key!r}, "
            f"base_url={self.base_url!r}, source={self.source!r})"
        )

    __str__ = __repr__

    @property
    def is_keyplane(self) -> bool:
        return self.exchange == "keyplane"

    @property
    def url(self) -> str:
        return (self.base_url or DEFAULT_BASE_URL).rstrip("/")

    @property
    def key_hint(self) -> str:
        return mask_key(self.api_key.reveal()) if self.api_key else ""

    @property
    def signing_secret(self) -> str | None:
        """What ccxt takes as ``secret``: the HMAC secret, or the private key PEM."""
        if self.private_key_pem is not None:
            return self.private_key_pem.reveal()
        return self.secret.reveal() if self.secret else None

    def public(self) -> dict[str, Any]:
        """Everything but the credentials: safe to show and to store unencrypted."""
        return {
            "exchange": self.exchange,
            "base_url": self.base_url,
            "key_hint": self.key_hint,
            "key_type": "ed25519" if self.private_key_pem is not None else "hmac",
            **self.meta,
        }

    def credentials(self) -> dict[str, str]:
        """The secret part, for encryption."""
        return {name: value.reveal() for name in CREDENTIALS if (value := getattr(self, name)) is not None}


def from_parts(name: str, public: Mapping[str, Any], credentials: Mapping[str, str], source: str) -> Profile:
    meta = {k: v for k, v in public.items() if k not in ("exchange", "base_url", "key_hint", "key_type")}
    return Profile(
        name=name,
        exchange=str(public.get("exchange") or "keyplane"),
        base_url=public.get("base_url"),
        meta=meta,
        source=source,
        **{k: Secret(v) for k, v in credentials.items() if k in CREDENTIALS},
    )


def env_profiles(environ: Mapping[str, str] | None = None) -> dict[str, Profile]:
    """Profiles defined by ``KEYPLANE_PROFILE_<NAME>_*`` variables."""
    env = os.environ if environ is None else environ
    grouped: dict[str, dict[str, str]] = {}
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :]
        for suffix in _ENV_FIELDS:
            if rest.endswith("_" + suffix) and len(rest) > len(suffix) + 1:
                grouped.setdefault(rest[: -len(suffix) - 1].lower(), {})[suffix] = value
                break
    out: dict[str, Profile] = {}
    for name, fields in grouped.items():
        if "API_KEY" not in fields:
            raise KeystoreError(f"profile {name!r} from the environment has no {ENV_PREFIX}{name.upper()}_API_KEY")
        pem = None
        if "PRIVATE_KEY_FILE" in fields:
            try:
                pem = Path(fields["PRIVATE_KEY_FILE"]).read_text()
            except OSError as e:
                raise KeystoreError(f"profile {name!r}: cannot read its private key file ({e.strerror})") from None
        creds = {"api_key": fields["API_KEY"]}
        if pem is not None:
            creds["private_key_pem"] = pem
        elif "SECRET" in fields:
            creds["secret"] = fields["SECRET"]
        if "PASSWORD" in fields:
            creds["password"] = fields["PASSWORD"]
        public = {"exchange": fields.get("EXCHANGE", "keyplane").lower(), "base_url": fields.get("BASE_URL")}
        out[check_name(name)] = from_parts(name, public, creds, "env")
    return out
