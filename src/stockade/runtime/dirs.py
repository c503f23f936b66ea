"""`HeldDirs`: a bundle's directories opened once, judged and granted as descriptors.

The rootfs and every bind-mount source are opened once (`O_PATH|O_DIRECTORY`); whether
one lies inside the bundle or inside a directory of the host policy is decided on that
descriptor (`beneath`), and the guest's directory is opened from the same descriptor
(`DirGrant.held`: `/proc/PID/fd/N`), never from the path again. A source swapped for a
symlink after it was opened changes nothing the guest sees; swapped before, the
descriptor holds where the symlink led, and that is what is judged.

The last component is followed, as mount(8) follows a symlinked bind source: the
decision is on the directory reached, so following is safe, and a link inside an
allowed directory that stays inside it keeps working.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

from ..hostcalls.descriptors import open_beneath

__all__ = ["HeldDirs", "beneath", "path_of", "in_engine_storage"]

_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def path_of(fd: int) -> str:
    """The path the kernel gives the directory held as `fd` now (for messages, and the
    start of `beneath`'s check; never what a decision rests on alone)."""
    return os.readlink(f"/proc/self/fd/{fd}")


def beneath(fd: int, root_fd: int) -> bool:
    """Whether the directory held as `fd` is, or lies beneath, the one held as
    `root_fd`: its current path, taken relative to `root_fd`'s, is resolved by the kernel
    beneath `root_fd` (`openat2` `RESOLVE_BENEATH`: no `..`, absolute symlink or magic
    link leaves it) and must reach the same inode as `fd`."""
    path, root = path_of(fd), path_of(root_fd).rstrip("/")
    if path == root or (not root and path == "/"):
        relative = "."
    elif path.startswith(root + "/"):
        relative = path[len(root) + 1:]
    else:
        return False
    try:
        probe = open_beneath(root_fd, os.fsencode(relative))
    except OSError as exc:  # it left root_fd, or moved meanwhile: not shown to be inside
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
            raise  # no answer, not "outside" (a refusal naming the wrong cause)
        return False
    try:
        found, held = os.fstat(probe), os.fstat(fd)
    finally:
        os.close(probe)
    return (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)


class HeldDirs:
    """Directories (and the module file) held open for one bundle; `close()` (or `with`)
    closes them all."""

    def __init__(self, links_in: Path | None = None) -> None:
        self.fds: list[int] = []
        self._links_in = links_in
        self._links: Path | None = None

    def open(self, path: Path) -> int:
        """An `O_PATH` descriptor of the directory `path` leads to now, held until
        `close()`. Raises OSError (ENOENT, ENOTDIR, ELOOP...)."""
        fd = os.open(path, _FLAGS)
        self.fds.append(fd)
        return fd

    def hold_file(self, fd: int, name: str) -> Path:
        """Hold the file open as `fd` until `close()`, as a path named `name` that opens
        that very file whatever its old path leads to since: a link, in a directory of
        this process's own (in `links_in`, else the temporary directory), to the magic
        link `/proc/PID/fd/N`. (The link keeps the name results and records show; the
        descriptor alone would show as its number.)"""
        self.fds.append(fd)
        if self._links is None:
            self._links = Path(tempfile.mkdtemp(prefix="stockade-module-", dir=self._links_in))
        if name in ("", ".", "..") or "/" in name or len(os.fsencode(name)) > 255:
            name = "module.wasm"
        link = self._links / name
        link.symlink_to(f"/proc/{os.getpid()}/fd/{fd}")
        return link

    def close(self) -> None:
        """Close every held descriptor. Safe twice."""
        while self.fds:
            os.close(self.fds.pop())
        if self._links is not None:
            for link in self._links.iterdir():
                link.unlink()
            self._links.rmdir()
            self._links = None

    def __enter__(self) -> HeldDirs:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# containers/storage (Podman, Buildah, CRI-O): the bundle is
# `<storage>/<driver>-containers/<container id>/userdata`, the rootfs lies in
# `<storage>/<driver>/` (vfs: `vfs/dir/<layer>`, overlay: `overlay/<layer>/merged`).
_STORAGE_BUNDLE = re.compile(
    r"^(?P<storage>/.*)/(?P<driver>[a-z0-9]+)-containers/[0-9a-f]{64}/userdata$")


def in_engine_storage(bundle_fd: int, rootfs_fd: int, held: HeldDirs) -> bool:
    """Whether the rootfs is the container engine's own, in the storage the bundle is
    in: the bundle (held) lies at `<storage>/<driver>-containers/<id>/userdata`, the
    storage directory belongs to this process's effective uid and nobody else may write
    it (so nobody else laid it out), and the rootfs (held) lies beneath
    `<storage>/<driver>`. Every step is judged on descriptors (`beneath`)."""
    found = _STORAGE_BUNDLE.match(path_of(bundle_fd))
    if found is None:
        return False
    try:
        storage_fd = held.open(Path(found["storage"]))
        driver_fd = open_beneath(storage_fd, os.fsencode(found["driver"]))
    except OSError:
        return False
    held.fds.append(driver_fd)
    info = os.fstat(storage_fd)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        return False
    return beneath(bundle_fd, storage_fd) and beneath(rootfs_fd, driver_fd)
