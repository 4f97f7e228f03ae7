"""The native dialect: RFC 9421 HTTP Message Signatures, with RFC 9530 Content-Digest. Pure.

A native request carries::

    Signature-Input: sig1=("@method" "@path" "@query" "content-digest");created=1700000000;
                     nonce="2b0f...";keyid="kp_live_...";alg="hmac-sha256"
    Signature: sig1=:<base64 signature>:
    Content-Digest: sha-256=:<base64 SHA-256 of the body>:      (whenever there is a body)

The signature must cover ``@method``, ``@path`` and ``@query`` (so it cannot be moved to another
endpoint, method or query), and ``content-digest`` whenever the request has a body (so it cannot
be moved to another body). ``created``, ``nonce`` and ``keyid`` are required: ``created`` bounds
the replay window, and the nonce is accepted once per key inside it. Other components that a
library adds (``@authority``, ``@target-uri``, ``date``...) are verified like any other.

:func:`parse` reads the headers without touching a key; :func:`signature_base` rebuilds the exact
bytes that were signed; :func:`verify_content_digest` checks the body. Everything raises an
:class:`AuthError` subclass with its own code.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from keyplane.auth import errors as E
from keyplane.auth.dialects import sfv
from keyplane.auth.errors import (
    AlgorithmUnknown,
    ComponentMissing,
    ContentDigestInvalid,
    ContentDigestMismatch,
    SignatureInputMalformed,
    SignatureMalformed,
)
from keyplane.auth.request import SignedRequest

# alg parameter -> the key type that can verify it
ALGORITHMS = {"hmac-sha256": "hmac", "ed25519": "ed25519"}
REQUIRED = ("@method", "@path", "@query")
DIGESTS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
_DERIVED = frozenset({"@method", "@path", "@query", "@authority", "@scheme", "@target-uri", "@request-target"})
_NONCE_MIN, _NONCE_MAX = 8, 128


@dataclass(frozen=True, slots=True)
class HttpSigRequest:
    """The parsed signature headers. Nothing here is verified yet."""

    label: str
    inner: sfv.InnerList
    components: tuple[str, ...]
    key_id: str
    alg: str | None
    created: int
    expires: int | None
    nonce: str
    signature: bytes


@dataclass(frozen=True, slots=True)
class Target:
    """What the server received, in the raw forms RFC 9421 signs."""

    method: str
    path: str  # raw, percent-encoded, no query
    query: str  # raw, without "?"
    authority: str
    scheme: str
    headers: Mapping[str, str]  # lowercase name -> combined value


def _str_param(params: dict[str, sfv.BareItem], name: str, required: bool) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise SignatureInputMalformed(f"Signature-Input has no '{name}' parameter; keyplane requires it")
        return None
    if not isinstance(value, str):
        raise SignatureInputMalformed(f"the Signature-Input '{name}' parameter must be a string")
    return value


def _int_param(params: dict[str, sfv.BareItem], name: str, required: bool) -> int | None:
    value = params.get(name)
    if value is None:
        if required:
            raise SignatureInputMalformed(f"Signature-Input has no '{name}' parameter; keyplane requires it")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SignatureInputMalformed(f"the Signature-Input '{name}' parameter must be an integer (Unix seconds)")
    return value


def parse(headers: Mapping[str, str], has_body: bool) -> HttpSigRequest:
    """Read ``Signature-Input`` and ``Signature``. Raises on malformed or incomplete signatures."""
    raw_input = headers.get("signature-input")
    raw_sig = headers.get("signature")
    if not raw_input or not raw_sig:
        raise E.SignatureMissing(
            "this endpoint needs an RFC 9421 signature: the Signature-Input and Signature headers are required"
        )
    try:
        inputs = sfv.parse_inner_list_dict(raw_input)
    except sfv.SfvError as e:
        raise SignatureInputMalformed(f"the Signature-Input header is malformed: {e}") from e
    try:
        signatures = sfv.parse_bytes_dict(raw_sig)
    except sfv.SfvError as e:
        raise SignatureMalformed(f"the Signature header is malformed: {e}") from e
    # With several signatures, the first label present in both headers is the one keyplane checks.
    label = next((name for name in inputs if name in signatures), None)
    if label is None:
        raise SignatureMalformed("the Signature header has no member with a label from Signature-Input")
    inner = inputs[label]
    components: list[str] = []
    for name, params in inner.items:
        if params:
            raise SignatureInputMalformed(f"component {name!r} has parameters; keyplane accepts plain components")
        if name != name.lower() or name in components or name == "@signature-params":
            raise SignatureInputMalformed(f"component {name!r} is repeated, not lowercase, or not allowed")
        if name.startswith("@") and name not in _DERIVED:
            raise SignatureInputMalformed(f"derived component {name!r} is not supported on requests")
        components.append(name)
    for required in REQUIRED:
        if required not in components:
            raise ComponentMissing(
                f"the signature does not cover the required component {required!r}: keyplane requires "
                f"{', '.join(REQUIRED)} (and content-digest when there is a body)",
                required,
            )
    if has_body and "content-digest" not in components:
        raise ComponentMissing(
            "the request has a body but the signature does not cover the required component 'content-digest'",
            "content-digest",
        )
    params = inner.params
    alg = _str_param(params, "alg", required=False)
    if alg is not None and alg not in ALGORITHMS:
        raise AlgorithmUnknown(f"unknown signature algorithm {alg!r}: use hmac-sha256 or ed25519")
    nonce = _str_param(params, "nonce", required=True) or ""
    if not (_NONCE_MIN <= len(nonce) <= _NONCE_MAX):
        raise SignatureInputMalformed(f"the nonce must be {_NONCE_MIN} to {_NONCE_MAX} characters long")
    return HttpSigRequest(
        label=label,
        inner=inner,
        components=tuple(components),
        key_id=_str_param(params, "keyid", required=True) or "",
        alg=alg,
        created=_int_param(params, "created", required=True) or 0,
        expires=_int_param(params, "expires", required=False),
        nonce=nonce,
        signature=signatures[label],
    )


_HEADER_LIMIT = 64  # header fields read from a request; others are ignored


def _headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """Lowercase name -> value, repeated fields combined with ", " (RFC 9421 §2.1)."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"][: _HEADER_LIMIT * 2]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1").strip()
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _target(scope: Mapping[str, Any], headers: dict[str, str]) -> Target:
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1").split("?", 1)[0] if raw_path else scope["path"]
    server = scope.get("server")
    authority = headers.get("host") or (f"{server[0]}:{server[1]}" if server else "")
    return Target(
        method=scope["method"],
        path=path,
        query=scope.get("query_string", b"").decode("latin-1"),
        authority=authority,
        scheme=scope.get("scheme", "http"),
        headers=headers,
    )


def read(scope: Mapping[str, Any], body: bytes, past_s: int, future_s: int) -> SignedRequest:
    """The request (an ASGI HTTP scope and its body) as the pipeline checks it: the signature base,
    the decoded signature, the nonce as its replay token (every nonce is single-use), and the
    window ``created - future_s < now <= min(created + past_s, expires)``."""
    headers = _headers(scope)
    req = parse(headers, has_body=bool(body))
    target = _target(scope, headers)
    base = signature_base(req, target)
    not_after = float(req.created + past_s if req.expires is None else min(req.created + past_s, req.expires))
    return SignedRequest(
        "httpsig",
        req.key_id,
        base,
        req.signature,
        ALGORITHMS[req.alg] if req.alg is not None else None,
        "nonce:" + req.nonce,
        True,
        float(req.created),
        float(req.created - future_s),
        not_after,
        dict(parse_qsl(target.query, keep_blank_values=True)),
        (headers.get("content-digest"), body) if body or "content-digest" in req.components else None,
    )


def reject_time(created: float, not_after: float, now_s: float, past_s: int, future_s: int) -> None:
    """Raise the precise rejection for a request outside [created - future_s, created + past_s],
    or past its ``expires`` (``not_after``)."""
    if created >= now_s + future_s:
        raise E.TimestampOutsideWindow(
            f"the signature was created {int(created - now_s)} s in the future (server time {int(now_s)}, "
            f"at most {future_s} s ahead accepted): sync your clock or use GET /v1/time"
        )
    if created < now_s - past_s:
        raise E.TimestampOutsideWindow(
            f"the signature was created {int(now_s - created)} s ago (server time {int(now_s)}, at most "
            f"{past_s} s accepted): sign each request when you send it, and sync your clock"
        )
    raise E.TimestampOutsideWindow(f"the signature expired at {int(not_after)} (server time {int(now_s)})")


def reject_algorithm(algorithm: str, key_type: str) -> None:
    name = "hmac-sha256" if algorithm == "hmac" else "ed25519"
    raise AlgorithmUnknown(
        f"the signature says alg={name!r} but this key is an {key_type} key: use "
        + ("hmac-sha256" if key_type == "hmac" else "ed25519")
    )


def _component_value(name: str, target: Target) -> str:
    if name == "@method":
        return target.method.upper()
    if name == "@path":
        return target.path or "/"
    if name == "@query":
        return "?" + target.query
    if name == "@authority":
        return target.authority.lower()
    if name == "@scheme":
        return target.scheme.lower()
    if name == "@target-uri":
        query = "?" + target.query if target.query else ""
        return f"{target.scheme.lower()}://{target.authority.lower()}{target.path or '/'}{query}"
    if name == "@request-target":
        return (target.path or "/") + ("?" + target.query if target.query else "")
    value = target.headers.get(name)
    if value is None:
        raise ComponentMissing(f"the signature covers the header {name!r} but the request does not carry it", name)
    return value


def signature_base(req: HttpSigRequest, target: Target) -> bytes:
    """The exact bytes that were signed (RFC 9421 §2.5)."""
    lines = [f'"{name}": {_component_value(name, target)}' for name in req.components]
    lines.append(f'"@signature-params": {sfv.serialize_inner_list(req.inner)}')
    text = "\n".join(lines)
    try:
        return text.encode("ascii")
    except UnicodeEncodeError as e:
        raise SignatureInputMalformed("a covered component has non-ASCII characters") from e


def verify_content_digest(header: str | None, body: bytes) -> None:
    """Every supported member of ``Content-Digest`` must match the body; at least one must be present."""
    if header is None:
        raise ComponentMissing("the request has a body but no Content-Digest header (RFC 9530)", "content-digest")
    try:
        members = sfv.parse_bytes_dict(header)
    except sfv.SfvError as e:
        raise ContentDigestInvalid(f"the Content-Digest header is malformed: {e}") from e
    checked = False
    for alg, expected in members.items():
        hasher = DIGESTS.get(alg)
        if hasher is None:
            continue
        if not hmac.compare_digest(hasher(body).digest(), expected):
            raise ContentDigestMismatch(f"the body does not match its Content-Digest ({alg})")
        checked = True
    if not checked:
        raise ContentDigestInvalid("Content-Digest has no supported algorithm: use sha-256 or sha-512")
