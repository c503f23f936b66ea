"""Authenticating native code: this host's key and the MAC trailer of compiled modules.

A `.cwasm` is machine code, and wasmtime's `deserialize` checks only its engine header.
Stockade therefore loads one only when it carries a trailer that this host's key
authenticates::

    payload (wasmtime's serialized module: an ELF file)
    MAGIC        16 bytes  b"\\0stockade-seal1\\0"
    fingerprint  16 bytes  the engine fingerprint it was compiled for (ASCII hex)
    MAC          32 bytes  HMAC-SHA256(key, "stockade-aot-v1\\0" purpose "\\0" fingerprint
                           "\\0" payload)

`purpose` binds where an artifact may be used: `cwasm` (a file written by `stockade
compile`) or `cache:<sha256>` (the AoT cache entry of the module with that digest), so a
cache entry cannot stand for another module and a compiled file cannot be planted in the
cache. wasmtime ignores bytes after the ELF sections, so a sealed file still maps directly
with `deserialize_file`; the MAC is checked before wasmtime sees a byte.

The key is 32 random bytes in `config_dir()/aot.key` (outside the cache), created 0600
with an atomic link on first use. It is refused when its directory is group/other-writable
or owned by another uid, or the file is not a regular file of this uid that only it can
access. Delete the file to rotate the key: every artifact sealed with the old one is then
refused (the cache recompiles its entries; `.cwasm` files must be compiled again).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..paths import config_dir

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["SealError", "KeyUnavailable", "TRAILER_SIZE", "key_path", "host_key", "seal",
           "unseal", "strip", "tag"]

MAGIC = b"\0stockade-seal1\0"
_FINGERPRINT = 16
_MAC = 32
TRAILER_SIZE = len(MAGIC) + _FINGERPRINT + _MAC
KEY_FILE = "aot.key"
KEY_BYTES = 32
_DOMAIN = b"stockade-aot-v1\0"

_keys: dict[Path, bytes] = {}
_keys_lock = threading.Lock()


class SealError(Exception):
    """An artifact is not authenticated; `reason` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyUnavailable(SealError):
    """This host's key cannot be used (insecure, unreadable, or cannot be created)."""

    def __init__(self, reason: str, *, insecure: bool) -> None:
        super().__init__(reason)
        self.insecure = insecure


def key_path() -> Path:
    """Where this user's key lives: `config_dir()/aot.key`."""
    return config_dir() / KEY_FILE


def host_key(path: Path | None = None) -> bytes:
    """This user's key (created on first use; read once per process). Raises
    KeyUnavailable: `insecure` when the file or its directory could have been read or
    replaced by someone else, else when it cannot be created or read."""
    path = path or key_path()
    with _keys_lock:
        key = _keys.get(path)
        if key is None:
            key = _keys[path] = _read_or_create(path)
        return key


def seal(payload: bytes | memoryview, fingerprint: str, purpose: str, key: bytes) -> bytes:
    """The trailer to append to `payload` (see the module docstring)."""
    tag_bytes = fingerprint.encode("ascii")[:_FINGERPRINT].ljust(_FINGERPRINT, b"\0")
    return MAGIC + tag_bytes + _mac(key, purpose, tag_bytes, payload)


def unseal(data: Buffer, fingerprint: str, purpose: str, key: bytes) -> int:
    """The payload length of a sealed artifact whose MAC verifies for this engine
    `fingerprint` and `purpose`. Raises SealError naming what is wrong."""
    view = memoryview(data)
    try:
        if len(view) < TRAILER_SIZE or view[-TRAILER_SIZE:][:len(MAGIC)] != MAGIC:
            raise SealError("it carries no Stockade MAC (not made by `stockade compile` or "
                            "the cache of this host)")
        end = len(view) - TRAILER_SIZE
        found = bytes(view[end + len(MAGIC):end + len(MAGIC) + _FINGERPRINT])
        wanted = fingerprint.encode("ascii")[:_FINGERPRINT].ljust(_FINGERPRINT, b"\0")
        if found != wanted:
            shown = found.rstrip(b"\0").decode("ascii", "replace")
            raise SealError(f"it was compiled for another engine configuration ({shown}, "
                            f"this run needs {fingerprint})")
        mac = bytes(view[len(view) - _MAC:])
        if not hmac.compare_digest(mac, _mac(key, purpose, wanted, view[:end])):
            raise SealError("its MAC does not verify (changed after it was compiled, or "
                            "made under another key)")
        return end
    finally:
        view.release()


def strip(data: bytes) -> bytes:
    """`data` without its trailer, if it has one. A module wasmtime mapped from a sealed
    file serializes as that whole file, trailer included: strip before sealing again."""
    if len(data) >= TRAILER_SIZE and data[-TRAILER_SIZE:].startswith(MAGIC):
        return data[:-TRAILER_SIZE]
    return data


def tag(key: bytes, *parts: str) -> str:
    """A hex HMAC-SHA256 over `parts` (for small records such as the stat index)."""
    message = "\0".join(("stockade-tag-v1", *parts)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _mac(key: bytes, purpose: str, fingerprint: bytes, payload: bytes | memoryview) -> bytes:
    digest = hmac.new(key, _DOMAIN + purpose.encode() + b"\0" + fingerprint + b"\0",
                      hashlib.sha256)
    digest.update(payload)
    return digest.digest()


def _read_or_create(path: Path) -> bytes:
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyUnavailable(f"cannot create {directory}: {exc.strerror}", insecure=False) \
            from None
    _check_owner(directory, os.stat(directory), "directory", 0o022)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    # Write a private temp file, then link it in: the key appears whole, 0600, or not at
    # all, and when two processes race both read the one that won.
    tmp = directory / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            os.write(fd, os.urandom(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    except OSError as exc:
        raise KeyUnavailable(f"cannot create {path}: {exc.strerror}", insecure=False) from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    try:
        return _read(path)
    except FileNotFoundError:
        raise KeyUnavailable(f"{path} vanished while it was created", insecure=False) from None


def _read(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        # ELOOP: a symlink where the key should be.
        raise KeyUnavailable(f"cannot open {path}: {exc.strerror}", insecure=True) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyUnavailable(f"{path} is not a regular file", insecure=True)
        _check_owner(path, info, "key file", 0o077)
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise KeyUnavailable(f"{path} is not a {KEY_BYTES}-byte key; delete it to make a "
                             "new one", insecure=True)
    return key


def _check_owner(path: Path, info: os.stat_result, what: str, forbidden: int) -> None:
    if info.st_uid != os.geteuid():
        raise KeyUnavailable(f"{what} {path} is owned by uid {info.st_uid}, not {os.geteuid()}",
                             insecure=True)
    if info.st_mode & forbidden:
        # A key others could read may be known: replace it rather than tighten it.
        fix = "delete it so a new one is made" if forbidden == 0o077 else "chmod 700 it"
        access = "accessible" if forbidden == 0o077 else "writable"
        raise KeyUnavailable(f"{what} {path} is {access} by group or others "
                             f"(mode {stat.S_IMODE(info.st_mode):o}); {fix}", insecure=True)
