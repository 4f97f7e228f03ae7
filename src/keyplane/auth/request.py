"""What every dialect turns a signed request into, for the one pipeline that checks it.

A dialect (``dialects/binance.py``, ``dialects/httpsig.py``) only parses: it reads the key id, the
exact bytes that were signed, the decoded signature, the replay token and the request's time claim.
Nothing in a :class:`SignedRequest` is verified; :meth:`Authenticator.authenticate` is where every
check runs, once, in one order, for every dialect.
"""

from __future__ import annotations

from typing import NamedTuple

from keyplane.auth.routes import Dialect


class SignedRequest(NamedTuple):
    """A signed request as its dialect read it. Nothing here is verified yet.

    A named tuple rather than a dataclass: one is made per signed request, and it is read, never
    changed."""

    dialect: Dialect
    # The key id as sent (None: the request names none); its format is checked by the pipeline.
    key_id: str | None
    # The exact bytes the signature covers.
    payload: bytes
    # The decoded signature: b"" when it does not decode (``signature_text`` then says how it came).
    signature: bytes
    # The key type the signature is for, as the request shows it (httpsig ``alg``; the Binance
    # encoding: hex for hmac, base64 for ed25519), or None when it does not say (or not decodable).
    algorithm: str | None
    # Names this request for the replay guard: the signature's bytes, or the httpsig nonce. Never
    # a spelling: two encodings of one signature are one token.
    replay_token: str
    # True: the token is accepted once (a state-changing request; any httpsig request). False: it may
    # come again on the same method and route only (a Binance read a client retries).
    single_use: bool
    # The request's time claim and the server times between which it is accepted:
    # not_before_s < now <= not_after_s.
    signed_at_s: float
    not_before_s: float
    not_after_s: float
    # The request's parameters (query and form body), decoded.
    params: dict[str, str]
    # A body bound by a digest that the signature covers (httpsig: the Content-Digest header and
    # the body), checked before the signature; None when the payload holds the body itself.
    digest: tuple[str | None, bytes] | None = None
    # The signature as received, for precise rejections only.
    signature_text: str = ""
