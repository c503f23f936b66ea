"""Build the WASI context of a run: argv, environment and preopened directories."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PolicyError
from ..invocation import Invocation
from ..policy import DirGrant, Policy

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
    what is no directory or cannot be opened."""
    preopens = Preopens()
    try:
        for grant in policy.capabilities.dirs:
            try:
                fd = os.open(grant.host, _DIR_FLAGS)
            except (FileNotFoundError, NotADirectoryError):
                raise PolicyError(f"--dir {grant}: {grant.shown} is not a directory") from None
            except OSError as exc:
                raise PolicyError(f"--dir {grant}: cannot open {grant.shown}: "
                                  f"{exc.strerror}") from None
            preopens.hold(fd, grant.writable)
    except BaseException:
        preopens.close()
        raise
    return preopens


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
            raise PolicyError(f"--dir {grant}: cannot preopen {grant.shown}") from None
    return config
