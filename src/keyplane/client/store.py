"""Where profiles come from: the environment first, then the encrypted keystore file.

The keystore file is ``$KEYPLANE_KEYSTORE`` or ``<holder dir>/keystore.kps``; the holder dir is
``$KEYPLANE_HOLDER_DIR`` or ``~/.keyplane``. Its passphrase comes, in order, from:

1. the ``passphrase`` argument (a caller that already asked);
2. ``KEYPLANE_KEYSTORE_PASSPHRASE`` (unattended servers);
3. the OS keyring (service ``keyplane-keystore``, user = the keystore path), when a keyring backend
   is available and ``remember_passphrase`` stored it there;
4. an interactive prompt, when stdin is a terminal.

Otherwise ``PassphraseUnavailable`` says which of these to set up.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from keyplane.client.errors import KeystoreCorrupt, PassphraseUnavailable, ProfileNotFound
from keyplane.client.keystore import Keystore
from keyplane.client.profile import Profile, env_profiles

PASSPHRASE_ENV = "KEYPLANE_KEYSTORE_PASSPHRASE"
KEYRING_SERVICE = "keyplane-keystore"

Prompt = Callable[[str], str]


def holder_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("KEYPLANE_HOLDER_DIR") or Path.home() / ".keyplane").expanduser()


def keystore_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    explicit = env.get("KEYPLANE_KEYSTORE")
    return Path(explicit).expanduser() if explicit else holder_dir(env) / "keystore.kps"


def _keyring(path: Path, passphrase: str | None = None) -> str | None:
    """The passphrase stored for ``path`` in the OS keyring, or, given ``passphrase``, store it
    there and return it. None when no usable keyring exists (no backend, a locked backend, no
    D-Bus), or nothing is stored."""
    try:
        import keyring
        from keyring.backends import fail

        if isinstance(keyring.get_keyring(), fail.Keyring):
            return None
        if passphrase is not None:
            keyring.set_password(KEYRING_SERVICE, str(path.resolve()), passphrase)
            return passphrase
        return keyring.get_password(KEYRING_SERVICE, str(path.resolve())) or None
    except Exception:
        return None


def remember_passphrase(path: Path, passphrase: str) -> bool:
    """Store the passphrase in the OS keyring; False if no usable keyring exists."""
    return _keyring(path, passphrase) is not None


def get_passphrase(
    path: Path,
    passphrase: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    prompt: Prompt | None = None,
    interactive: bool | None = None,
) -> str:
    """The passphrase for ``path`` from the first source that has one (see the module docstring)."""
    if passphrase:
        return passphrase
    env = os.environ if environ is None else environ
    if env.get(PASSPHRASE_ENV):
        return env[PASSPHRASE_ENV]
    stored = _keyring(path)
    if stored:
        return stored
    if interactive is None:
        interactive = sys.stdin.isatty()
    if interactive or prompt is not None:
        return (prompt or getpass.getpass)(f"Passphrase for {path}: ")
    raise PassphraseUnavailable(
        f"the keystore {path} needs a passphrase: run in a terminal, set {PASSPHRASE_ENV}, "
        "or store it in the OS keyring with `keyplane keys add --remember`"
    )


class ProfileStore:
    """Profiles from the environment and the keystore, opened lazily (a command that only uses
    environment profiles never asks for a passphrase)."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        passphrase: str | None = None,
        environ: Mapping[str, str] | None = None,
        prompt: Prompt | None = None,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self.path = Path(path) if path else keystore_path(self._environ)
        self._passphrase = passphrase
        self._prompt = prompt
        self._keystore: Keystore | None = None
        self.env = env_profiles(self._environ)

    def __repr__(self) -> str:
        return f"ProfileStore(path={str(self.path)!r})"

    def passphrase(self) -> str:
        self._passphrase = get_passphrase(self.path, self._passphrase, environ=self._environ, prompt=self._prompt)
        return self._passphrase

    def exists(self) -> bool:
        return self.path.exists()

    def keystore(self, *, create: bool = False) -> Keystore:
        if self._keystore is None:
            if not self.path.exists():
                if not create:
                    raise KeystoreCorrupt(f"no keystore at {self.path}; add a profile with `keyplane keys add`")
                self._keystore = Keystore.create(self.path, self.passphrase())
            else:
                self._keystore = Keystore.open(self.path, self.passphrase())
        return self._keystore

    def names(self) -> list[str]:
        names = set(self.env)
        if self.exists():
            names |= set(self.keystore().profiles)
        return sorted(names)

    def get(self, name: str) -> Profile:
        if name in self.env:
            return self.env[name]
        if not self.exists():
            raise ProfileNotFound(name, list(self.env))
        ks = self.keystore()
        if name not in ks.profiles:
            raise ProfileNotFound(name, sorted(set(ks.profiles) | set(self.env)))
        return ks.profiles[name]

    def all(self) -> list[Profile]:
        return [self.get(n) for n in self.names()]
