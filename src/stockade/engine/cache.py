"""`AotCache`: compiled modules on disk, keyed by module sha256 and engine fingerprint,
trusted only as far as this host can authenticate them.

    <root>/                      0700, this uid
      <fingerprint>/<sha256>.cwasm   0600, sealed for `cache:<sha256>` (see `seal`)
      stat/<digest of path facts>    0600, "<sha256> <tag>": which module a path holds
      .usage                         0600, what the two above occupy (`cacheusage`)

Anyone who can write the cache could otherwise make the next run execute their machine
code as the caller. So every directory must be a directory of this uid that nobody else can
write, every entry a regular file of this uid that nobody else can write, and every entry
must carry a MAC made with this host's key (kept outside the cache) before wasmtime sees
it. A refused entry is deleted (a refused directory moved aside), an audit record is
written, and the caller compiles again. A cache that cannot be written or trusted at all is
skipped: modules are then compiled in memory each time.

The entries and stat records under a root occupy at most `STOCKADE_CACHE_MAX_BYTES`
(default 2 GiB) of disk: every distinct module a host is handed, runnable or not, leaves
a compiled copy about its size, and every distinct file a record (a 4 KiB block). Past
the cap the least recently used of both go (a hit counts as a use) until they occupy
1/16 of the cap less, so that a full cache is not walked at every store; an entry
larger than the cap is not kept.

Whether the cap is near is read from a running total (`cacheusage.Usage`), not from a
walk of every entry. The total is only a belief: a walk corrects it when it says the
cap is passed, when it cannot be read, and, in case it lies, by chance at each store in
proportion to the bytes stored (one walk per 1/16 of the cap stored, on average: a
total that lies keeps the cap off until about that much more is stored here; what a
scope's worker writes meanwhile is its own disk use, which only a filesystem quota
bounds, as it is for files under names the cache never writes).
"""

from __future__ import annotations

import mmap
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ..digests import sha256 as _sha256
from ..errors import UsageError
from ..regularfile import owner_problem
from .cacheusage import Usage
from .seal import (
    TRAILER_SIZE,
    KeyUnavailable,
    SealError,
    host_key,
    resealable,
    scope_name,
    scoped_key,
    seal,
    tag,
    tag_matches,
    unseal,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..telemetry.envsettings import AuditSettings

__all__ = ["AotCache", "scope_root", "cache_max_bytes", "DEFAULT_MAX_BYTES", "MAX_BYTES_ENV"]

_OPEN_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_INDEX = "stat"
_INDEX_MAX = 256  # bytes: "<64 hex> <64 hex>\n"
_RECORD_NAME = 32  # hex digits naming a stat record
_BLOCK = 4096  # what a small file occupies on disk (a stat record: ~130 bytes)
_HEADROOM = 16  # a trim leaves 1/16 of the cap free
DEFAULT_MAX_BYTES = 2 << 30
MAX_BYTES_ENV = "STOCKADE_CACHE_MAX_BYTES"
_MIN_MAX_BYTES = 1 << 20
_FINGERPRINT_LENGTH = 16  # `EngineConfig.fingerprint`: the only directories holding entries
_HEX = frozenset("0123456789abcdef")
_MOST_FOLDERS = 64  # fingerprints a trim lists: an engine makes a handful, a worker any
# A use refreshes an entry's time at most this often: one metadata write an hour, not one
# a run. A writer's `.part` file this old is a crashed one's.
_STALE_SECONDS = 3600.0


def cache_max_bytes(env: Mapping[str, str] | None = None) -> int:
    """The most the entries under a cache root may total: `STOCKADE_CACHE_MAX_BYTES` (a
    size, at least 1 MiB), else 2 GiB. Raises UsageError."""
    from ..policy.units import size_variable

    return size_variable(MAX_BYTES_ENV, env, DEFAULT_MAX_BYTES, _MIN_MAX_BYTES)


class AotCache:
    """A directory of sealed `<fingerprint>/<sha256>.cwasm` files and a sealed stat index.

    `open` yields a verified entry for `deserialize_file`; `store` seals and writes one
    atomically. `key` returns this host's key (raising `KeyUnavailable`); tests pass
    another. `audit` is how its audit records are kept, `max_bytes` the most its entries
    total (defaults: the environment's, checked now: raises UsageError for a malformed
    `STOCKADE_AUDIT_MAX_BYTES` or `STOCKADE_CACHE_MAX_BYTES`). Safe to share between
    threads and processes.
    """

    def __init__(self, root: Path, key: Callable[[], bytes] = host_key, *,
                 audit: AuditSettings | None = None, max_bytes: int | None = None) -> None:
        self.root = root
        self._key_source = key
        self._trusted: set[Path] = set()
        self._key_refused = False
        self.max_bytes = cache_max_bytes() if max_bytes is None else max_bytes
        if audit is None:
            # Checked when made, as when telemetry opens, and with the same words: read
            # at a refusal, a malformed one lost its record to a warning (`compile`).
            from ..telemetry.envsettings import AuditSettings

            audit = AuditSettings.from_env()
        self._audit_settings = audit

    def path(self, fingerprint: str, sha256: str) -> Path:
        """Where the compiled form of a module lives."""
        return self.root / fingerprint / f"{sha256}.cwasm"

    @contextmanager
    def open(self, fingerprint: str, sha256: str) -> Iterator[str | None]:
        """A path naming the verified entry, or None (missing or refused). The path names
        the descriptor that was checked (`/proc/self/fd/N`), so nothing can be swapped in
        between the check and the load; it is valid inside the `with` only."""
        fd = self._verified(fingerprint, sha256)
        try:
            yield None if fd is None else f"/proc/self/fd/{fd}"
        finally:
            if fd is not None:
                os.close(fd)

    def scope(self, scope: str) -> AotCache:
        """The cache of one scope of workers (`"isolated"`, `"cordon:NAME"`):
        `<root>/scopes/<scope_name>`, sealed with the scope's key (`seal.scoped_key`) derived
        from this cache's. What such a worker seals is accepted only there."""
        source = self._key_source
        return AotCache(scope_root(self.root, scope),
                        key=lambda: scoped_key(source(), scope), audit=self._audit_settings,
                        max_bytes=self.max_bytes)

    def reseal(self, into: AotCache, fingerprint: str, sha256: str) -> bool:
        """Copy this cache's entry for a module into `into` (a scope's cache), sealed with
        its key, when `into` has no file there yet (one `lstat`: what is there, valid or
        not, is `into`'s loader's to judge; nothing is followed, as its workers write
        it). The entry is verified under this cache's key
        first: a tampered one is refused (deleted, audited) and not copied. True when an
        entry was written."""
        if _present(into.path(fingerprint, sha256)):
            return False
        fd = self._verified(fingerprint, sha256)
        if fd is None:
            return False
        try:
            # A private copy, verified again: the bytes written are exactly those whose
            # MAC was checked, whatever happens to the file meanwhile.
            with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as mapped:
                data = mapped[:]
            end = unseal(data, fingerprint, _purpose(sha256), self._key() or b"")
            with memoryview(data) as view, view[:end] as payload:
                return into.store(fingerprint, sha256, payload) is not None
        except (OSError, ValueError, SealError):
            return False
        finally:
            os.close(fd)

    def store(self, fingerprint: str, sha256: str, data: bytes | memoryview) -> Path | None:
        """Seal and save compiled bytes, then charge them to the cache's running total,
        which trims it when near its cap (`_account`); the path, or None when the cache
        is unusable or the entry alone would pass the cap."""
        key = self._key()
        target = self.path(fingerprint, sha256)
        if len(data) + TRAILER_SIZE > self.max_bytes:
            return None  # kept, it would push every other entry out
        if key is None or not self._directory(target.parent, create=True):
            return None
        trailer = seal(data, fingerprint, _purpose(sha256), key)
        if not _write_atomic(target, (data, trailer)):
            # Checked again next time: another process's trim may have removed it empty.
            self._trusted.discard(target.parent)
            return None
        self._account(target, _blocks(len(data) + TRAILER_SIZE))
        return target

    def evict(self, fingerprint: str, sha256: str) -> None:
        """Remove an entry that failed to load (corrupt or stale)."""
        try:
            self.path(fingerprint, sha256).unlink()
        except OSError:
            pass

    # -- stat index: which module a path held, so cold starts skip hashing ------------

    def recall(self, ident: str) -> str | None:
        """The sha256 remembered for `ident` (a path's identity facts), if its tag
        verifies; a forged or foreign record is deleted and audited."""
        key = self._key()
        path = self._index_path(ident)
        if key is None or not self._directory(path.parent, create=False):
            return None
        try:
            fd = os.open(path, _OPEN_READ)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._refuse(path, f"cannot be opened safely ({exc.strerror})")
            return None
        try:
            info = os.fstat(fd)
            problem = _file_problem(info)
            text = "" if problem else os.read(fd, _INDEX_MAX).decode("ascii", "replace")
            if problem is None and time.time() - info.st_mtime > _STALE_SECONDS:
                # A use, as for entries: the record is among the last to be trimmed (a
                # forged one is deleted below all the same).
                os.utime(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
        sha, _, mac = text.strip().partition(" ")
        if problem is None and not tag_matches(key, mac, _INDEX, ident, sha):
            problem = "its tag does not verify (forged, or written under another key)"
        if problem is not None:
            self._refuse(path, problem)
            return None
        if mac != tag(key, _INDEX, ident, sha):  # an earlier version's tag: write today's
            self.remember(ident, sha)
        return sha

    def remember(self, ident: str, sha256: str) -> None:
        """Record that `ident` holds the module `sha256` (best effort)."""
        key = self._key()
        path = self._index_path(ident)
        if key is None or not self._directory(path.parent, create=True):
            return
        record = f"{sha256} {tag(key, _INDEX, ident, sha256)}\n".encode()
        if _write_atomic(path, (record,)):
            self._account(path, _BLOCK)
        else:
            self._trusted.discard(path.parent)

    # -- trust checks ------------------------------------------------------------------

    def _verified(self, fingerprint: str, sha256: str) -> int | None:
        key = self._key()
        path = self.path(fingerprint, sha256)
        if key is None or not self._directory(path.parent, create=False):
            return None
        try:
            fd = os.open(path, _OPEN_READ)
        except FileNotFoundError:
            return None
        except OSError as exc:  # ELOOP: a symlink planted as an entry
            self._refuse(path, f"cannot be opened safely ({exc.strerror})")
            return None
        try:
            info = os.fstat(fd)
            problem, legacy = _file_problem(info), None
            if problem is None:
                problem, legacy = _seal_problem(fd, info.st_size, fingerprint,
                                                _purpose(sha256), key)
        except BaseException:
            os.close(fd)
            raise
        if problem is not None:
            os.close(fd)
            self._refuse(path, problem)
            return None
        if legacy is not None:
            # Verified, under the MAC `seal` does not pick for its size (an earlier
            # version's): sealed again, so the next run checks it the cheaper way (and a
            # small module without OpenSSL). The open descriptor keeps this copy.
            self.store(fingerprint, sha256, legacy)
        elif time.time() - info.st_mtime > _STALE_SECONDS:
            try:  # a use: the entry is among the last to go when the cache is trimmed
                os.utime(fd)
            except OSError:
                pass
        return fd

    def _account(self, kept: Path, added: int) -> None:
        """Charge `added` bytes (what `kept`, just written, occupies) to the running
        total, and walk the cache to trim it (`_trim`) when the total says the cap is
        passed, when there is no total to trust, or by chance: with probability `added`
        over the headroom a trim leaves, so that a total that lies is found out after
        about that many bytes are stored, whoever wrote it."""
        root = self._open_root()
        if root is None:
            return
        try:
            usage = Usage.open(root)
            if usage is None:
                self._trim(root, kept)
                return
            with usage:
                import random  # only here: a cached run stores nothing

                total, charged = usage.charge(added)
                if (total is not None and total <= self.max_bytes
                        and random.random() * self._headroom() >= added):
                    return
                found = self._trim(root, kept)
                if found is not None:
                    usage.settle(found, charged)
        finally:
            os.close(root)

    def _headroom(self) -> int:
        return max(self.max_bytes // _HEADROOM, 1)

    def _open_root(self) -> int | None:
        """The root, open, when it is a directory only this uid can write."""
        try:
            # The root may be a link the user chose (as `_directory` allows), never what
            # is below it.
            root = os.open(self.root, _OPEN_DIR & ~os.O_NOFOLLOW)
        except OSError:
            return None
        if _directory_problem(os.fstat(root)) is not None:
            os.close(root)
            return None
        return root

    def _trim(self, root: int, kept: Path) -> int | None:
        """When the entries and stat records under the open `root` occupy more than
        `max_bytes`, remove the least recently used (by their last use or write) until
        they occupy at most the cap less its headroom, never `kept`; and the `.part`
        files of writers that crashed. Returns what they occupy then (None when the
        root cannot be read). Best effort: another process may trim, write or load
        meanwhile (a loader holds its entry open: removing it costs a compile).

        Walked by descriptors, never by path: a scope's directories are written by its
        workers too, and one that swapped a fingerprint's directory for a link after it
        was listed made this process delete files of its choosing elsewhere (found by
        review). Only names this cache writes are removed; what cannot be read is
        skipped, not the whole trim. Each folder is closed once listed and opened again
        (and checked to be the one listed) to remove from it, and at most
        `_MOST_FOLDERS` fingerprints are listed: holding thousands of planted folders
        open at once took every descriptor this process may have (found by review)."""
        files: list[tuple[float, int, str, str]] = []  # (used, bytes, folder, name)
        listed: dict[str, tuple[int, int]] = {}  # folder name: (st_dev, st_ino) listed
        names = _listing(root)
        if not names:
            return None
        # The folder just written to comes first: folders a worker planted must not push
        # it past the bound (its entries were then never counted nor trimmed).
        fingerprints = sorted((name for name in names if _is_fingerprint(name)),
                              key=lambda name: name != kept.parent.name)
        walked = fingerprints[:_MOST_FOLDERS] + ([_INDEX] if _INDEX in names else [])
        # Past the bound: not listed, but removed when empty and charged when not, so a
        # worker's folders cost its own scope room, never the host a walk of each.
        total = sum(_past_bound(name, root) for name in fingerprints[_MOST_FOLDERS:])
        stale = time.time() - _STALE_SECONDS
        for name in walked:
            found = _walk(name, root, stale)
            if found is not None:
                listed[name] = found[0]
                for used, size, entry in found[1]:
                    total += size
                    files.append((used, size, name, entry))
        if total <= self.max_bytes:
            return total
        files.sort()
        kept_at = (kept.parent.name, kept.name)
        # One folder open at a time, opened again by name and removed from only when it
        # is still the folder that was listed.
        open_name, folder = "", -1
        try:
            for _, size, folder_name, name in files:
                if total <= self.max_bytes - self._headroom():
                    break
                if (folder_name, name) == kept_at:
                    continue
                if folder_name != open_name:
                    if folder >= 0:
                        os.close(folder)
                    open_name, folder = folder_name, _reopen(folder_name, root,
                                                             listed[folder_name])
                if folder >= 0 and _unlink(name, folder):
                    total -= size
        finally:
            if folder >= 0:
                os.close(folder)
        return total

    def _key(self) -> bytes | None:
        try:
            return self._key_source()
        except KeyUnavailable as exc:
            if exc.insecure and not self._key_refused:
                self._key_refused = True
                self._audit(self.root, "AoT cache not used: the host key is refused: "
                            f"{exc.reason}", reason=exc.reason)
            return None

    def _directory(self, path: Path, *, create: bool) -> bool:
        """True when `path` (and the root above it) is a directory only this uid can
        write. Missing ones are made 0700 when `create`; a foreign one under the root is
        moved aside (and audited); a foreign root disables the cache."""
        if path in self._trusted:
            return True
        if path != self.root and not self._directory(self.root, create=create):
            return False
        try:
            # The root may be a symlink the user chose; nothing below it may be.
            info = os.stat(path) if path == self.root else os.lstat(path)
        except FileNotFoundError:
            if not create:
                return False
            try:
                path.mkdir(mode=0o700, parents=path == self.root, exist_ok=True)
                info = os.lstat(path) if path != self.root else os.stat(path)
            except OSError:
                return False
        except OSError:
            return False
        problem = _directory_problem(info)
        if problem is not None and path == self.root:
            if info.st_uid == os.geteuid() and stat.S_ISDIR(info.st_mode):
                # Ours but group/other-writable (umask 002, a shared setting): close it;
                # whatever was planted meanwhile still has to pass each entry's checks.
                self._audit(path, f"AoT cache {path}: {problem}; tightened to 0700",
                            reason=problem)
                problem = None
            else:
                self._audit(path, f"AoT cache {path} not used: {problem}", reason=problem)
                return False
        if problem is not None:
            return self._set_aside(path, problem) and self._directory(path, create=create)
        if stat.S_IMODE(info.st_mode) != 0o700 and not _tighten(path, info,
                                                                follow=path == self.root):
            return False
        self._trusted.add(path)
        return True

    def _set_aside(self, path: Path, problem: str) -> bool:
        # Renaming needs no recursion into whatever tree was planted, and keeps it for
        # whoever investigates the audit record.
        aside = self.root / f".untrusted-{path.name}-{os.urandom(4).hex()}"
        try:
            os.rename(path, aside)
            moved, where = True, f"; moved to {aside}"
        except OSError as exc:
            moved, where = False, f"; could not move it ({exc.strerror})"
        self._audit(path, f"AoT cache directory {path} refused: {problem}{where}", reason=problem)
        return moved

    def _refuse(self, path: Path, problem: str) -> None:
        try:
            path.unlink()
            removed = "deleted"
        except OSError as exc:
            removed = f"not deleted ({exc.strerror})"
        self._audit(path, f"AoT cache entry {path} refused: {problem}; {removed}, compiling "
                    "again", reason=problem)

    def _audit(self, path: Path, message: str, **fields: str) -> None:
        """One `cache_refused` audit record and a warning; never raises into a run."""
        # The audit log is a leaf of the telemetry package (it needs only the state dir),
        # and this happens only when something is wrong: imported here, not at start-up.
        from ..telemetry.audit import AuditLog
        from ..telemetry.log import logger

        logger("stockade.engine").warning("%s", message)
        settings = self._audit_settings
        try:
            AuditLog(key_path=settings.key_path, max_bytes=settings.max_bytes).append(
                "cache_refused", message, path=str(path), **fields)
        except (OSError, UsageError) as exc:  # an unusable state dir or key: logged
            logger("stockade.engine").warning("could not write the audit record: %s", exc)

    def _index_path(self, ident: str) -> Path:
        return self.root / _INDEX / _sha256(ident.encode()).hexdigest()[:32]


def _purpose(sha256: str) -> str:
    return f"cache:{sha256}"


def _is_fingerprint(name: str) -> bool:
    """Whether `name` in the root is a fingerprint's (not `stat`, `scopes` or the OCI
    store, which share the root)."""
    return len(name) == _FINGERPRINT_LENGTH and set(name) <= _HEX


def scope_root(root: Path, scope: str) -> Path:
    """The directory of `scope`'s cache under the cache `root` (`AotCache.scope`)."""
    return root / "scopes" / scope_name(scope)


def _is_entry(name: str) -> bool:
    """`<sha256>.cwasm`: the only entries `store` writes."""
    digest, dot, suffix = name.partition(".")
    return suffix == "cwasm" and len(digest) == 64 and set(digest) <= _HEX


def _is_record(name: str) -> bool:
    """A stat record's name (`_index_path`)."""
    return len(name) == _RECORD_NAME and set(name) <= _HEX


def _is_part(name: str, kept: Callable[[str], bool]) -> bool:
    """`.<name>.<pid>.<hex>.part` where `kept(name)`: what `_write_atomic` writes
    before its rename."""
    if not (name.startswith(".") and name.endswith(".part")):
        return False
    written, _, rest = name[1:].rpartition(".")[0].rpartition(".")[0].rpartition(".")
    return bool(written) and kept(written) and rest.isdigit()


def _footprint(info: os.stat_result) -> int:
    """The bytes a file occupies: its blocks (a small file takes a whole one), or its
    size when larger (a sparse file is refilled when copied)."""
    return max(info.st_size, info.st_blocks * 512)


def _blocks(size: int) -> int:
    """What a file of `size` bytes is expected to occupy: whole blocks."""
    return -(-size // _BLOCK) * _BLOCK


def _listing(directory: int) -> list[str]:
    """The names in the open `directory`, or none when it cannot be read."""
    try:
        return os.listdir(directory)
    except OSError:
        return []


def _walk(name: str, root: int, stale: float) -> tuple[
        tuple[int, int], list[tuple[float, int, str]]] | None:
    """The folder `name` in the open `root`, listed then closed: ((st_dev, st_ino) of
    the folder, (last use, bytes, name) of each entry or record in it), or None when
    it is not a folder only this uid can write. `.part` files older than `stale` go."""
    try:
        folder = os.open(name, _OPEN_DIR, dir_fd=root)
    except OSError:  # a link or a file in its place, or gone: not a folder
        return None
    try:
        info = os.fstat(folder)
        if _directory_problem(info) is not None:
            return None
        kept_here = _is_record if name == _INDEX else _is_entry
        found: list[tuple[float, int, str]] = []
        for entry in _listing(folder):
            part = _is_part(entry, kept_here)
            if not part and not kept_here(entry):
                continue  # judged by its name first: what a worker plants costs no stat
            try:
                entry_info = os.stat(entry, dir_fd=folder, follow_symlinks=False)
            except OSError:  # removed meanwhile
                continue
            if not stat.S_ISREG(entry_info.st_mode):
                continue
            if part:
                if entry_info.st_mtime < stale:
                    _unlink(entry, folder)
                continue
            used = max(entry_info.st_mtime, entry_info.st_atime)
            found.append((used, _footprint(entry_info), entry))
        return (info.st_dev, info.st_ino), found
    except OSError:
        return None
    finally:
        os.close(folder)


def _reopen(name: str, root: int, identity: tuple[int, int]) -> int:
    """The folder `name` in the open `root`, open again when it is still the folder
    (st_dev, st_ino) `identity` that was listed; else -1."""
    try:
        folder = os.open(name, _OPEN_DIR, dir_fd=root)
    except OSError:
        return -1
    try:
        info = os.fstat(folder)
    except OSError:
        info = None
    if info is None or (info.st_dev, info.st_ino) != identity:
        os.close(folder)
        return -1
    return folder


def _past_bound(name: str, root: int) -> int:
    """What the fingerprint folder `name` past `_MOST_FOLDERS` is charged: nothing once
    removed (it was empty), a block at least when it holds something."""
    try:
        os.rmdir(name, dir_fd=root)
        return 0
    except OSError:  # not empty, not a folder, or gone
        pass
    try:
        info = os.stat(name, dir_fd=root, follow_symlinks=False)
    except OSError:
        return 0
    return max(_footprint(info), _BLOCK) if stat.S_ISDIR(info.st_mode) else 0


def _unlink(name: str, directory: int) -> bool:
    try:
        os.unlink(name, dir_fd=directory)
    except OSError:
        return False
    return True


def _tighten(path: Path, info: os.stat_result, *, follow: bool) -> bool:
    """Make the directory at `path` 0700 when it is still the one `info` describes:
    through a descriptor, never the path. A worker that swapped its folder for a link
    after it was looked at made a `chmod` by path tighten a file of its choosing (found
    by review). `follow` for the root only, which may be a link the user chose."""
    try:
        directory = os.open(path, _OPEN_DIR & ~os.O_NOFOLLOW if follow else _OPEN_DIR)
    except OSError:  # a link or a file in its place now, or gone
        return False
    try:
        now = os.fstat(directory)
        if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
            return False
        os.fchmod(directory, 0o700)
    except OSError:
        return False
    finally:
        os.close(directory)
    return True


def _directory_problem(info: os.stat_result) -> str | None:
    return "not a directory" if not stat.S_ISDIR(info.st_mode) else _owner_problem(info)


def _file_problem(info: os.stat_result) -> str | None:
    return "not a regular file" if not stat.S_ISREG(info.st_mode) else _owner_problem(info)


def _owner_problem(info: os.stat_result) -> str | None:
    """Why an entry someone else could have written is not ours to trust, or None."""
    return owner_problem(info) or None


def _seal_problem(fd: int, size: int, fingerprint: str, purpose: str,
                  key: bytes) -> tuple[str | None, bytes | None]:
    """(why the entry is refused, or None; its payload when it verified but should be
    sealed again (`resealable`), or None)."""
    if size < TRAILER_SIZE:
        return "it carries no Stockade MAC", None
    # Mapped, not read: the pages stay in the page cache for wasmtime's own mapping.
    mapped = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    try:
        end = unseal(mapped, fingerprint, purpose, key)
        return None, (mapped[:end] if resealable(mapped) else None)
    except SealError as exc:
        return exc.reason, None
    finally:
        try:
            mapped.close()
        except BufferError:  # a view still held by a traceback: the GC unmaps it
            pass


def _present(path: Path) -> bool:
    """Whether something (anything but a link in its directory's place) is at `path`."""
    try:
        directory = os.open(path.parent, _OPEN_DIR)
    except OSError:  # missing, or a link or a file planted as the directory
        return False
    try:
        os.stat(path.name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    finally:
        os.close(directory)
    return True


def _write_atomic(target: Path, chunks: tuple[bytes | memoryview, ...]) -> bool:
    # Relative to the directory opened without following a link, and checked on that
    # descriptor: a scope's directory is written by its workers too, and one swapped for
    # a link after `_directory` checked it must not take this process's writes elsewhere.
    try:
        directory = os.open(target.parent, _OPEN_DIR)
    except OSError:
        return False
    tmp = f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.part"
    try:
        if _directory_problem(os.fstat(directory)) is not None:
            return False
        fd = os.open(tmp, _OPEN_NEW, 0o600, dir_fd=directory)
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        os.replace(tmp, target.name, src_dir_fd=directory, dst_dir_fd=directory)
    except OSError:
        try:
            os.unlink(tmp, dir_fd=directory)
        except OSError:
            pass
        return False
    finally:
        os.close(directory)
    return True
