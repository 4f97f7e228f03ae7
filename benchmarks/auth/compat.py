"""The few internal APIs the benchmarks touch that moved in the consolidation after 31d8381.

The benchmarks run against the current tree and, for before/after comparisons, against an older
checkout put first on ``PYTHONPATH``. Each name here is looked up once, whichever tree is imported:

- key creation: the current ``KeyService.create`` needs a step-up proof (``StepUp.operator()``, the
  operator's CLI); 31d8381 had no step-up and took no such argument;
- the cacheable key record: ``keys.records.load`` now, ``keys.load_record`` at 31d8381;
- master keys: ``keyplane.crypto.keyring`` now, ``keyplane.keys.secretbox`` at 31d8381;
- the expiry sweep and the last-used writes: on ``keys.records`` now, on ``keys`` at 31d8381;
- a gate that admits everything (:class:`OpenGate`, for the pipeline's cost without the gate): the
  benchmarks' own now; the pipeline's default at 31d8381.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    from keyplane.accounts.stepup import StepUp

    def operator_proof() -> dict[str, Any]:
        """What ``KeyService.create`` needs to know the operator asked for the key."""
        return {"step_up": StepUp.operator()}

except ImportError:  # 31d8381: no step-up proofs

    def operator_proof() -> dict[str, Any]:
        return {}


try:
    from keyplane.auth.admission import Admission
except ImportError:  # 31d8381
    from keyplane.auth.gates import Admission  # type: ignore[attr-defined,no-redef,unused-ignore]

_UNTRACKED = Admission()

try:
    from keyplane.crypto.keyring import encode_master_key, new_master_key
except ImportError:  # 31d8381
    from keyplane.keys.secretbox import encode_master_key, new_master_key  # type: ignore[no-redef,import-not-found,unused-ignore]

__all__ = [
    "OpenGate",
    "create_key",
    "encode_master_key",
    "key_records",
    "new_master_key",
    "operator_proof",
    "record_loader",
]


def create_key(svc: Any, user_id: int, **kwargs: Any) -> Any:
    """``svc.keys.create(user_id, **kwargs)``, as the operator."""
    return svc.keys.create(user_id, **kwargs, **operator_proof())


def record_loader(svc: Any) -> Callable[[str], Any]:
    """The function that loads a key's cacheable record by its API key."""
    records = getattr(svc.keys, "records", None)
    return records.load if records is not None else svc.keys.load_record  # type: ignore[no-any-return]


def key_records(svc: Any) -> Any:
    """The object with ``sweep`` and ``record_usage``: ``keys.records`` now, ``keys`` at 31d8381."""
    return getattr(svc.keys, "records", svc.keys)


class OpenGate:
    """A request gate that admits everything: the pipeline's cost without the replay guard and
    rate limits (``keyplane.auth.admission.RequestGate``'s contract)."""

    in_process = True
    replay_since_s = 0.0

    def admit_now(self, *args: Any, **kwargs: Any) -> Any:
        return _UNTRACKED

    async def admit(self, *args: Any, **kwargs: Any) -> Any:
        return _UNTRACKED

    async def admit_public(self, *args: Any, **kwargs: Any) -> Any:
        return _UNTRACKED

    def locked_out(self, client_ip: str) -> float:
        return 0.0

    def note_failure(self, client_ip: str) -> None:
        return None
