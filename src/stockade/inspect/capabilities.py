"""What a module's imports ask of the host, grouped by capability.

The decision whether an import is provided is the sandbox's own (`import_refusal`), so
`inspect` names exactly what `stockade run` would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..binary import Import
from ..sandbox.imports import import_refusal

__all__ = ["CAPABILITIES", "Capabilities", "group_imports", "capability_of"]

# Capability of each WASI preview 1 function (descriptor calls on stdio are "stdio").
_GROUPS = {
    "args/env": "args_get args_sizes_get environ_get environ_sizes_get",
    "clocks": "clock_res_get clock_time_get poll_oneoff sched_yield",
    "random": "random_get",
    "process exit": "proc_exit proc_raise",
    "sockets": "sock_accept sock_recv sock_send sock_shutdown",
    "stdio": "fd_read fd_write fd_close fd_seek fd_tell fd_fdstat_get fd_fdstat_set_flags "
             "fd_fdstat_set_rights fd_renumber",
    "filesystem": "fd_prestat_get fd_prestat_dir_name fd_readdir fd_filestat_get "
                  "fd_filestat_set_size fd_filestat_set_times fd_allocate fd_advise "
                  "fd_datasync fd_sync fd_pread fd_pwrite path_create_directory "
                  "path_filestat_get path_filestat_set_times path_link path_open "
                  "path_readlink path_remove_directory path_rename path_symlink "
                  "path_unlink_file",
}
_CAPABILITY = {name: group for group, names in _GROUPS.items() for name in names.split()}
CAPABILITIES = (*_GROUPS, "denied")


def capability_of(item: Import) -> str:
    """The capability group of one provided import."""
    return _CAPABILITY.get(item.name, "other")


@dataclass
class Capabilities:
    """Imports by capability (`module.name` lists) and the refused ones with reasons."""

    groups: dict[str, list[str]] = field(default_factory=dict)
    denied: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0

    def uses(self, capability: str) -> bool:
        """True when the module imports anything of `capability`."""
        return bool(self.groups.get(capability))

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return {"total": self.total, "by_capability": self.groups,
                "denied": [{"import": name, "reason": why} for name, why in self.denied]}


def group_imports(imports: list[Import]) -> Capabilities:
    """Group `imports` by capability; refused ones go to `denied` with the reason."""
    caps = Capabilities(total=len(imports))
    cache: dict[tuple[str, str, bool], str | None] = {}
    for item in imports:
        key = (item.module, item.name, item.kind == "func")
        if key not in cache:
            cache[key] = import_refusal(*key)
        reason = cache[key]
        if reason is not None:
            caps.denied.append((item.qualified, reason))
            caps.groups.setdefault("denied", []).append(item.qualified)
        else:
            caps.groups.setdefault(capability_of(item), []).append(item.qualified)
    return caps
