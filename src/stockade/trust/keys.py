"""Ed25519 keys of module signers: loading (PEM, DER, raw, OpenSSH), key ids, key files.

Formats accepted, as wasmsign2 accepts them: PEM (PKCS#8 secret, SPKI public), DER, raw
(`0x01` ‖ 32-byte public key, `0x81` ‖ 64-byte secret key as wasmsign2 writes them) and
OpenSSH (`ssh-ed25519 …` lines, several per file; unencrypted `OPENSSH PRIVATE KEY`).
A key id is wasmsign2's default: the first 12 bytes of HMAC-SHA256(key = the raw public
key, message = "key_id").

A public key file is one key format: raw or DER bytes, one PEM block (blank and `#`
lines around it allowed), or text of OpenSSH key lines, `#` comments and blank lines only
(a module whose data held a `ssh-ed25519` line was read as a key file; a second PEM block
was dropped without a word). A small-order or non-canonical Ed25519 point is refused when
a key is made: the identity point "verifies" R = identity, S = 0 over any message.

Every key file, module or image signer's, public or secret, is read by `read_key_file`:
never blocking (a FIFO named as a key held the command for ever), a regular file only,
and refused when another user could have written it, or any directory on its path (links
followed), by the owner/mode rule of the state directory and the image store
(`regularfile.owner_problem`), root's counting as the user's own, as OpenSSH's
StrictModes walks an `authorized_keys` path: a directory others may write passes only
when it is sticky (/tmp) and what the path takes from it is the user's or root's. Whoever
can replace a trusted key chooses what runs.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import os
import re
import stat
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
           "read_key_file", "write_key_file", "key_files", "key_pair_paths", "pem_block",
           "path_problem", "weak_point"]

PK_PREFIX, SK_PREFIX = 0x01, 0x81
MAX_KEY_FILE = 1024 * 1024  # a key file larger than this is not a key file
_MAX_LINKS = 40  # links followed on a key path, as the kernel follows them (ELOOP)

_P = 2**255 - 19
# The y of every point of order dividing 8 (libsodium's blocklist, either sign of x):
# 0 and p-1 (orders 4, 2), 1 (the identity) and the two points of order 8.
_SMALL_ORDER_Y = frozenset((
    0, 1, _P - 1,
    0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826,
    0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7,
))
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_KEY_TYPE = re.compile(r"[a-z0-9][a-z0-9@.-]*")


class KeyFileError(UsageError):
    """A key file that cannot be read or holds no Ed25519 key (exit 125)."""


def key_id_of(raw_public: bytes) -> bytes:
    """wasmsign2's default key id of a raw 32-byte public key."""
    return hmac.new(raw_public, b"key_id", hashlib.sha256).digest()[:12]


def weak_point(raw: bytes) -> str:
    """Why `raw` is no signer's Ed25519 public key, or "": not 32 bytes, a y coordinate
    of p or more (a non-canonical encoding), or a point of small order (for which
    signatures verify that no secret made)."""
    if len(raw) != 32:
        return f"{len(raw)} bytes, not a 32-byte Ed25519 public key"
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)  # the top bit is the sign of x
    if y >= _P or y in _SMALL_ORDER_Y:
        return ("a small-order or non-canonical Ed25519 point, not a signer's key (it "
                "would accept signatures no secret key made)")
    return ""


@dataclass(frozen=True)
class PublicKey:
    """A trusted signer's public key and where it came from. Raises KeyFileError, naming
    `source`, for a point no signer's key can be (`weak_point`)."""

    raw: bytes
    source: str = ""

    def __post_init__(self) -> None:
        problem = weak_point(self.raw)
        if problem:
            raise KeyFileError(f"{self.source or 'public key'}: {problem}")

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
    nobody else can write, on a path no other user can change (`path_problem`). Raises
    KeyFileError naming the file."""
    try:
        # Not blocking: a FIFO as a key file held the run, or a gateway's load, for ever.
        fd = open_regular(path, os.O_RDONLY | os.O_NOCTTY, follow=True)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise KeyFileError(f"{path}: not a regular file: not a key file") from None
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(fd)
        _refuse_shared(path, opened, "key file")
        _refuse_path(path, "key file", opened)
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


def _refuse_path(path: Path, what: str, opened: os.stat_result | None = None) -> None:
    problem = path_problem(path, opened)
    if problem:
        raise KeyFileError(f"{path}: {problem}: a {what} another user could replace is "
                           "not trusted")


def _ours(info: os.stat_result) -> bool:
    return info.st_uid == os.geteuid() or info.st_uid in ROOT_OWNED


def path_problem(path: Path, opened: os.stat_result | None = None) -> str:
    """Why another user could change which file `path` names, or "": a directory on the
    way (from the root, links followed) owned by another user, or writable by others
    and not sticky, or a link, or an entry of a sticky directory others may write, owned
    by another user. The last component's own owner and mode are the caller's to check.
    A path that cannot be walked gives "" (opening it says why), unless it was `opened`
    already: then the walk must end at that very file (`st_dev`, `st_ino`), as a walk
    that failed, or ended elsewhere, met a path someone changed after the open (another
    user renaming their directory back and forth passed the check; found by review)."""
    whole = Path(os.getcwd(), path)  # an absolute `path` stays itself
    todo = list(reversed(whole.parts[1:]))
    current = Path("/")
    changed = "it changed as it was read"
    info: os.stat_result | None = None
    try:
        problem = _directory_problem(current, os.stat(current))
        links = 0
        while todo and not problem:
            name = todo.pop()
            if name in ("", "."):
                continue
            if name == "..":  # `current` holds no link: its parent is the real one
                current = current.parent
                continue
            entry = current / name
            info = os.lstat(entry)
            if stat.S_ISLNK(info.st_mode):
                if not _ours(info):
                    return f"link {entry} is owned by uid {info.st_uid}, not by this user"
                links += 1
                if links > _MAX_LINKS:
                    return "" if opened is None else f"too many links ({changed})"
                target = Path(os.readlink(entry))
                if target.is_absolute():
                    current = Path("/")
                todo.extend(reversed(target.parts[1:] if target.is_absolute()
                                     else target.parts))
                info = None
            elif todo:  # a directory on the way
                problem = _directory_problem(entry, info)
                current = entry
    except OSError as exc:
        if opened is None:
            return ""
        if exc.errno == errno.ENAMETOOLONG:  # fails closed, but nothing changed
            return "its path, links followed, is too long to check"
        return f"{exc.strerror or exc} ({changed})"
    if problem or opened is None:
        return problem
    if info is None or (info.st_dev, info.st_ino) != (opened.st_dev, opened.st_ino):
        return f"it names another file than the one read ({changed})"
    return ""


def _directory_problem(directory: Path, info: os.stat_result) -> str:
    if not stat.S_ISDIR(info.st_mode):
        return ""  # opening the path fails (ENOTDIR)
    problem = owner_problem(info, ROOT_OWNED)
    if not problem or not _ours(info):
        return f"{directory}: {problem}" if problem else ""
    if info.st_mode & stat.S_ISVTX:
        # Sticky, as /tmp: others may add entries, never replace ours. The entries this
        # path takes from it are checked as they are reached (links and directories
        # here, the file by its reader).
        return ""
    return f"{directory}: {problem}, and it is not sticky"


def key_files(path: Path) -> list[Path]:
    """`path`, or the files of directory `path` (names starting with a dot skipped): a
    directory of this user (or root) that nobody else can write, on a path nobody else
    can change (`path_problem`). Raises KeyFileError."""
    if path.is_dir():
        _refuse_shared(path, os.stat(path), "key directory")
        _refuse_path(path, "key directory")
        return [item for item in sorted(path.iterdir())
                if not item.name.startswith(".") and item.is_file()]
    return [path]


def _public_raw(key: object, source: str) -> bytes:
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{source}: not an Ed25519 key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _text(data: bytes) -> str | None:
    """`data` as text (UTF-8, no control characters but tab, CR and LF), or None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if _CONTROL.search(text) else text


def _meaningful(line: str) -> bool:
    line = line.strip()
    return bool(line) and not line.startswith("#")


def pem_block(data: bytes, source: str) -> bytes | None:
    """The one PEM block of a PEM key file (blank and `#` lines around it allowed), or
    None when `data` is not PEM text (its first line other than those does not begin a
    block). Raises KeyFileError naming `source` for a second block or other text: a
    reader taking the first block dropped the rest without a word."""
    text = _text(data)
    if text is None:
        return None
    lines = [line for line in text.split("\n") if _meaningful(line)]
    if not lines or not lines[0].strip().startswith("-----BEGIN "):
        return None
    blocks = sum(line.strip().startswith("-----BEGIN ") for line in lines)
    end = next((n for n, line in enumerate(lines) if line.strip().startswith("-----END ")),
               None)
    if blocks > 1 or end is None or end != len(lines) - 1:
        found = f"{blocks} PEM blocks" if blocks > 1 else "a PEM block and other text"
        raise KeyFileError(f"{source}: {found}: one PEM key per file (give each key a file "
                           "of its own, in a key directory)")
    return "\n".join(line.strip() for line in lines).encode() + b"\n"


def parse_public_keys(data: bytes, source: str) -> list[PublicKey]:
    """Every Ed25519 public key in `data`: raw, DER, one PEM block, or text of OpenSSH
    key lines, comments and blanks. Raises KeyFileError naming `source` when there is
    none, for a file of several PEM blocks or of text other than key lines, and for a
    small-order or non-canonical point."""
    if len(data) == 33 and data[0] == PK_PREFIX:
        return [PublicKey(data[1:], source)]
    block = pem_block(data, source)
    if block is not None:
        try:
            return [PublicKey(_public_raw(serialization.load_pem_public_key(block), source),
                              source)]
        except (ValueError, UnsupportedAlgorithm, TypeError):
            raise KeyFileError(f"{source}: its PEM block is no public key") from None
    text = _text(data)
    if text is None:
        try:
            return [PublicKey(_public_raw(serialization.load_der_public_key(data), source),
                              source)]
        except (ValueError, UnsupportedAlgorithm, TypeError):
            raise KeyFileError(f"{source}: not a text file, nor a raw or DER key: no "
                               "Ed25519 public key (expected PEM, DER, raw or OpenSSH)") from None
    keys = [key for number, line in enumerate(text.split("\n"), 1)
            if (key := _ssh_line(line, number, source)) is not None]
    if not keys:
        raise KeyFileError(f"{source}: no Ed25519 public key (expected PEM, DER, raw or OpenSSH)")
    return keys


def _ssh_line(line: str, number: int, source: str) -> PublicKey | None:
    """The Ed25519 key of one line of an OpenSSH key file (None: a comment, a blank, or
    another algorithm's key). Raises KeyFileError for any other line: a key file is all
    key lines, or none of it is read."""
    if not _meaningful(line):
        return None
    fields = line.split(None, 2)
    where = f"{source}: line {number}"
    if len(fields) < 2 or not _KEY_TYPE.fullmatch(fields[0]):
        raise KeyFileError(f"{where} is not an OpenSSH key line (a key file holds key "
                           "lines, # comments and blank lines only)")
    kind = fields[0].encode()
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except ValueError:
        raise KeyFileError(f"{where}: the key is not base64") from None
    if blob[:4 + len(kind)] != len(kind).to_bytes(4, "big") + kind:
        raise KeyFileError(f"{where}: the key is not of type {fields[0]}")
    if fields[0] != "ssh-ed25519":
        return None  # another algorithm's signer: no module signature names it
    try:
        key = serialization.load_ssh_public_key(f"{fields[0]} {fields[1]}".encode())
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{where}: not a valid ssh-ed25519 key") from None
    return PublicKey(_public_raw(key, where), source)


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
