"""A `run` MODULE argument: a file path, or `oci://REF` resolved through the local store."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from ..errors import ModuleNotFound
from ..policy import Policy
from ..records import FieldTuple

__all__ = ["Source", "open_source", "module_path"]


class Source(FieldTuple):
    """A MODULE argument opened: the module file, the guest's arguments and the policy to
    run it under; for an image, its pinned `REF@sha256:…` and module digest, and why its
    trust refuses the image's process (None: it may run)."""

    path: Path
    args: tuple[str, ...]
    policy: Policy
    pinned: str | None = None
    sha256: str | None = None
    refusal: str | None = None


def module_path(module: str) -> Path:
    """The file a MODULE argument names. An empty name names no file: ModuleNotFound
    (127), as for any missing module; `Path('')` would be `.`, the current directory."""
    if not module:
        raise ModuleNotFound("'': no such module file")
    return Path(module)


def open_source(module: str, args: tuple[str, ...], policy: Policy) -> Source:
    """The `Source` of a MODULE argument. For `oci://REF` the image is pulled once into
    the store, its Entrypoint/Cmd become the arguments (the caller's replace Cmd) and its
    Env the variables the caller did not set; limits and capabilities stay the caller's.
    Under a `[trust]` that requires signatures, the image's signatures are checked
    (`oci.trusted.vouch`); when none by a trusted key covers the image, its process is
    covered by no signature (the module's covers its bytes only), and one that would
    reach the guest is refused: `refusal` says why, for the caller to deny the run as the
    trust gate denies it (126, audited). Raises the OCI errors (`stockade.oci.errors`)."""
    if not module.startswith("oci://"):
        return Source(module_path(module), args, policy)
    from ..oci import guest_process, resolve
    from ..oci.resolve import unsigned_process
    from ..oci.trusted import vouch

    resolved = resolve(module)
    caps = policy.capabilities
    given = tuple(caps.env) + tuple((name, "") for name in caps.env_allow)
    guest_args, image_env = guest_process(resolved.pulled, args, given)
    trust, note = vouch(resolved, policy.trust)
    if note is not None and trust is policy.trust:
        sys.stderr.write(f"stockade: {note}\n")  # why the image signature did not count
    module_digest = resolved.pulled.module_digest.removeprefix("sha256:")
    refusal = None
    if trust.require_signature and module_digest not in trust.vouched:
        refusal = unsigned_process(resolved.pulled, args, given)
    if refusal is not None:  # nothing of the image's process reaches the policy
        policy = replace(policy, trust=trust)
        return Source(resolved.path, args, policy, str(resolved.pinned), module_digest,
                      refusal)
    policy = replace(policy.with_capabilities(env=image_env + tuple(caps.env)), trust=trust)
    return Source(resolved.path, guest_args, policy, str(resolved.pinned), module_digest)
