"""`resolve`: an `oci://` reference to a module file in the local store, pulling it once.

Also turns the image's process (`Entrypoint`/`Cmd`, `Env`, `WorkingDir`) into guest
arguments and variables the way a container runtime would: arguments given by the caller
replace `Cmd`; the caller's variables win over the image's. Limits and capabilities are
never taken from the image.

The image config is covered by an image signature (over the manifest, which names the
config by digest), never by the module's own signature: a signed interpreter re-wrapped in
a new image whose `Cmd` carries other code would run that code as if it were signed.
`process_fields` says what of the image's process would reach the guest, `unsigned_process`
why a caller whose trust rests on the module signature alone refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ImageNotFound
from .reference import Reference, parse_reference
from .registry import insecure_hosts
from .store import Store
from .transfer import PulledImage, load_local, pull

__all__ = ["ResolvedModule", "resolve", "is_oci", "guest_process", "process_fields",
           "unsigned_process"]


@dataclass(frozen=True)
class ResolvedModule:
    """A module ready to load: its verified blob path, the image and the pinned reference."""

    path: Path
    pulled: PulledImage
    pinned: Reference


def is_oci(text: str) -> bool:
    """Whether a module argument names an image (`oci://…`)."""
    return text.startswith("oci://")


def resolve(text: str, store: Store | None = None, insecure: tuple[str, ...] = (),
            refresh: bool = False) -> ResolvedModule:
    """The module of image `text` from the store, pulling it when absent (or when
    `refresh`, to re-resolve a tag). The blob is re-hashed before it is handed out.
    Raises the OCI errors of `pull` and `load_local`."""
    ref = parse_reference(text)
    store = store or Store.default()
    pulled = None
    if not refresh or ref.digest is not None:
        try:
            pulled = load_local(ref, store)
        except ImageNotFound:
            pulled = None
    if pulled is None:
        pulled = pull(ref, store, insecure_hosts(insecure))
    path = store.verified_path(pulled.module_digest)
    return ResolvedModule(path, pulled, ref.with_digest(pulled.digest))


def guest_process(pulled: PulledImage, args: tuple[str, ...],
                  env: tuple[tuple[str, str], ...]) -> tuple[tuple[str, ...],
                                                             tuple[tuple[str, str], ...]]:
    """(guest arguments after argv[0], image variables the caller did not set). `PWD` is
    set from `WorkingDir` as a shell would."""
    image = pulled.image
    if image.entrypoint:
        argv = image.entrypoint + (args or image.cmd)
    elif image.cmd:
        argv = image.cmd[:1] + args if args else image.cmd
    else:  # an artifact: no process, the caller's arguments as they are
        argv = ("", *args)
    given = {key for key, _ in env}
    extra: list[tuple[str, str]] = []
    for item in image.env:
        key, sep, value = item.partition("=")
        if sep and key and key not in given:
            extra.append((key, value))
            given.add(key)
    if image.working_dir and "PWD" not in given:
        extra.append(("PWD", image.working_dir))
    return tuple(argv[1:]), tuple(extra)


def process_fields(pulled: PulledImage, args: tuple[str, ...],
                   env: tuple[tuple[str, str], ...]) -> list[str]:
    """The fields of the image config whose values `guest_process` would hand the guest
    (`Entrypoint arguments`, `Cmd`, `Env`, `WorkingDir`, in that order) for a caller
    giving `args` and setting `env`; [] when none would (`argv[0]`, the module's path,
    never reaches it)."""
    image = pulled.image
    _, image_env = guest_process(pulled, args, env)
    from_workdir = bool(image.working_dir) and ("PWD", image.working_dir) in image_env \
        and not any(item.startswith("PWD=") for item in image.env)
    fields = []
    if image.entrypoint[1:]:
        fields.append("Entrypoint arguments")
    if not args and image.cmd[0 if image.entrypoint else 1:]:  # the caller's replace Cmd
        fields.append("Cmd")
    if len(image_env) > from_workdir:
        fields.append("Env")
    if from_workdir:
        fields.append("WorkingDir")
    return fields


def unsigned_process(pulled: PulledImage, args: tuple[str, ...],
                     env: tuple[tuple[str, str], ...]) -> str | None:
    """Why the image's process may not reach the guest when no image signature covers
    it (one line: what the config sets, and how to proceed), or None when nothing of it
    would (`process_fields`)."""
    fields = process_fields(pulled, args, env)
    if not fields:
        return None
    how = "sign the image with a trusted cosign key (stockade oci sign)"
    if fields == ["Cmd"]:
        how += ", or give the arguments on the command line"
    return (f"refused: the image config of {pulled.ref} sets {', '.join(fields)}, not covered "
            f"by a signature (the module's signature covers its bytes only): {how}")
