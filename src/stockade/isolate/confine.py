"""`confine_current_process(grants)`: shut the calling process in, for good.

    from stockade.isolate import Grants, confine_current_process

    report = confine_current_process(Grants(
        read=(Path("/usr/lib/python3.11"),), dirs=((Path("/srv/data"), True),)))

In order: a private network namespace (loopback only), a private mount namespace with
the granted directories idmapped to the worker's uid, the switch to an unprivileged
uid with no groups and no capabilities (`no_new_privs` set), Landlock restricting the
filesystem to the grants (and no TCP, no signals or abstract sockets outside), then
the allow-list seccomp filter. Each step is reported as a `Protection`, active or with
the reason it is not; nothing raises. Irreversible.

Call it from a single-threaded process (before starting threads, thread pools or an
event loop): namespaces, the uid switch and Landlock apply to the calling thread and
the threads it starts later. Load every shared library and open every file it needs
outside the grants first. The isolation worker calls it (see `harden`); any other
worker process (the gateway's) can too, adding the system calls it needs
(`Grants.syscalls`, e.g. `accept4` for a server on an inherited socket).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .identity import drop_privileges, identity_for, idmap_namespace
from .landlock import LandlockUnavailable, PathRule, restrict
from .mounts import enter_mount_namespace
from .netns import enter_private_network
from .protections import Protection
from .seccomp import SeccompUnavailable, install_filter, libseccomp_version, load_library

__all__ = ["Grants", "Confinement", "confine_current_process", "apply_landlock", "apply_seccomp",
           "DEFAULT_UID_BASE", "SYSTEM_READ"]

DEFAULT_UID_BASE = 0x7000_0000
# Read-only after Landlock, whatever the grants: the process's own /proc entry (its
# status, limits, memory size; /proc/self is resolved at restriction time, so other
# processes stay out of reach) and /dev/null. Write access: /dev/null only.
SYSTEM_READ: tuple[Path, ...] = (Path("/proc/self"),)
_SYSTEM_WRITE: tuple[Path, ...] = (Path("/dev/null"),)


@dataclass(frozen=True)
class Grants:
    """What a confined process may still use, and which steps to take.

    - `read`: paths (files or directories) readable beneath, e.g. the interpreter's
      libraries; nothing else on the filesystem is readable.
    - `dirs`: directories `(path, writable)` the process works in (WASI preopens, its
      temporary directory, a cache). When the uid switches, they are idmapped so the
      process keeps the caller's access there. Paths should be absolute and resolved.
    - `uid_base`: a root caller becomes uid/gid `uid_base + pid`; `None` stays uid 0
      (capabilities still dropped). Ignored for a non-root caller (already unprivileged).
    - `mount_root`: a directory of the caller's, itself one of `dirs`, inside which the
      other grants are mounted when the uid switches (the directories above a grant,
      e.g. /root, are closed to the new uid); `None` mounts each grant over itself.
    - `syscalls`: system calls allowed on top of `seccomp.ALLOWED_SYSCALLS`.
    - the booleans turn a step off (it is then reported as turned off).
    """

    read: tuple[Path, ...] = ()
    dirs: tuple[tuple[Path, bool], ...] = ()
    uid_base: int | None = DEFAULT_UID_BASE
    mount_root: Path | None = None
    syscalls: tuple[str, ...] = ()
    drop_privileges: bool = True
    network_namespace: bool = True
    mount_namespace: bool = True
    landlock: bool = True
    seccomp: bool = True


@dataclass
class Confinement:
    """What `confine_current_process` did: `report`, one `Protection` per step, and
    `paths`, where each granted directory is reached now (a grant missing from it is
    reached at its own path)."""

    report: list[Protection]
    paths: dict[Path, Path] = field(default_factory=dict)

    def where(self, path: Path) -> Path:
        """Where the granted directory `path` is reached now."""
        return self.paths.get(path, path)


def _off(name: str) -> Protection:
    return Protection(name, False, "turned off by configuration")


def confine_current_process(grants: Grants, before_landlock: Callable[[], list[Protection]]
                            | None = None) -> Confinement:
    """Confine this process to `grants` (see the module docstring) and report each step.

    `before_landlock` runs after the uid drop and before Landlock (e.g. rlimits); its
    protections join the report. Never raises for a step this machine cannot take: the
    report says why.
    """
    report = []
    reached: dict[Path, Path] = {}
    report.append(enter_private_network() if grants.network_namespace
                  else _off("network namespace"))
    identity = identity_for(grants.uid_base if grants.drop_privileges else None)
    if grants.mount_namespace:
        userns = None
        if identity.switches:
            try:
                userns = idmap_namespace(identity)
            except OSError as exc:
                report.append(Protection("idmap", False, f"cannot describe the uid mapping: "
                                         f"{exc}"))
        steps, reached = enter_mount_namespace(grants.dirs, userns, grants.mount_root)
        report += steps
        if userns is not None:
            os.close(userns)
    else:
        report.append(_off("mount namespace"))
    if grants.drop_privileges:
        report += drop_privileges(identity)
    else:
        report += [_off("uid"), _off("capabilities")]
    if before_landlock is not None:
        report += before_landlock()
    # libseccomp is loaded before Landlock hides the library directories (the caller
    # may install the filter later, as the isolation worker does).
    with contextlib.suppress(SeccompUnavailable):  # reported by apply_seccomp
        load_library()
    confinement = Confinement(report, reached)
    report.append(apply_landlock(grants, confinement) if grants.landlock
                  else _off("landlock"))
    if grants.seccomp:
        report.append(apply_seccomp(grants.syscalls))
    return confinement


def apply_landlock(grants: Grants, confinement: Confinement | None = None) -> Protection:
    """Restrict the filesystem to `grants` (plus `SYSTEM_READ` and /dev/null)."""
    where = confinement.where if confinement is not None else (lambda path: path)
    rules = [PathRule(path) for path in (*SYSTEM_READ, *grants.read)]
    rules += [PathRule(path, True) for path in _SYSTEM_WRITE]
    rules += [PathRule(where(path), writable) for path, writable in grants.dirs]
    try:
        abi, applied = restrict(rules)
    except LandlockUnavailable as exc:
        return Protection("landlock", False, str(exc))
    dirs = [f"{path} ({'rw' if writable else 'ro'})" for path, writable in grants.dirs]
    return Protection("landlock", True, f"ABI {abi}: files only beneath "
                      f"{len(applied)} grants ({', '.join(dirs) or 'no directories'}; the "
                      "interpreter's libraries read-only; /proc/self); no TCP; no signals "
                      "or abstract sockets outside")


def apply_seccomp(extra: tuple[str, ...] = ()) -> Protection:
    """Load the allow-list filter (all threads); report it."""
    try:
        version = libseccomp_version()
        rules = install_filter(extra=extra)
    except SeccompUnavailable as exc:
        return Protection("seccomp", False, str(exc))
    return Protection("seccomp", True, f"libseccomp {version}: allow-list of {rules} rules, "
                      "everything else EPERM; clone for threads only, ioctl and prctl by "
                      "request, signals to itself; no socket, exec, fork, mount, ptrace, "
                      "namespaces, io_uring, bpf, keyrings")
