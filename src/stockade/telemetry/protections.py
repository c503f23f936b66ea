"""Which OS protections this host offers a worker process: seccomp, cgroups, namespaces,
rlimits, Linux security modules.

`probe_protections()` only reads `/proc` and `/sys` (no namespaces or cgroups are
created), so it is safe to call anywhere; the isolation layer uses it to decide what
it can apply, `stockade doctor` to show it.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CgroupInfo", "Protections", "probe_protections"]

_NAMESPACES = ("user", "net", "pid", "mnt", "ipc", "uts", "cgroup", "time")
_RLIMITS = ("AS", "DATA", "CPU", "FSIZE", "NOFILE", "NPROC", "CORE", "MEMLOCK", "STACK")
_CAP_SYS_ADMIN = 21
_VERSION_LABEL = {"1": "v1", "2": "v2", "hybrid": "hybrid v1+v2"}


@dataclass(frozen=True)
class CgroupInfo:
    """The cgroup hierarchy this process is in. `version` is `1`, `2`, `hybrid` (v1
    controllers plus an empty v2 tree) or `none`; `controllers` are those usable for this
    process's group; `writable` is whether a child group could be created here."""

    version: str
    mount: str | None
    path: str | None
    controllers: tuple[str, ...]
    writable: bool


@dataclass(frozen=True)
class Protections:
    """What the kernel and this process allow. Limits in `rlimits` are (soft, hard), with
    `-1` for unlimited."""

    seccomp_filter: bool
    seccomp_actions: tuple[str, ...]
    seccomp_mode: int | None
    no_new_privs: bool
    cap_sys_admin: bool
    cgroup: CgroupInfo
    namespaces: dict[str, bool] = field(default_factory=dict)
    user_namespaces_unprivileged: bool = False
    rlimits: dict[str, tuple[int, int]] = field(default_factory=dict)
    lsm: tuple[str, ...] = ()

    def summary(self) -> list[tuple[str, str]]:
        """(name, description) rows for display."""
        cg = self.cgroup
        ns = ", ".join(name for name, ok in self.namespaces.items() if ok) or "none"
        mode = {0: "off", 1: "strict", 2: "filter"}.get(self.seccomp_mode or 0, "?")
        return [
            ("seccomp", f"{'filters supported' if self.seccomp_filter else 'unavailable'}"
             f" (this process: {mode}; no_new_privs={'yes' if self.no_new_privs else 'no'})"),
            ("cgroups", f"{_VERSION_LABEL.get(cg.version, cg.version)} at "
             f"{cg.mount or '-'}{cg.path or ''}; controllers: "
             f"{', '.join(cg.controllers) or 'none'}; "
             f"{'writable' if cg.writable else 'not writable'}"),
            ("namespaces", f"{ns}; unprivileged user namespaces: "
             f"{'yes' if self.user_namespaces_unprivileged else 'no'}; "
             f"CAP_SYS_ADMIN: {'yes' if self.cap_sys_admin else 'no'}"),
            ("rlimits", ", ".join(f"{k}={_limit(v[0])}/{_limit(v[1])}"
                                  for k, v in self.rlimits.items())),
            ("security modules", ", ".join(self.lsm) or "none visible"),
        ]


def _limit(value: int) -> str:
    return "inf" if value < 0 else str(value)


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return ""


def _status() -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in _read("/proc/self/status").splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _cgroup() -> CgroupInfo:
    mounts: dict[str, list[tuple[str, str]]] = {"cgroup": [], "cgroup2": []}
    for line in _read("/proc/self/mountinfo").splitlines():
        pre, _, post = line.partition(" - ")
        fstype = post.split(" ", 1)[0]
        if fstype in mounts:
            fields = pre.split()
            options = post.split()[-1] if post.split() else ""
            mounts[fstype].append((fields[4], options))
    own: dict[str, str] = {}
    for line in _read("/proc/self/cgroup").splitlines():
        _, group, path = line.split(":", 2)
        own[group] = path
    v2 = mounts["cgroup2"][0][0] if mounts["cgroup2"] else None
    v2_path = own.get("", "/")
    v2_controllers = tuple(_read(f"{v2}{v2_path}/cgroup.controllers").split()) if v2 else ()
    if v2 and not mounts["cgroup"]:
        return CgroupInfo("2", v2, v2_path, v2_controllers, os.access(f"{v2}{v2_path}", os.W_OK))
    if mounts["cgroup"]:
        version = "hybrid" if v2 else "1"
        controllers: list[str] = []
        writable = False
        mount = os.path.dirname(mounts["cgroup"][0][0])
        for point, options in mounts["cgroup"]:
            for name in options.split(","):
                if name in ("rw", "ro") or "=" in name:
                    continue
                controllers.append(name)
                if name == "memory":
                    own_path = next((p for k, p in own.items() if name in k.split(",")), "/")
                    writable = os.access(f"{point}{own_path}", os.W_OK)
        memory_path = next((p for k, p in own.items() if "memory" in k.split(",")), None)
        return CgroupInfo(version, mount, memory_path,
                          tuple(controllers + list(v2_controllers)), writable)
    return CgroupInfo("none", None, None, (), False)


def _userns_unprivileged() -> bool:
    if _read("/proc/sys/user/max_user_namespaces") in ("", "0"):
        return False
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return False
    return _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") != "1"


def probe_protections() -> Protections:
    """Probe the OS protections available to this process (reads only; about a millisecond)."""
    status = _status()
    actions = tuple(_read("/proc/sys/kernel/seccomp/actions_avail").split())
    cap_eff = int(status.get("CapEff", "0") or "0", 16)
    rlimits: dict[str, tuple[int, int]] = {}
    for name in _RLIMITS:
        code = getattr(resource, f"RLIMIT_{name}", None)
        if code is not None:
            rlimits[name] = resource.getrlimit(code)
    return Protections(
        seccomp_filter="Seccomp" in status and bool(actions),
        seccomp_actions=actions,
        seccomp_mode=int(status["Seccomp"]) if status.get("Seccomp", "").isdigit() else None,
        no_new_privs=status.get("NoNewPrivs") == "1",
        cap_sys_admin=bool(cap_eff >> _CAP_SYS_ADMIN & 1),
        cgroup=_cgroup(),
        namespaces={ns: os.path.exists(f"/proc/self/ns/{ns}") for ns in _NAMESPACES},
        user_namespaces_unprivileged=_userns_unprivileged(),
        rlimits=rlimits,
        lsm=tuple(_read("/sys/kernel/security/lsm").split(",")) if _read(
            "/sys/kernel/security/lsm") else (),
    )
