"""Secret keys kept in files: created once, atomically, 0600; refused when others can read them.

A key that anyone else can read authenticates nothing, so `secret_key` refuses a key
file not owned by this user, readable or writable by group or others, or not a
regular file (a symlink is not followed). A missing key is created: 32 random bytes
written to a private temporary file, then hard-linked into place, so two processes
racing to create it end up with the same key and a reader never sees half a key.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from ..errors import UsageError

__all__ = ["secret_key", "config_dir", "KEY_BYTES"]

KEY_BYTES = 32


def config_dir() -> Path:
    """`$XDG_CONFIG_HOME/stockade`, else `~/.config/stockade` (outside cache and state)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "stockade"


def _read(path: Path, purpose: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{purpose} {path}: cannot open: {exc.strerror} "
                         "(it must be a regular file, not a symlink)") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{purpose} {path}: not a regular file")
        if info.st_uid != os.geteuid():
            raise UsageError(f"{purpose} {path}: owned by uid {info.st_uid}, not by this "
                             f"user (uid {os.geteuid()}): refused")
        if info.st_mode & 0o077:
            raise UsageError(f"{purpose} {path}: mode {stat.S_IMODE(info.st_mode):04o} lets "
                             "others read or change it: refused (chmod 600 it, or remove it "
                             "to start a new key)")
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise UsageError(f"{purpose} {path}: expected {KEY_BYTES} bytes, found {len(key)}"
                         f"{'+' if len(key) > KEY_BYTES else ''}: damaged")
    return key


def secret_key(path: Path, purpose: str = "key", create: bool = True) -> bytes | None:
    """The key stored at `path`, created (0600, parent 0700) when missing and `create`;
    None when missing and not `create`. Raises UsageError for a key file that is not
    private to this user or is damaged, or that cannot be created."""
    key = _read(path, purpose)
    if key is not None or not create:
        return key
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never replaces a key another process made first
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    except OSError as exc:
        raise UsageError(f"{purpose} {path}: cannot create: {exc.strerror}") from None
    key = _read(path, purpose)
    if key is None:
        raise UsageError(f"{purpose} {path}: vanished while being created")
    return key
