"""A `run` MODULE argument: a file path, or `oci://REF` resolved through the local store."""

from __future__ import annotations

from pathlib import Path

from ..policy import Policy

__all__ = ["open_source"]


def open_source(module: str, args: tuple[str, ...],
                policy: Policy) -> tuple[Path, tuple[str, ...], Policy]:
    """(module file, guest args, policy) for a MODULE argument. For `oci://REF` the image is
    pulled once into the store, its Entrypoint/Cmd become the arguments (the caller's
    replace Cmd) and its Env the variables the caller did not set; limits and
    capabilities stay the caller's. Raises the OCI errors (`stockade.oci.errors`)."""
    if not module.startswith("oci://"):
        return Path(module), args, policy
    from ..oci import guest_process, resolve

    resolved = resolve(module)
    caps = policy.capabilities
    given = tuple(caps.env) + tuple((name, "") for name in caps.env_allow)
    guest_args, image_env = guest_process(resolved.pulled, args, given)
    return resolved.path, guest_args, policy.with_capabilities(env=image_env + tuple(caps.env))
