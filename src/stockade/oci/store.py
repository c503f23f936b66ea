"""`Store`: the local content-addressed store, an OCI image layout under the cache directory.

Blobs live at `blobs/sha256/<hex>`, named by the digest of their bytes, verified when
written (before the rename that publishes them) and when read (a blob that does not
match is removed and reported). `index.json` maps reference names to manifest
descriptors; it is replaced whole under a lock, after every blob it points to is in
place, so a failed pull leaves no reference to half of an image. Directories are 0700,
files 0600 (the store holds what runs as the caller, like the AoT cache).

Whoever can write `index.json` chooses what a tag names, so the store is used only when
nobody else can write it, by the rule of the AoT cache beside it and of the state
directory (`regularfile.owner_problem`): the cache directory holding the default store,
the store and its directories must be this user's (one of ours that others can write is
closed to 0700, as the AoT cache closes its root: every file in it is checked in turn),
and `index.json` and every blob read must be this user's files that nobody else can
write. Anything else is refused (`StoreRefused`), naming the path and what is wrong:
another user's (no mode fixes that: each user keeps a store of their own), writable by
group or others, or out of this user's reach.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from ..paths import cache_dir
from ..regularfile import open_regular, owner_problem
from .errors import BlobTooLarge, IntegrityError, StoreCorrupt, StoreRefused
from .media import OCI_INDEX, canonical_json

__all__ = ["Store", "REF_ANNOTATION"]

REF_ANNOTATION = "org.opencontainers.image.ref.name"
# What a user refused another's store can do: each user keeps a store of their own.
_OWN_STORE = "set STOCKADE_CACHE_DIR to a directory of your own"
_LAYOUT = {"imageLayoutVersion": "1.0.0"}
_CHUNK = 1 << 20
MAX_INDEX_BYTES = 16 * 1024**2  # tens of thousands of tags


class Recorded(set[str]):
    """The digests `Store.recording` collects, and its hold on the store's writers lock
    while the recording lasts (None after)."""

    lock: int | None = None


class Store:
    """An OCI image layout directory used as a verified blob store and tag index."""

    def __init__(self, root: Path, within: Path | None = None) -> None:
        """A store at `root`; `within`, a directory holding it that must be private too
        (the cache directory, for `default`)."""
        self.root = root
        self.within = within
        self._new: set[str] | None = None  # what `recording` collects
        self._private = False  # the directories passed `_check_directories`

    @contextlib.contextmanager
    def recording(self) -> Iterator[Recorded]:
        """The digests of the blobs written inside the `with` that were not in the store
        before (for `discard_unreferenced` when what wrote them fails). Every writer of
        blobs it tags only later (a pull, a build) records: it holds `writers.lock`
        shared meanwhile, so a failed pull removes nothing while another is under way
        (a blob it wrote may be one the other found stored and has not tagged yet)."""
        self._prepare()
        fd = os.open(self.root / "writers.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        recorded = Recorded()
        recorded.lock = fd  # with the digests: no other recording's hold is taken for it
        saved, self._new = self._new, recorded
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield recorded
        finally:
            self._new = saved
            recorded.lock = None
            os.close(fd)

    @classmethod
    def default(cls) -> Store:
        """The store of this user: `<cache dir>/oci`."""
        return cls(cache_dir() / "oci", within=cache_dir())

    # -- blobs -----------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Where the blob named `digest` lives (it may not exist)."""
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64 or not _is_hex(hexdigest):
            raise IntegrityError(f"{digest!r}: not a sha256 digest")
        return self.root / "blobs" / "sha256" / hexdigest

    def has(self, digest: str) -> bool:
        """Whether a blob file named `digest` exists (not verified)."""
        return self.blob_path(digest).is_file()

    def put(self, data: bytes, expected: str | None = None) -> str:
        """Store `data`; returns its digest. Raises IntegrityError when it is not `expected`."""
        return self.put_stream([data], expected, None, None)

    def put_stream(self, chunks: Iterable[bytes], expected: str | None, size: int | None,
                   limit: int | None, what: str = "blob") -> str:
        """Stream chunks into the store, hashing as they come. The blob is published only
        when its digest (and `size`, when given) match; over `limit` bytes the write stops
        with BlobTooLarge. Nothing is left behind on any error."""
        self._prepare()
        tmp = self.root / "tmp" / f"{os.getpid()}.{os.urandom(6).hex()}.part"
        hasher, written = hashlib.sha256(), 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    written += len(chunk)
                    if limit is not None and written > limit:
                        raise BlobTooLarge(f"{what} {expected or ''} is larger than the "
                                           f"limit of {limit} bytes".replace("  ", " "))
                    hasher.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            digest = "sha256:" + hasher.hexdigest()
            if expected is not None and digest != expected:
                raise IntegrityError(f"{what} {expected}: content has digest {digest}; refused")
            if size is not None and written != size:
                raise IntegrityError(f"{what} {digest}: {written} bytes, the descriptor "
                                     f"says {size}; refused")
            target = self.blob_path(digest)
            existed = target.exists()
            os.replace(tmp, target)
            if self._new is not None and not existed:
                self._new.add(digest)
            return digest
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def get(self, digest: str, limit: int | None = None) -> bytes:
        """The verified bytes of a blob. Raises StoreCorrupt (and removes the blob) when
        they do not match; a missing blob is StoreCorrupt too, since something pointed
        at it. BlobTooLarge over `limit` bytes; StoreRefused for a blob (or store) of
        another user or writable by group or others."""
        path = self.blob_path(digest)
        with self._open_blob(path, digest) as handle:
            try:
                data = handle.read() if limit is None else handle.read(limit + 1)
            except OSError as exc:
                raise _unreadable(digest, exc) from None
        if limit is not None and len(data) > limit:
            raise BlobTooLarge(f"local store: blob {digest} is larger than {limit} bytes")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            self._corrupt(path, digest)
        return data

    def verified_path(self, digest: str) -> Path:
        """The path of a blob after hashing the file through. Raises StoreCorrupt,
        StoreRefused."""
        with self.verifying(digest):
            pass
        return self.blob_path(digest)

    @contextlib.contextmanager
    def verifying(self, digest: str) -> Iterator[io.BufferedReader[Any]]:
        """A blob opened for one read through, hashed as it is read (so whoever reads it
        reads it once): when the `with` ends, what was left unread is hashed too, and a
        blob that does not match is removed and reported as StoreCorrupt, also in place
        of an error raised inside, which its bytes may have caused. Raises StoreCorrupt,
        StoreRefused."""
        path = self.blob_path(digest)
        with self._open_blob(path, digest) as handle:
            hashing = _Hashing(handle, digest)
            reader = io.BufferedReader(hashing, _CHUNK)
            try:
                yield reader
            except Exception:
                if self._matches(reader, hashing, digest):
                    raise
                self._corrupt(path, digest)
            if not self._matches(reader, hashing, digest):
                self._corrupt(path, digest)

    # -- references ------------------------------------------------------------------

    def lookup(self, name: str) -> dict[str, Any] | None:
        """The manifest descriptor stored under reference `name`, or None."""
        for descriptor in self.entries():
            if descriptor.get("annotations", {}).get(REF_ANNOTATION) == name:
                return descriptor
        return None

    def entries(self) -> list[dict[str, Any]]:
        """Every manifest descriptor of `index.json` (empty for a new store). Raises
        StoreRefused for a store (or an `index.json`) of another user or writable by group
        or others."""
        path = self.root / "index.json"
        try:
            with self._open_owned(path) as handle:
                data = handle.read(MAX_INDEX_BYTES + 1)
            if len(data) > MAX_INDEX_BYTES:
                raise ValueError(f"larger than {MAX_INDEX_BYTES // 1024**2} MiB")
            index = json.loads(data)
        except FileNotFoundError:
            return []
        except RecursionError:
            raise StoreCorrupt(f"local store: {path} is unreadable (nested too deep); "
                               "remove it and pull again") from None
        except (OSError, ValueError) as exc:
            raise StoreCorrupt(f"local store: {path} is unreadable ({exc}); remove it and "
                               "pull again") from None
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list):
            raise StoreCorrupt(f"local store: {path} has no manifests list")
        return [m for m in manifests if isinstance(m, dict)]

    def tag(self, name: str, descriptor: dict[str, Any]) -> None:
        """Point reference `name` at `descriptor` (its blob must already be stored)."""
        entry = dict(descriptor)
        entry["annotations"] = {**descriptor.get("annotations", {}), REF_ANNOTATION: name}
        with self._locked():
            kept = [m for m in self.entries()
                    if m.get("annotations", {}).get(REF_ANNOTATION) != name]
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*kept, entry]}
            self._write_atomic(self.root / "index.json", canonical_json(index))

    def discard_unreferenced(self, digests: Recorded) -> None:
        """Remove the blobs `digests` that no tagged image uses (its manifest, config,
        layers or module), under the index lock. Never raises for what it cannot read:
        a blob it cannot tell is unused is kept, and all of them while another writer
        records (`recording`)."""
        if digests.lock is None:  # its recording is over: whether it is alone is unknown
            return
        try:  # alone: no other writer's shared hold (a failed upgrade ends this one)
            fcntl.flock(digests.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return
        with contextlib.suppress(OSError, StoreCorrupt, StoreRefused), self._locked():
            used: set[str] = set()
            for entry in self.entries():
                used.add(str(entry.get("digest")))
                used.update(str(value) for value in (entry.get("annotations") or {}).values())
                try:
                    manifest = json.loads(self.blob_path(str(entry.get("digest"))).read_bytes())
                except (OSError, ValueError, IntegrityError, RecursionError):
                    return  # an entry whose blobs are unknown: keep everything
                if not isinstance(manifest, dict):
                    continue
                layers = manifest.get("layers")
                for descriptor in [manifest.get("config"),
                                   *(layers if isinstance(layers, list) else [])]:
                    if isinstance(descriptor, dict):
                        used.add(str(descriptor.get("digest")))
            for digest in set(digests) - used:
                with contextlib.suppress(IntegrityError):
                    self._discard(self.blob_path(digest))

    # -- internals -------------------------------------------------------------------

    def _prepare(self) -> None:
        self._check_directories(create=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            self._write_atomic(layout, canonical_json(_LAYOUT))

    def _check_directories(self, create: bool) -> None:
        """Make (when `create`) and check the store's directories: each a directory of
        this user, closed to 0700 when others could write it. Raises StoreRefused for one
        of another user, one this user cannot reach, or not a directory. Without
        `create`, a missing one is passed over (nothing in it to read) and the check is
        made again next time."""
        if self._private:
            return
        inner = (self.root, self.root / "blobs", self.root / "blobs" / "sha256",
                 self.root / "tmp")
        directories = inner if self.within is None else (self.within, *inner)
        complete = True
        for number, directory in enumerate(directories):
            try:
                if create:
                    # `parents` only for the outermost: parents made by mkdir get the
                    # umask's mode, not 0700.
                    directory.mkdir(mode=0o700, parents=number == 0, exist_ok=True)
                # The outermost may be a symlink the user chose; nothing below it may be.
                info = os.stat(directory) if number == 0 else os.lstat(directory)
            except FileNotFoundError:
                if create:
                    raise
                complete = False
                continue
            except PermissionError as exc:  # another user's, in a directory of theirs
                raise StoreRefused(f"local store: {directory}: this user cannot reach it "
                                   f"({exc.strerror}); refused ({_OWN_STORE})") from None
            if not stat.S_ISDIR(info.st_mode):
                raise StoreRefused(f"local store: {directory} is not a directory; refused")
            if info.st_uid != os.geteuid():
                # Not fixable by a mode: its owner can write it whatever the mode says.
                raise StoreRefused(f"local store: {directory}: {owner_problem(info)}; "
                                   "refused: whoever owns a store chooses what its images "
                                   f"run ({_OWN_STORE})")
            if owner_problem(info):
                # Ours, but open to others: closed as the AoT cache closes its root;
                # what others may have put in it meanwhile is checked as it is read.
                os.chmod(directory, 0o700)
        self._private = complete

    @contextlib.contextmanager
    def _open_owned(self, path: Path) -> Iterator[BinaryIO]:
        """`path` opened for reading, in a store whose directories passed their check: a
        regular file (no symlink followed, no FIFO waited on) of this user that nobody
        else can write. Raises StoreRefused, OSError (FileNotFoundError when missing)."""
        self._check_directories(create=False)
        fd = open_regular(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as handle:
            problem = owner_problem(os.fstat(fd))
            if problem:
                raise StoreRefused(f"local store: {path}: {problem}; refused (remove it and "
                                   "pull again)")
            yield handle

    @contextlib.contextmanager
    def _open_blob(self, path: Path, digest: str) -> Iterator[BinaryIO]:
        """A blob file opened by `_open_owned`. Raises StoreCorrupt when it is missing or
        is not a regular file, StoreRefused as `_open_owned`."""
        with contextlib.ExitStack() as stack:
            try:
                handle = stack.enter_context(self._open_owned(path))
            except FileNotFoundError:
                raise StoreCorrupt(f"local store: blob {digest} is missing; pull the image "
                                   "again") from None
            except OSError as exc:
                raise _unreadable(digest, exc) from None
            # Only the open's errors are the store's: an OSError raised by what reads the
            # handle (gzip's BadGzipFile on a layer that is no gzip) is the reader's.
            yield handle

    def _write_atomic(self, target: Path, data: bytes) -> None:
        if target.name != "oci-layout":
            self._prepare()
        tmp = self.root / "tmp" / f"{target.name}.{os.getpid()}.{os.urandom(6).hex()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._prepare()
        fd = os.open(self.root / "index.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @staticmethod
    def _matches(reader: io.BufferedReader[Any], hashing: _Hashing, digest: str) -> bool:
        """Whether the blob `reader` reads has `digest`, once read to its end."""
        while reader.read(_CHUNK):
            pass
        return "sha256:" + hashing.hasher.hexdigest() == digest

    def _corrupt(self, path: Path, digest: str) -> NoReturn:
        self._discard(path)
        raise StoreCorrupt(f"local store: blob {digest} does not match its digest "
                           f"(removed from {self.root}); pull the image again") from None

    @staticmethod
    def _discard(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()


class _Hashing(io.RawIOBase):
    """A blob file read through a hash: each byte is hashed once, as it is read."""

    def __init__(self, inner: BinaryIO, digest: str) -> None:
        self._inner = inner
        self.digest = digest
        self.hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            count = self._inner.readinto(buffer)  # type: ignore[attr-defined]  # a file's
        except OSError as exc:
            raise _unreadable(self.digest, exc) from None
        self.hasher.update(memoryview(buffer)[:count])
        return int(count)


def _unreadable(digest: str, exc: OSError) -> StoreCorrupt:
    return StoreCorrupt(f"local store: blob {digest} cannot be read "
                        f"({exc.strerror or exc}); pull the image again")


def _is_hex(text: str) -> bool:
    return all(ch in "0123456789abcdef" for ch in text)
