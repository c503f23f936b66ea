"""This user's secret key files: created once, atomically, 0600; refused when others
could know or replace them.

One implementation for every key Stockade keeps (the AoT key that authenticates native
code, the audit key that chains the audit log). A key is 32 random bytes in a file of
its own, normally in `config_dir()` (outside the cache and the state directory it
authenticates). `read_key` refuses a key file that is not a regular file (a symlink is
not followed), is owned by another uid, or is accessible by group or others, and a
directory that is group/other-writable or owned by another uid (whoever can write the
directory can replace the key). A missing key is created: 32 random bytes written to a
private temporary file, then hard-linked into place, so two processes racing to create
it end up with the same key and a reader never sees half a key.

A leaf module: it imports only the standard library and `paths`, so a parent process can
read a key (and hand it to a worker) without importing the engine.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .paths import config_dir

__all__ = ["KeyFileError", "read_key", "config_dir", "aot_key_path", "KEY_BYTES"]

KEY_BYTES = 32
AOT_KEY_FILE = "aot.key"


def aot_key_path() -> Path:
    """Where this user's AoT key lives: `config_dir()/aot.key`."""
    return config_dir() / AOT_KEY_FILE


class KeyFileError(Exception):
    """A key file cannot be used. `insecure` is True when it (or its directory) could have
    been read or replaced by someone else, False when it merely cannot be read or made."""

    def __init__(self, reason: str, *, insecure: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.insecure = insecure


def read_key(path: Path, *, create: bool = True) -> bytes | None:
    """The key stored at `path`, created (0600, parent 0700) when missing and `create`;
    None when missing and not `create`. Raises KeyFileError."""
    directory = path.parent
    if create:
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise KeyFileError(f"cannot create {directory}: {exc.strerror}",
                               insecure=False) from None
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyFileError(f"cannot reach {directory}: {exc.strerror}", insecure=False) from None
    _check_owner(directory, info, "directory", 0o022)
    try:
        return _read(path)
    except FileNotFoundError:
        if not create:
            return None
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
            os.link(tmp, path)  # never replaces a key another process made first
        except FileExistsError:
            pass
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}", insecure=False) from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    try:
        return _read(path)
    except FileNotFoundError:
        raise KeyFileError(f"{path} vanished while it was created", insecure=False) from None


def _read(path: Path) -> bytes:
    try:
        # O_NONBLOCK: a FIFO planted as the key must not block the reader.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        # ELOOP: a symlink where the key should be.
        raise KeyFileError(f"cannot open {path}: {exc.strerror} (it must be a regular "
                           "file, not a symlink)", insecure=True) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path} is not a regular file", insecure=True)
        _check_owner(path, info, "key file", 0o077)
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{path} is not a {KEY_BYTES}-byte key (found {len(key)}"
                           f"{'+' if len(key) > KEY_BYTES else ''} bytes): damaged; delete "
                           "it to make a new one", insecure=True)
    return key


def _check_owner(path: Path, info: os.stat_result, what: str, forbidden: int) -> None:
    if info.st_uid != os.geteuid():
        raise KeyFileError(f"{what} {path} is owned by uid {info.st_uid}, not by this user "
                           f"(uid {os.geteuid()}): refused", insecure=True)
    if info.st_mode & forbidden:
        # A key others could read may be known: replace it rather than tighten it.
        fix = "delete it so a new one is made" if forbidden == 0o077 else "chmod 700 it"
        access = "accessible" if forbidden == 0o077 else "writable"
        raise KeyFileError(f"{what} {path} is {access} by group or others "
                           f"(mode {stat.S_IMODE(info.st_mode):04o}): refused; {fix}",
                           insecure=True)
