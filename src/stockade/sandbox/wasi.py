"""Build the WASI context of a run: argv, environment and preopened directories."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import PolicyError
from ..fileid import file_identity
from ..invocation import Invocation
from ..policy import DirGrant, Policy

TYPE_CHECKING = False
if TYPE_CHECKING:
    import wasmtime

__all__ = ["guest_env", "wasi_config", "checked_preopens", "Preopens"]


def guest_env(policy: Policy, invocation: Invocation) -> list[tuple[str, str]]:
    """Variables the guest sees: allow-listed host ones, then the policy's, then the
    invocation's (later wins). Nothing else from the host is passed."""
    env: dict[str, str] = {}
    for name in policy.capabilities.env_allow:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(policy.capabilities.env)
    env.update(invocation.env)
    return list(env.items())


_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


class Preopens(list[tuple[Path, bool]]):
    """The (host dir, writable) pairs a run preopens, in order. The granted directories
    are held open by this object and named by their descriptors (`/proc/self/fd/N`), so
    what the run opens is what was checked: `close()` (or `with`) once the run is over.
    Safe twice. Pairs appended later (a scratch directory) are preopened by path."""

    def __init__(self) -> None:
        super().__init__()
        self._fds: list[int] = []

    def hold(self, fd: int, writable: bool) -> None:
        """Preopen the directory held as `fd` (closed with this object)."""
        self._fds.append(fd)
        self.append((Path(f"/proc/self/fd/{fd}"), writable))

    def close(self) -> None:
        """Close the held descriptors. Safe twice."""
        while self._fds:
            os.close(self._fds.pop())

    def __enter__(self) -> Preopens:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def checked_preopens(policy: Policy) -> Preopens:
    """Each granted directory opened once (`O_PATH|O_DIRECTORY`, symlinks followed as
    `DirGrant.real_host` resolves them; a held grant through its descriptor): the check
    is that open, and the run preopens from its descriptor, so a directory removed or
    replaced after it changes nothing the guest sees. Raises PolicyError (one line) for
    what is no directory or cannot be opened, and for a read-only grant inside a
    writable one (`_refuse_writable_read_only`)."""
    preopens = Preopens()
    try:
        fds = []
        for grant in policy.capabilities.dirs:
            try:
                fd = os.open(grant.host, _DIR_FLAGS)
            except (FileNotFoundError, NotADirectoryError):
                raise PolicyError(f"directory grant {grant}: {grant.shown} is not a "
                                  "directory") from None
            except OSError as exc:
                raise PolicyError(f"directory grant {grant}: cannot open {grant.shown}: "
                                  f"{exc.strerror}") from None
            preopens.hold(fd, grant.writable)
            fds.append(fd)
        _refuse_writable_read_only(list(zip(policy.capabilities.dirs, fds, strict=True)))
    except BaseException:
        preopens.close()
        raise
    return preopens


# Directories climbed from a grant towards `/` at most (deeper trees are not checked).
_MAX_DEPTH = 4096


def _lineage(fd: int) -> set[tuple[int, int]] | None:
    """(st_dev, st_ino) of the directory held as `fd` and of each of its ancestors, found
    by opening `..` from the descriptor (the kernel's parent, whatever path or symlink
    named it), or None past `_MAX_DEPTH` levels: then it cannot be told what the
    directory lies in. The climb ends early at a `..` that cannot be opened: what this
    process cannot search (a confined worker's view), the guest cannot cross either.
    A bind mount's `..` is the parent of where it is mounted, not of its source: a
    read-only bind mount of a writable grant's subdirectory is not recognised."""
    found = {file_identity(fd)}
    here = os.dup(fd)
    try:
        for _ in range(_MAX_DEPTH):
            try:
                parent = os.open("..", _DIR_FLAGS, dir_fd=here)
            except OSError:
                return found
            os.close(here)
            here = parent
            identity = file_identity(here)
            if identity in found:
                return found  # `/` is its own parent
            found.add(identity)
        return None
    finally:
        os.close(here)


def _refuse_writable_read_only(held: list[tuple[DirGrant, int]]) -> None:
    """Raise PolicyError for a read-only grant that is a writable grant's directory or
    lies beneath it: the guest could write it through the writable one. (A writable
    grant beneath a read-only one is what it says: that part is writable.)"""
    writable = {file_identity(fd): grant for grant, fd in held if grant.writable}
    if not writable:
        return
    for grant, fd in held:
        if grant.writable:
            continue
        lineage = _lineage(fd)
        if lineage is None:
            raise PolicyError(f"directory grant {grant}: cannot tell whether {grant.shown} "
                              f"lies inside a writable grant (over {_MAX_DEPTH} directories deep); "
                              "grant it :rw, or a directory nearer /")
        for identity in lineage:
            if identity in writable:
                where = "the directory of" if identity == file_identity(fd) else "inside"
                raise PolicyError(f"directory grant {grant}: {grant.shown} is {where} the "
                                  f"writable grant {writable[identity]}, so it would be writable "
                                  "(grant it :rw, or grant directories that do not nest)")


def wasi_config(
    invocation: Invocation, policy: Policy, program: str, preopens: list[tuple[Path, bool]],
    grants: tuple[DirGrant, ...],
) -> wasmtime.WasiConfig:
    """The WasiConfig: read-only preopens unless granted rw, no inherited stdio or env.

    Standard streams are served by Stockade's own host calls (captured, capped), so the
    config leaves them unset.
    """
    import wasmtime  # here: `guest_env` serves the C-API backend, which never imports it

    config = wasmtime.WasiConfig()
    config.argv = [program, *invocation.args]
    config.env = guest_env(policy, invocation)
    for (host, writable), grant in zip(preopens, grants, strict=True):
        try:
            config.preopen_dir(str(host), grant.guest, writable)
        except wasmtime.WasmtimeError:  # the directory went away: one line, not a traceback
            raise PolicyError(f"directory grant {grant}: cannot preopen {grant.shown}") from None
    return config
