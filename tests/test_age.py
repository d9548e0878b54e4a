"""age keys and files (bot.crypto.age, `imrs-bot keygen`, `imrs-bot decrypt`): what a
therapist may paste, the fingerprint, and that our files and keys work with the stock
`age` tool in both directions (Debian's `age`; CI installs it)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bot.crypto import age
from bot.crypto.age import AgeDecryptError, AgeKeyError, fingerprint, parse_recipient

IMRS_BOT = str(Path(sys.executable).parent / "imrs-bot")
OUR_VARIABLES = ("TELEGRAM_", "DATABASE_URL", "IMRS_", "ADMIN_TELEGRAM_IDS", "WEBHOOK_", "PORT", "DEFAULT_", "LOG_LEVEL")

# A fixed key pair: the test vector of the fingerprint definition (the browser reader of
# issue 14 checks itself against the same numbers).
VECTOR_RECIPIENT = "age1vtf5w4f0zmekefatva6wu5rc06kugnukrufsqn2tzfmgdndd7q8qp8h64c"
VECTOR_FINGERPRINT = "D093 7564 D06F 2809"  # sha256sum of the 62 characters: d0937564d06f2809…


def _age_binary() -> str:
    found = shutil.which("age")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("the age binary is missing: CI installs it (.ci/run)")
        pytest.skip("the age binary is not installed (apt-get install age)")
    return found


def cli(*args: str, cwd: Path, stdin: bytes | None = None, **extra: str) -> subprocess.CompletedProcess[bytes]:
    """`imrs-bot` with none of the bot's configuration in the environment (but ``extra``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(OUR_VARIABLES)} | extra
    return subprocess.run([IMRS_BOT, *args], cwd=cwd, env=env, input=stdin, capture_output=True, timeout=60)


def one_clear_line(result: subprocess.CompletedProcess[bytes], *needles: str) -> str:
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "Traceback" not in err and result.stdout == b""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("imrs-bot: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def pair() -> age.KeyPair:
    return age.generate()


def secret_line(pair: age.KeyPair) -> str:
    return next(line for line in pair.identity_file.splitlines() if line.startswith(age.SECRET_PREFIX))


# -- validation --------------------------------------------------------------------------------


def test_a_good_key_is_accepted_with_whitespace_line_breaks_and_the_keygen_label(pair):
    key = pair.recipient.text
    assert parse_recipient(key).text == key
    assert parse_recipient(f"  {key}\n").text == key
    assert parse_recipient(f"\n{key[:30]}\n{key[30:]}\n").text == key  # wrapped when copied
    assert parse_recipient(f"# public key: {key}").text == key
    assert parse_recipient(f"Public key: {key}").text == key
    assert parse_recipient(key.upper()).text == key  # Bech32 allows all capitals; stored canonical


@pytest.mark.parametrize(
    "pasted",
    [
        lambda p: secret_line(p),
        lambda p: "  " + secret_line(p).lower() + "\n",
        lambda p: p.identity_file,  # the whole key file, public key comment included
        lambda p: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
    ],
)
def test_a_private_key_is_refused_as_such_and_never_repeated(pair, pasted):
    text = pasted(pair)
    with pytest.raises(AgeKeyError) as refused:
        parse_recipient(text)
    assert refused.value.reason == "secret_key"
    assert age.contains_secret_key(text)
    assert secret_line(pair)[20:] not in str(refused.value).upper()


def test_wrong_formats_are_refused_with_the_reason(pair):
    key = pair.recipient.text
    flipped = key[:-1] + ("q" if key[-1] != "q" else "p")  # one character of the checksum
    typo = key[:20] + ("x" if key[20] != "x" else "y") + key[21:]  # one character of the key
    cases = {
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop": "ssh_key",
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ": "ssh_key",
        flipped: "checksum",
        typo: "checksum",
        key[:-3]: "length",
        key + "q": "length",
        key[:10] + "b" + key[11:]: "characters",  # "b" is not in Bech32's alphabet
        "age1yubikey1qwt50d05nh5vutpdzmlg5wn80xq5negm4uj9ghv0snvdd3yysf5yw3rhl3t": "plugin",
        "Age1" + key[4:]: "characters",  # mixed case
        "hello there": "not_age",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----": "not_age",
        "   \n": "empty",
    }
    for text, reason in cases.items():
        with pytest.raises(AgeKeyError) as refused:
            parse_recipient(text)
        assert refused.value.reason == reason, text


# -- the fingerprint ---------------------------------------------------------------------------


def test_the_fingerprint_follows_its_definition_and_is_stable(pair):
    assert parse_recipient(VECTOR_RECIPIENT).fingerprint == fingerprint(VECTOR_RECIPIENT) == VECTOR_FINGERPRINT
    digest = hashlib.sha256(pair.recipient.text.encode("ascii")).hexdigest()[:16].upper()
    assert pair.fingerprint.replace(" ", "") == digest
    assert age.FINGERPRINT_PATTERN.match(pair.fingerprint)
    # The same key however it was pasted; another key, another fingerprint.
    assert parse_recipient(f" {pair.recipient.text.upper()}\n").fingerprint == pair.fingerprint
    assert age.generate().fingerprint != pair.fingerprint


# -- encrypting and decrypting -----------------------------------------------------------------


def test_round_trip_with_a_key_file_or_a_pasted_secret_key(pair):
    data = os.urandom(3000) + "<html>é</html>".encode()
    sealed = age.encrypt(data, pair.recipient)
    assert sealed.startswith(age.AGE_HEADER) and data not in sealed
    assert age.decrypt(sealed, pair.identity_file) == data
    assert age.decrypt(sealed, secret_line(pair)) == data
    assert age.decrypt(age.encrypt(b"", pair.recipient.text), pair.identity_file) == b""


def test_decrypting_fails_clearly(pair):
    sealed = age.encrypt(b"summary", pair.recipient)
    cases = {
        "not_for_you": (sealed, age.generate().identity_file),
        "damaged": (sealed[:-1] + bytes([sealed[-1] ^ 1]), pair.identity_file),
        "not_age": (b"<html>plain</html>", pair.identity_file),
        "identity": (sealed, "# only a comment\n"),
    }
    for reason, (data, identities) in cases.items():
        with pytest.raises(AgeDecryptError) as failed:
            age.decrypt(data, identities)
        assert failed.value.reason == reason
    with pytest.raises(AgeDecryptError) as failed:
        age.decrypt(sealed, f"{pair.recipient.text}\n")  # the public key is no identity
    assert failed.value.reason == "identity"


# -- the CLI and the stock age tool ------------------------------------------------------------


def test_keygen_writes_a_private_key_file_once_that_age_accepts(tmp_path):
    tool = _age_binary()
    result = cli("keygen", "-o", "key.txt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    key_file = tmp_path / "key.txt"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    lines = key_file.read_text().splitlines()
    assert lines[0].startswith("# created: 20") and lines[0].endswith("Z")
    assert lines[1].startswith("# public key: age1") and lines[2].startswith(age.SECRET_PREFIX)
    recipient = lines[1].removeprefix("# public key: ")
    out = result.stdout.decode()
    assert recipient in out and fingerprint(recipient) in out and lines[2] not in out + result.stderr.decode()

    # age itself: derives the same public key, and encrypts to it what opens with the file.
    derived = subprocess.run(["age-keygen", "-y", str(key_file)], capture_output=True, check=True)
    assert derived.stdout.decode().strip() == recipient
    sealed = subprocess.run([tool, "-r", recipient], input=b"from age", capture_output=True, check=True).stdout
    opened = subprocess.run([tool, "-d", "-i", str(key_file)], input=sealed, capture_output=True, check=True)
    assert opened.stdout == b"from age"

    again = cli("keygen", "-o", "key.txt", cwd=tmp_path)
    one_clear_line(again, "exists")
    assert key_file.read_text().splitlines() == lines, "never overwritten"

    # No configuration is read: settings the bot would refuse do not matter here.
    broken = {"DEFAULT_TIMEZONE": "Mars/Olympus", "DATABASE_URL": "nonsense://", "IMRS_KEYS": "{not json"}
    configured = cli("migrate", cwd=tmp_path, **broken)
    assert configured.returncode == 2 and b"DEFAULT_TIMEZONE" in configured.stderr, "the bot refuses these"
    printed = cli("keygen", cwd=tmp_path, **broken)  # no -o: the key file on stdout, like age-keygen
    assert printed.returncode == 0 and printed.stdout.decode().splitlines()[2].startswith(age.SECRET_PREFIX)
    assert "Fingerprint: " in printed.stderr.decode()


def test_our_files_open_with_age_and_ages_files_open_with_imrs_bot_decrypt(tmp_path, pair):
    tool = _age_binary()
    key_file = tmp_path / "key.txt"
    key_file.write_text(pair.identity_file)
    document = "<!doctype html><p>readiness: AMBER</p>".encode() * 200

    # pyrage -> age -d -i
    (tmp_path / "ours.age").write_bytes(age.encrypt(document, pair.recipient))
    opened = subprocess.run([tool, "-d", "-i", str(key_file), str(tmp_path / "ours.age")], capture_output=True)
    assert opened.returncode == 0 and opened.stdout == document

    # age -r (binary and armored) -> imrs-bot decrypt, to stdout and to a new file
    for flags, name in ((["-r", pair.recipient.text], "theirs.age"), (["-a", "-r", pair.recipient.text], "theirs.asc")):
        sealed = subprocess.run([tool, *flags], input=document, capture_output=True, check=True).stdout
        (tmp_path / name).write_bytes(sealed)
        result = cli("decrypt", name, "--identity", "key.txt", cwd=tmp_path)
        assert result.returncode == 0 and result.stdout == document, result.stderr
    result = cli("decrypt", "theirs.age", "-i", "key.txt", "-o", "out.html", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == b""
    assert (tmp_path / "out.html").read_bytes() == document
    assert stat.S_IMODE((tmp_path / "out.html").stat().st_mode) == 0o600
    one_clear_line(cli("decrypt", "theirs.age", "-i", "key.txt", "-o", "out.html", cwd=tmp_path), "exists")


def test_decrypt_errors_are_one_line_and_exit_2(tmp_path, pair):
    (tmp_path / "key.txt").write_text(pair.identity_file)
    (tmp_path / "other.txt").write_text(age.generate().identity_file)
    sealed = age.encrypt(b"<p>summary</p>" * 100, pair.recipient)
    (tmp_path / "summary.age").write_bytes(sealed)
    (tmp_path / "cut.age").write_bytes(sealed[: len(sealed) // 2])
    (tmp_path / "plain.html").write_bytes(b"<p>not encrypted</p>")
    (tmp_path / "public.txt").write_text(pair.recipient.text + "\n")

    one_clear_line(cli("decrypt", "summary.age", "-i", "other.txt", cwd=tmp_path), "not encrypted to this key")
    opened = cli("decrypt", "summary.age", "-i", "key.txt", cwd=tmp_path, DEFAULT_TIMEZONE="Mars/Olympus")
    assert opened.returncode == 0 and opened.stdout == b"<p>summary</p>" * 100, "no configuration is read"
    one_clear_line(cli("decrypt", "cut.age", "-i", "key.txt", cwd=tmp_path), "damaged")
    one_clear_line(cli("decrypt", "plain.html", "-i", "key.txt", cwd=tmp_path), "not an age")
    one_clear_line(cli("decrypt", "summary.age", "-i", "missing.txt", cwd=tmp_path), "missing.txt", "not found")
    one_clear_line(cli("decrypt", "nothing.age", "-i", "key.txt", cwd=tmp_path), "nothing.age", "not found")
    one_clear_line(cli("decrypt", "summary.age", "-i", "public.txt", cwd=tmp_path), "public.txt", "not an age secret key")
    assert not (tmp_path / "out.html").exists()
