"""The encrypted keystore: round trip, wrong passphrase, tampering, passphrase change, atomic
writes under SIGKILL, and no secret in a repr, a log or a traceback."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import pytest

from keyplane.client.errors import KeystoreCorrupt, PassphraseUnavailable, ProfileNotFound, WrongPassphrase
from keyplane.client.keystore import Keystore
from keyplane.client.profile import Profile, Secret, env_profiles
from keyplane.client.redact import RedactingFilter
from keyplane.client.store import ProfileStore, get_passphrase

N = 2**12  # a fast KDF for tests; the default is 2**15
KEY = "kp_live_8fQ2mZx7RtYb3LpK9wVh"
SECRET = "kps_Zr7Qp2Lm9Xc4Vb8Nt6Hy1Jk3Wd5Fs0Ga"
PEM = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIPcsvXhZ0n3CYvPDCMZyFnB7HZkz3r4iE6q6H7Q1xYtM\n-----END PRIVATE KEY-----\n"


def profile(name: str = "main", **kw: object) -> Profile:
    return Profile(
        name=name,
        exchange="keyplane",
        api_key=Secret(KEY),
        secret=Secret(SECRET),
        base_url="http://127.0.0.1:8000",
        meta={"label": "spot bot"},
        **kw,  # type: ignore[arg-type]
    )


def make(path: Path, passphrase: str = "correct horse") -> Keystore:
    ks = Keystore.create(path, passphrase, n=N)
    ks.put(profile())
    ks.put(Profile("ed", exchange="keyplane", api_key=Secret(KEY + "2"), private_key_pem=Secret(PEM)))
    ks.put(
        Profile(
            "kraken", exchange="kraken", api_key=Secret("K" * 20), secret=Secret("S" * 40), password=Secret("pw123456")
        )
    )
    ks.save()
    return ks


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ks"
    make(path)
    ks = Keystore.open(path, "correct horse")
    assert sorted(ks.profiles) == ["ed", "kraken", "main"]
    main = ks.get("main")
    assert main.api_key is not None and main.api_key.reveal() == KEY
    assert main.secret is not None and main.secret.reveal() == SECRET
    assert (main.exchange, main.base_url, main.meta["label"]) == ("keyplane", "http://127.0.0.1:8000", "spot bot")
    assert ks.get("ed").signing_secret == PEM
    kraken = ks.get("kraken")
    assert kraken.password is not None and kraken.password.reveal() == "pw123456"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_text()
    for secret in (KEY, SECRET, "MC4CAQAwBQYDK2Vw", "S" * 40, "pw123456"):
        assert secret not in raw


def test_wrong_passphrase_is_told_apart_without_decrypting(tmp_path: Path) -> None:
    path = tmp_path / "ks"
    make(path)
    with pytest.raises(WrongPassphrase):
        Keystore.open(path, "wrong horse")
    with pytest.raises(WrongPassphrase):
        Keystore.check_passphrase(path, "wrong horse")
    Keystore.check_passphrase(path, "correct horse")


def test_tampering_with_any_byte_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "ks"
    ks = Keystore.create(path, "correct horse", n=N)
    ks.put(profile())
    ks.save()
    original = path.read_bytes()
    for i in range(len(original)):
        damaged = bytearray(original)
        damaged[i] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises((KeystoreCorrupt, WrongPassphrase)):
            Keystore.open(path, "correct horse")
    for cut in (0, 10, len(original) // 2, len(original) - 1):
        path.write_bytes(original[:cut])
        with pytest.raises(KeystoreCorrupt):
            Keystore.open(path, "correct horse")


def test_change_passphrase_reencrypts_every_record(tmp_path: Path) -> None:
    path = tmp_path / "ks"
    ks = make(path)
    before = path.read_bytes()
    ks.change_passphrase("new battery staple", n=N)
    after = path.read_bytes()
    assert before != after
    with pytest.raises(WrongPassphrase):
        Keystore.open(path, "correct horse")
    reopened = Keystore.open(path, "new battery staple")
    assert {n: p.credentials() for n, p in reopened.profiles.items()} == {
        n: p.credentials() for n, p in ks.profiles.items()
    }
    # No ciphertext survives from the old file: every record was encrypted again.
    old_cts = set(before.split(b'"ct": "')[1:])
    assert not any(ct[:40] in after for ct in old_cts)


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from keyplane.client.keystore import Keystore, atomic_write
    from keyplane.client.profile import Profile, Secret
    path = Path(sys.argv[1])
    ks = Keystore.open(path, "correct horse")
    for n in range(300):
        ks.put(Profile(f"p{n}", api_key=Secret("kp_live_x" * 20), secret=Secret("s" * 8000)))
    data = ks.render()  # about 3.5 MB: most of the loop's time is spent writing it
    print("ready", len(data), flush=True)
    while True:
        atomic_write(path, data)
    """
)


def _wait_for_temporary_file(folder: Path, at_least: int, proc: subprocess.Popen[bytes]) -> None:
    """Poll until a temporary file of ``atomic_write`` in ``folder`` holds ``at_least`` bytes (a
    write is under way). A write takes milliseconds, hence the short interval."""
    deadline = time.monotonic() + 20
    while True:
        for tmp in folder.glob(".ks.*.tmp"):
            with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
                if tmp.stat().st_size >= at_least:
                    return
        assert proc.poll() is None, f"the writer exited ({proc.returncode})"
        assert time.monotonic() < deadline, f"no temporary file of {at_least} bytes within 20 s"
        time.sleep(0.001)


def test_a_writer_killed_mid_write_leaves_the_old_or_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "ks"
    make(path)
    leftovers = 0
    attempts = 6
    for attempt in range(attempts):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        word, size = proc.stdout.readline().split()
        assert word == b"ready"
        # Kill it mid-write, each attempt further into the file: once a temporary file holds this much.
        _wait_for_temporary_file(tmp_path, int(size) * attempt // attempts, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        ks = Keystore.open(path, "correct horse")  # never a mix: it opens and verifies
        assert "main" in ks.profiles
        leftovers += len(list(tmp_path.glob(".ks.*.tmp")))
        for tmp in tmp_path.glob(".ks.*.tmp"):
            tmp.unlink()
    # At least one kill landed in the middle of a write (its temporary file was left behind).
    assert leftovers >= 1


def test_a_corrupt_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "ks"
    make(path)
    path.write_bytes(path.read_bytes()[:-20])
    damaged = path.read_bytes()
    store = ProfileStore(path, passphrase="correct horse", environ={})
    with pytest.raises(KeystoreCorrupt):
        store.keystore(create=True)
    assert path.read_bytes() == damaged


def test_no_secret_in_repr_logs_or_tracebacks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ks"
    ks = make(path)
    p = ks.get("main")
    texts = [repr(p), str(p), repr(ks), repr(p.secret), repr(p.api_key), repr(ks.get("ed")), repr(ks.get("kraken"))]

    logger = logging.getLogger("keyplane.test.redact")
    filt = RedactingFilter()
    filt.add_secret("S" * 40)
    handler_filter_target = caplog.handler
    handler_filter_target.addFilter(filt)
    try:
        with caplog.at_level(logging.DEBUG, logger="keyplane.test.redact"):
            logger.info("using profile %r with key %s", p, KEY)
            logger.info("GET /api/v3/account?timestamp=1&signature=abcdef0123456789 X-MBX-APIKEY: %s", KEY)
            logger.info("secret=%s pem=%s other=%s", SECRET, PEM, "S" * 40)
            try:
                raise RuntimeError(f"failed with {SECRET}")
            except RuntimeError:
                logger.exception("boom")
    finally:
        handler_filter_target.removeFilter(filt)
    texts.append(caplog.text)
    texts += [r.getMessage() for r in caplog.records]
    assert "kp_live_8fQ2…" in caplog.text  # the key's prefix is kept, for debugging

    def crash(profile: Profile) -> None:
        secret = profile.secret
        raise ValueError(f"bad profile ({type(secret).__name__})")

    try:
        crash(p)
    except ValueError as e:
        texts.append("".join(traceback.TracebackException.from_exception(e, capture_locals=True).format()))
    for text in texts:
        for secret in (KEY, SECRET, "MC4CAQAwBQYDK2Vw", "S" * 40, "abcdef0123456789"):
            assert secret not in text, text


def test_profiles_from_the_environment() -> None:
    env = {
        "KEYPLANE_PROFILE_BOT_API_KEY": KEY,
        "KEYPLANE_PROFILE_BOT_SECRET": SECRET,
        "KEYPLANE_PROFILE_BOT_BASE_URL": "http://127.0.0.1:9000",
        "KEYPLANE_PROFILE_MY_BIN_API_KEY": "abc",
        "KEYPLANE_PROFILE_MY_BIN_SECRET": "def",
        "KEYPLANE_PROFILE_MY_BIN_EXCHANGE": "binance",
    }
    found = env_profiles(env)
    assert set(found) == {"bot", "my_bin"}
    assert found["bot"].url == "http://127.0.0.1:9000" and found["bot"].signing_secret == SECRET
    assert found["my_bin"].exchange == "binance"
    store = ProfileStore(Path("/nonexistent/ks"), environ=env)
    assert store.get("bot").source == "env"  # no keystore, no passphrase needed
    with pytest.raises(ProfileNotFound, match="unknown profile 'nope'"):
        store.get("nope")


def test_passphrase_sources(tmp_path: Path) -> None:
    path = tmp_path / "ks"
    assert get_passphrase(path, environ={"KEYPLANE_KEYSTORE_PASSPHRASE": "from env"}, interactive=False) == "from env"
    assert get_passphrase(path, environ={}, prompt=lambda _text: "typed") == "typed"
    with pytest.raises(PassphraseUnavailable, match="KEYPLANE_KEYSTORE_PASSPHRASE"):
        get_passphrase(path, environ={}, interactive=False)
