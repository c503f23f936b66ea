"""What of a bundle's process no module signature covers, under a host trust.

A module's embedded signature covers its bytes, never `config.json`: a signed interpreter
(quickjs, python.wasm) re-wrapped in an unsigned image whose `Cmd` carries other code
would run that code as if it were signed. `stockade run oci://…` refuses an image
process unless an image signature by a trusted key covers the image; the runtime cannot
know that (a bundle carries no image digest, and image signatures cannot count here:
`bundle.host_policy`), nor tell the image's `Cmd`, `Env` and `WorkingDir` from what the
caller of `ctr run`, `podman run` or a pod spec added. So under a host policy that
requires signatures, a process that hands the guest anything beyond its module is
refused: arguments after `process.args[0]`, a `cwd` other than `/`, and variables other
than those the container engines set on their own (`ENGINE_ENV`). Those name the
container, its terminal and its services (addresses and ports), never code an image
chose; an image's own `PATH` is refused like any variable it sets.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..display import printable

if TYPE_CHECKING:
    from .bundle import Bundle

__all__ = ["unsigned_process", "ENGINE_ENV"]

# containerd's, Podman's (and Docker's) default PATH, set when the image names none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The variables containerd and Podman set on their own, by the values they give them.
ENGINE_ENV: dict[str, re.Pattern[str]] = {
    "PATH": re.compile(re.escape(DEFAULT_PATH)),
    "TERM": re.compile("xterm"),
    "container": re.compile("podman"),
    "HOSTNAME": re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}"),  # the container's name
}
# Kubernetes' service links (the kubelet gives every pod `KUBERNETES_SERVICE_HOST` and
# its kin): an address, a port or `tcp://ADDRESS:PORT`, nothing a guest could run.
_SERVICE_NAME = re.compile(r"[A-Z_][A-Z0-9_]*_(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
                           r"|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)?)")
_SERVICE_VALUE = re.compile(r"(?:tcp|udp|sctp)(?:://\[?[0-9A-Fa-f.:]+\]?:\d+)?|[0-9A-Fa-f.:]+")
_SHOWN = 4  # variable names shown in the one line; the rest are counted


def _engine_set(name: str, value: str) -> bool:
    """Whether a container engine sets `name` to `value` on its own."""
    pattern = ENGINE_ENV.get(name)
    if pattern is not None:
        return pattern.fullmatch(value) is not None
    return _SERVICE_NAME.fullmatch(name) is not None \
        and _SERVICE_VALUE.fullmatch(value) is not None


def unsigned_process(bundle: Bundle) -> str | None:
    """Why the bundle's host trust refuses its process (one line: what `config.json`
    sets, and how to proceed), or None: no signature is required, or the process hands
    the guest nothing beyond its module and what the container engines set on their own.
    Reads the `process` `read_bundle` checked."""
    if not bundle.policy.trust.require_signature:
        return None
    process = bundle.config.get("process") or {}
    fields = ["process.args"] if bundle.args else []
    names = []
    for item in process.get("env") or []:
        name, _, value = str(item).partition("=")
        if not _engine_set(name, value):
            names.append(printable(name[:40]))
    if names:
        more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
        fields.append(f"process.env {' '.join(names[:_SHOWN])}{more}")
    cwd = process.get("cwd")
    if isinstance(cwd, str) and cwd not in ("", "/"):
        fields.append(f"process.cwd {printable(cwd[:60])}")
    if not fields:
        return None
    return (f"refused: config.json sets {', '.join(fields)}, not covered by a signature "
            "(the module's covers its bytes only, and stockade-runtime cannot tell an "
            "image's process from the caller's, nor see an image signature): run the module "
            "with no arguments, variables or working directory of its own, or run the image "
            "with `stockade run` under an image signature by a trusted cosign key")
