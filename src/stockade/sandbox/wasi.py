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

__all__ = ["guest_env", "wasi_config", "checked_preopens"]


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


def checked_preopens(policy: Policy) -> list[tuple[Path, bool]]:
    """(host dir, writable) per grant, resolved (`DirGrant.real_host`); PolicyError for a
    missing directory."""
    preopens = []
    for grant in policy.capabilities.dirs:
        host = grant.real_host()
        if not host.is_dir():
            raise PolicyError(f"--dir {grant}: {grant.host} is not a directory")
        preopens.append((host, grant.writable))
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
        config.preopen_dir(str(host), grant.guest, writable)
    return config
