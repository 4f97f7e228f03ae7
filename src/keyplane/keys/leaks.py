"""Acting on leaked credentials: match what a scanner found to this server's keys, and revoke them.

A found API key is looked up directly. A found secret is matched by decrypting the stored secrets
and comparing in constant time: a leaked secret without its key still identifies the key it belongs to.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from keyplane.accounts.models import User
from keyplane.audit.events import EventType
from keyplane.crypto.secretbox import SecretBoxError
from keyplane.db import utcnow
from keyplane.keys import format as keyformat
from keyplane.keys import rules
from keyplane.keys.models import ApiKey
from keyplane.keys.records import audit_key
from keyplane.keys.rules import ADMIN_CLI, Actor
from keyplane.keys.service import KeyService

log = logging.getLogger("keyplane.keys")


@dataclass(frozen=True, slots=True)
class Leak:
    kind: str  # api_key | secret
    masked: str
    where: str  # file:line
    api_key: str | None = None  # the key it belongs to, when this server knows it
    owner: str | None = None
    status: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "credential": self.masked,
            "where": self.where,
            "api_key": self.api_key,
            "owner": self.owner,
            "status": self.status,
        }


def match(service: KeyService, found: Iterable[tuple[keyformat.Credential, str]]) -> list[Leak]:
    """Identify each (credential, location) on this server. Unknown credentials come back unmatched."""
    items = list(found)
    out: list[Leak] = []
    secrets_wanted = [c for c, _ in items if c.kind == "secret"]
    owners_of_secrets: dict[str, str] = {}
    with service.db.read() as s:
        if secrets_wanted:
            rows = s.execute(
                select(ApiKey.public_id, ApiKey.secret_ciphertext, ApiKey.previous_secret_ciphertext).where(
                    ApiKey.key_type == "hmac", ApiKey.status != "revoked"
                )
            ).all()
            unreadable = 0
            for public_id, current, previous in rows:
                for token in (current, previous):
                    if not token:
                        continue
                    try:
                        plain = service.records.open_secret(token, public_id)
                    except SecretBoxError:
                        unreadable += 1  # one bad row must not stop a leak response
                        continue
                    for cred in secrets_wanted:
                        if hmac.compare_digest(plain, cred.value.encode("ascii")):
                            owners_of_secrets[cred.value] = public_id
            if unreadable:
                log.warning("%d stored secret(s) could not be decrypted with this master keyring", unreadable)
        for cred, where in items:
            key_id = cred.value if cred.kind == "api_key" else owners_of_secrets.get(cred.value)
            row = None
            if key_id is not None:
                row = s.execute(
                    select(ApiKey.public_id, ApiKey.status, User.email)
                    .join(User, User.id == ApiKey.user_id)
                    .where(ApiKey.public_id == key_id)
                ).first()
            out.append(
                Leak(
                    kind=cred.kind,
                    masked=keyformat.mask(cred.value),
                    where=where,
                    api_key=row.public_id if row else None,
                    owner=row.email if row else None,
                    status=row.status if row else None,
                )
            )
    return out


def revoke(service: KeyService, leaks: Iterable[Leak], actor: Actor = ADMIN_CLI) -> list[str]:
    """Revoke every matched key, recording every place it leaked (for a key revoked already too:
    the evidence is what an owner reads to learn where the credential went).

    Each key is revoked in the same transaction as the events that say where it leaked, so a crash
    can never leave a revoked key without its evidence, nor evidence written for a key left live.
    Returns the keys this call revoked.
    """
    found: dict[str, list[tuple[str, str]]] = {}
    for leak in leaks:
        if leak.api_key is None:
            continue
        places = found.setdefault(leak.api_key, [])
        if (leak.kind, leak.where) not in places:
            places.append((leak.kind, leak.where))
    return [key for key, places in found.items() if revoke_leaked(service, key, places, actor=actor)]


def revoke_leaked(
    service: KeyService,
    public_id: str,
    found: Sequence[tuple[str, str]],
    *,
    actor: Actor = ADMIN_CLI,
    now: dt.datetime | None = None,
) -> bool:
    """Revoke a leaked key and record where it leaked, in one transaction.

    ``found`` holds (kind, where) for each place the credential was seen; each becomes a
    ``key:api_key:leaked`` event, even if the key was revoked already. Returns True if this call
    revoked the key. Either the revocation and all its evidence are written, or nothing is.
    """
    now = now or utcnow()
    with service.db.transaction() as s:
        row = service.row(s, public_id, None, lock=True)
        revoked = row.status != "revoked"
        events = [(EventType.KEY_LEAKED, {"where": where, "kind": kind}) for kind, where in found]
        if revoked:
            rules.mark_revoked(row, now)
            events.insert(0, (EventType.KEY_REVOKED, {"reason": "leaked"}))
        for event, facts in events:
            audit_key(s, event, row, actor, facts, now)
    if revoked:
        service.notify([public_id])
    return revoked
