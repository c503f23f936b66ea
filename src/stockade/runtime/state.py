"""`ContainerState`: what `stockade-runtime` remembers of a container under `--root`.

`<root>/<id>/state.json` (written atomically) holds the bundle, the init process's pid and
its start time (so a recycled pid is never taken for the container); `exec.fifo` exists
from `create` until `start` opens it, which is what releases the waiting process.
`<root>/.<id>.lock` is held while `create` makes the container and while `delete`
removes it (`id_lock`; no id starts with a dot).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = ["ContainerState", "container_dir", "id_lock", "lock_path", "proc_start_time",
           "status_of"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}\Z")


def container_dir(root: Path, container_id: str) -> Path:
    """`<root>/<id>`; UsageError for an id that is not a plain name."""
    if not _ID.match(container_id):
        raise UsageError(f"container id {container_id!r}: letters, digits, '.', '_', '+', '-'")
    return root / container_id


def lock_path(root: Path, container_id: str) -> Path:
    """The file `id_lock` locks (`<root>/.<id>.lock`)."""
    return root / f".{container_id}.lock"


@contextlib.contextmanager
def id_lock(root: Path, container_id: str) -> Iterator[None]:
    """Container ID's lock, held for the block (released by the kernel when the holder
    is killed). Raises UsageError at once when another command holds it: a `delete
    --force` during a `create` removed the directory being made, and a second `create`
    of the id then ran two containers under one state (found by review)."""
    path = lock_path(root, container_id)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"container {container_id!r} is being created or deleted by "
                             "another command; try again") from None
        try:  # the file its last holder unlinked is no lock: take the one in place
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        os.unlink(path)
        os.close(fd)


def proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19]) if len(fields) > 19 and fields[0] != "Z" else None


@dataclass
class ContainerState:
    """The persisted facts of one container."""

    id: str
    bundle: str
    pid: int
    start_time: int
    created: str
    annotations: dict[str, Any]

    def save(self, directory: Path) -> None:
        """Write `state.json` atomically."""
        tmp = directory / f".state.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, directory / "state.json")

    @classmethod
    def load(cls, directory: Path) -> ContainerState:
        """Read `state.json`; UsageError when the container does not exist."""
        try:
            return cls(**json.loads((directory / "state.json").read_text()))
        except FileNotFoundError:
            raise UsageError(f"container {directory.name!r} does not exist") from None
        except (ValueError, TypeError) as exc:
            raise UsageError(f"container {directory.name!r}: unreadable state ({exc})") from None


def status_of(state: ContainerState, directory: Path) -> str:
    """`created`, `running` or `stopped` as the OCI runtime spec defines them."""
    if proc_start_time(state.pid) != state.start_time:
        return "stopped"
    with contextlib.suppress(OSError):
        if (directory / "exec.fifo").exists():
            return "created"
    return "running"
