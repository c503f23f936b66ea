"""Ed25519 keys of module signers: loading (PEM, DER, raw, OpenSSH), key ids, key files.

Formats accepted, as wasmsign2 accepts them: PEM (PKCS#8 secret, SPKI public), DER, raw
(`0x01` ‖ 32-byte public key, `0x81` ‖ 64-byte secret key as wasmsign2 writes them) and
OpenSSH (`ssh-ed25519 …` lines, several per file; unencrypted `OPENSSH PRIVATE KEY`).
A key id is wasmsign2's default: the first 12 bytes of HMAC-SHA256(key = the raw public
key, message = "key_id").

Every key file, module or image signer's, public or secret, is read by `read_key_file`:
never blocking (a FIFO named as a key held the command for ever), a regular file only,
and refused when another user could have written it (or a key directory holding it), by
the owner/mode rule of the state directory and the image store
(`regularfile.owner_problem`), root's files counting as the user's own: whoever can
replace a trusted key chooses what runs.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import UsageError
from ..regularfile import ROOT_OWNED, open_regular, owner_problem

__all__ = ["PublicKey", "SecretKey", "KeyFileError", "load_public_keys", "load_secret_key",
           "parse_public_keys", "parse_secret_key", "key_id_of", "generate", "MAX_KEY_FILE",
           "read_key_file", "write_key_file", "key_files", "key_pair_paths"]

PK_PREFIX, SK_PREFIX = 0x01, 0x81
MAX_KEY_FILE = 1024 * 1024  # a key file larger than this is not a key file


class KeyFileError(UsageError):
    """A key file that cannot be read or holds no Ed25519 key (exit 125)."""


def key_id_of(raw_public: bytes) -> bytes:
    """wasmsign2's default key id of a raw 32-byte public key."""
    return hmac.new(raw_public, b"key_id", hashlib.sha256).digest()[:12]


@dataclass(frozen=True)
class PublicKey:
    """A trusted signer's public key and where it came from."""

    raw: bytes
    source: str = ""

    @property
    def key_id(self) -> bytes:
        """wasmsign2's default key id."""
        return key_id_of(self.raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when `signature` is this key's Ed25519 signature of `message`."""
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def pem(self) -> bytes:
        """SPKI PEM (what `openssl pkeyutl -verify -pubin` reads)."""
        return Ed25519PublicKey.from_public_bytes(self.raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class SecretKey:
    """A signer's secret key (the 32-byte seed)."""

    seed: bytes

    @property
    def public(self) -> PublicKey:
        """The matching public key."""
        raw = self._key().public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return PublicKey(raw)

    def sign(self, message: bytes) -> bytes:
        """The Ed25519 signature of `message` (deterministic)."""
        return self._key().sign(message)

    def _key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    def pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted."""
        return self._key().private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())


def read_key_file(path: Path) -> bytes:
    """The bytes of a key file (a path the user named: a symlink is followed), at most
    `MAX_KEY_FILE`: opened without blocking, a regular file of this user (or root) that
    nobody else can write. Raises KeyFileError naming the file."""
    try:
        # Not blocking: a FIFO as a key file held the run, or a gateway's load, for ever.
        fd = open_regular(path, os.O_RDONLY | os.O_NOCTTY, follow=True)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise KeyFileError(f"{path}: not a regular file: not a key file") from None
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        _refuse_shared(path, os.fstat(fd), "key file")
        try:
            data = handle.read(MAX_KEY_FILE + 1)
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE:
        raise KeyFileError(f"{path}: larger than {MAX_KEY_FILE} bytes: not a key file")
    return data


def _refuse_shared(path: Path, info: os.stat_result, what: str) -> None:
    problem = owner_problem(info, ROOT_OWNED)
    if problem:
        raise KeyFileError(f"{path}: {problem}: a {what} another user could replace is "
                           "not trusted")


def key_files(path: Path) -> list[Path]:
    """`path`, or the files of directory `path` (names starting with a dot skipped): a
    directory of this user (or root) that nobody else can write. Raises KeyFileError."""
    if path.is_dir():
        _refuse_shared(path, os.stat(path), "key directory")
        return [item for item in sorted(path.iterdir())
                if not item.name.startswith(".") and item.is_file()]
    return [path]


def _public_raw(key: object, source: str) -> bytes:
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{source}: not an Ed25519 key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def parse_public_keys(data: bytes, source: str) -> list[PublicKey]:
    """Every Ed25519 public key in `data` (raw, DER, PEM, or OpenSSH lines). Raises
    KeyFileError naming `source` when there is none."""
    if len(data) == 33 and data[0] == PK_PREFIX:
        return [PublicKey(data[1:], source)]
    loaders = (serialization.load_der_public_key, serialization.load_pem_public_key)
    for loader in loaders:
        try:
            return [PublicKey(_public_raw(loader(data), source), source)]
        except (ValueError, UnsupportedAlgorithm, TypeError):
            continue
    keys = []
    for line in data.splitlines():
        line = line.strip()
        if line.startswith(b"ssh-ed25519 "):
            try:
                keys.append(PublicKey(_public_raw(
                    serialization.load_ssh_public_key(line), source), source))
            except (ValueError, UnsupportedAlgorithm):
                continue
    if not keys:
        raise KeyFileError(f"{source}: no Ed25519 public key (expected PEM, DER, raw or OpenSSH)")
    return keys


def parse_secret_key(data: bytes, source: str) -> SecretKey:
    """The Ed25519 secret key in `data` (raw, DER, PEM PKCS#8, unencrypted OpenSSH)."""
    if len(data) == 65 and data[0] == SK_PREFIX:
        return SecretKey(data[1:33])
    loaders: tuple[Callable[[bytes, None], object], ...] = (
        serialization.load_der_private_key, serialization.load_pem_private_key,
        serialization.load_ssh_private_key)
    for loader in loaders:
        try:
            key = loader(data, None)
        except TypeError as exc:  # a password is needed
            raise KeyFileError(f"{source}: encrypted secret keys are not supported") from exc
        except (ValueError, UnsupportedAlgorithm):
            continue
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{source}: not an Ed25519 key")
        return SecretKey(key.private_bytes(serialization.Encoding.Raw,
                                           serialization.PrivateFormat.Raw,
                                           serialization.NoEncryption()))
    raise KeyFileError(f"{source}: no Ed25519 secret key (expected PEM, DER, raw or OpenSSH)")


def load_public_keys(path: str | Path) -> list[PublicKey]:
    """The Ed25519 public keys of a file, or of a directory's files read as a policy's
    `[trust] keys` reads them (names starting with a dot skipped; cosign image keys
    beside them skipped too). Raises KeyFileError naming the file, or the directory when
    it holds no Ed25519 key."""
    path = Path(path)
    if path.is_dir():
        from .enforce import trusted_keys

        keys = trusted_keys((path,))
        if not keys:
            raise KeyFileError(f"{path}: no Ed25519 public key among its key files (cosign "
                               "keys verify image signatures, not modules)")
        return list(keys)
    return parse_public_keys(read_key_file(path), str(path))


def load_secret_key(path: str | Path) -> SecretKey:
    """The secret key of a file. Raises KeyFileError naming the file."""
    path = Path(path)
    return parse_secret_key(read_key_file(path), str(path))


def key_pair_paths(path: str | Path) -> tuple[Path, Path]:
    """(`path`, `path.pub`) for a key pair to write, neither existing. Raises
    KeyFileError for a name that is no file's ("", ".", "..", "/") or an existing file."""
    secret_path = Path(path)
    if secret_path.name in ("", "..") or str(path).endswith("/"):
        raise KeyFileError(f"{str(path)!r}: not a key file name; give the file to write, "
                           "e.g. signer.key")
    public_path = secret_path.with_name(secret_path.name + ".pub")
    for target in (secret_path, public_path):
        if target.exists() or target.is_symlink():
            raise KeyFileError(f"{target}: already exists; not overwriting a key")
    return secret_path, public_path


def generate(path: str | Path) -> tuple[Path, Path, SecretKey]:
    """Write a new secret key to `path` (PEM, mode 0600, never over an existing file) and
    its public key to `path.pub`. Raises KeyFileError."""
    secret_path, public_path = key_pair_paths(path)
    secret = SecretKey(os.urandom(32))
    try:
        write_key_file(secret_path, secret.pem(), 0o600)
        write_key_file(public_path, secret.public.pem(), 0o644)
    except OSError as exc:
        where = exc.filename or secret_path
        raise KeyFileError(f"{where}: cannot write key: {exc.strerror}") from None
    return secret_path, public_path, secret


def write_key_file(path: Path, data: bytes, mode: int) -> None:
    """Write a new key file (never over an existing one, nor through a link) of `mode`
    whatever the umask: under umask 002 a `.pub` came out group-writable, a key
    `read_key_file` refuses. Raises OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)
