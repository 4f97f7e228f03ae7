"""Where the master keyring comes from: ``KEYPLANE_MASTER_KEYS``, or a generated file in embedded mode."""

from __future__ import annotations

from pathlib import Path

from keyplane.errors import KeyplaneError
from keyplane.keys.secretbox import Keyring, SecretBoxError, load_or_create_keyfile, parse_keyring
from keyplane.settings import Settings


class MasterKeyError(KeyplaneError):
    code = "master_key_error"
    status = 500


def keyfile_path(settings: Settings) -> Path:
    return settings.data_dir / "master.keys"


class MasterKeys:
    """Holds the keyring and reloads it when a ciphertext names a key it does not have yet
    (another process rotated the embedded keyfile)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.from_file = settings.master_keys is None
        self.keyring = self._load()

    def __repr__(self) -> str:
        return f"MasterKeys(from_file={self.from_file}, ids={self.keyring.ids})"

    def _load(self) -> Keyring:
        try:
            if self.settings.master_keys is not None:
                return parse_keyring(self.settings.master_keys.get_secret_value())
            if not self.settings.is_sqlite:
                # Every node must decrypt every secret: a per-node generated keyfile would not do.
                raise MasterKeyError(
                    "KEYPLANE_MASTER_KEYS is required with PostgreSQL (all nodes share it); "
                    "make one with: keyplane admin generate-master-key"
                )
            return load_or_create_keyfile(keyfile_path(self.settings))
        except SecretBoxError as e:
            raise MasterKeyError(f"master key: {e}") from e

    def reload(self) -> bool:
        """Re-read the keyfile; True if the keyring changed."""
        if not self.from_file:
            return False
        fresh = self._load()
        changed = fresh.ids != self.keyring.ids
        self.keyring = fresh
        return changed
