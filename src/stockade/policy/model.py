"""The policy data model: `Limits` (how much) and `Capabilities` (what), combined in `Policy`."""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import asdict, field, replace
from pathlib import Path

from ..records import FrozenRecord, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Literal

__all__ = ["Limits", "DirGrant", "Capabilities", "Trust", "Policy", "SyncMode",
           "scratch_problem", "guest_path"]

if TYPE_CHECKING:
    SyncMode = Literal["ignore", "allow"] | str  # or "limit:N"
else:
    SyncMode = str

_HELD = r"^/proc/(?:[0-9]+|self)/fd/([0-9]+)\Z"  # `DirGrant.held`, compiled on first use


@record(frozen=True, init=False, repr=False, eq=False)
class Limits(FrozenRecord):
    """Resource limits of one invocation. `None` means unlimited.

    Sizes are bytes, `timeout` is seconds. `fuel` is an instruction budget: metering
    it costs compute speed (each function and loop counts), so the default leaves it
    unset and stops runaway guests by `timeout` (epoch interruption); strict sets one
    for determinism. Disk and file quotas apply to writable
    preopened directories; `max_open_files` caps descriptors the guest holds at once.
    `max_module_size`, `max_function_size` and `max_locals` bound what is compiled (the
    cost of compiling comes before any fuel or deadline applies).
    `max_hostcalls` caps all owned WASI calls of a run, `hostcall_caps` single kinds
    (e.g. `(("random_get", 1000),)`); `sync` is `ignore`, `allow` or `limit:N`.
    `wasm_gc` allows the Wasm GC and exception-handling proposals; their objects live in a
    GC heap, which shares `max_memory` with linear memory (`memory_cap`).

    Values are checked when built and human units accepted: `Limits(timeout="2s",
    max_memory="32MiB", fuel=1e9)`. A wrong type, a negative value or a memory limit below
    one 64KiB page raises PolicyError naming the parameter.
    """

    fuel: int | None = None
    timeout: float | None = 60.0
    max_memory: int = 128 * 1024**2
    max_table_elements: int = 100_000
    max_tables: int = 16
    max_instances: int = 16
    max_memories: int = 1
    max_stack: int = 1024 * 1024
    max_output: int = 16 * 1024**2
    disk_quota: int = 64 * 1024**2
    max_files: int = 1_000
    max_open_files: int = 256
    max_module_size: int = 128 * 1024**2
    max_function_size: int = 512 * 1024
    max_locals: int = 2_000
    max_hostcalls: int | None = 10_000_000
    hostcall_caps: tuple[tuple[str, int], ...] = ()
    sync: SyncMode = "ignore"
    wasm_gc: bool = False

    def __init__(self, fuel: int | None = None, timeout: float | None = 60.0,
                 max_memory: int = 128 * 1024**2, max_table_elements: int = 100_000,
                 max_tables: int = 16, max_instances: int = 16, max_memories: int = 1,
                 max_stack: int = 1024 * 1024, max_output: int = 16 * 1024**2,
                 disk_quota: int = 64 * 1024**2, max_files: int = 1_000,
                 max_open_files: int = 256, max_module_size: int = 128 * 1024**2,
                 max_function_size: int = 512 * 1024, max_locals: int = 2_000,
                 max_hostcalls: int | None = 10_000_000,
                 hostcall_caps: tuple[tuple[str, int], ...] = (),
                 sync: SyncMode = "ignore", wasm_gc: bool = False) -> None:
        from ..errors import PolicyError
        from .values import LIMIT_PARSERS

        given = locals()
        for name in self.__dataclass_fields__:
            try:
                value = LIMIT_PARSERS[name](given[name])
            except (ValueError, TypeError) as exc:
                raise PolicyError(f"{name}: {exc}") from None
            object.__setattr__(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        """The contract's `limits` object: sizes in bytes, times in milliseconds."""
        data = asdict(self)
        data["hostcall_caps"] = dict(self.hostcall_caps)
        timeout = data.pop("timeout")
        data["timeout_ms"] = None if timeout is None else round(timeout * 1000)
        for key in ("max_memory", "max_output", "max_stack", "max_module_size",
                    "max_function_size"):
            data[f"{key}_bytes"] = data.pop(key)
        data["disk_quota_bytes"] = data.pop("disk_quota")
        return data

    def memory_cap(self, gc_engine: bool) -> int:
        """The size wasmtime caps each memory at: `max_memory`, or half of it when the
        policy or the engine running it (`gc_engine`: `EngineConfig.gc`, which an API
        caller may choose apart from the policy) allows a GC heap. wasmtime caps a GC
        heap as a memory of its own, not within linear memory's limit: capping each at
        half keeps the two together within `max_memory` (a guest under a 256 MiB limit
        held 237 MiB of linear memory and 120 MiB of GC arrays)."""
        return self.max_memory // 2 if self.wasm_gc or gc_engine else self.max_memory

    @property
    def store_limits(self) -> tuple[int, int, int, int]:
        """What a store is limited to besides memory: table elements, instances, tables
        and memories (the engines' `StoreLimits`)."""
        return self.max_table_elements, self.max_instances, self.max_tables, self.max_memories

    def sync_limit(self) -> int | None:
        """How many real `fd_sync`/`fd_datasync` calls are allowed (None: unlimited, 0: none
        reach the disk)."""
        if self.sync == "allow":
            return None
        if self.sync == "ignore":
            return 0
        return int(str(self.sync).split(":", 1)[1])


@record(frozen=True, init=False, repr=False, eq=False)
class DirGrant(FrozenRecord):
    """A host directory preopened for the guest at `guest`, read-only unless `writable`.
    `source` is the path it was granted as when `host` names a held descriptor (`held`):
    what reports show (`shown`), never what is opened."""

    host: Path
    guest: str
    writable: bool = False
    source: Path | None = None

    def __init__(self, host: Path, guest: str, writable: bool = False,
                 source: Path | None = None) -> None:
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "guest", guest)
        object.__setattr__(self, "writable", writable)
        object.__setattr__(self, "source", source)

    @classmethod
    def parse(cls, spec: str) -> DirGrant:
        """Parse `HOST[:GUEST][:ro|:rw]`, or wasmtime's `HOST::GUEST` (optionally
        followed by `:ro|:rw`). Raises ValueError."""
        if "::" in spec:
            host_text, _, rest = spec.partition("::")
            parts = rest.split(":")
            mode = parts.pop() if len(parts) > 1 and parts[-1] in ("ro", "rw") else "ro"
            if not host_text or len(parts) != 1 or not parts[0]:
                raise ValueError(f"not a directory grant: {spec!r} (use HOST::GUEST or "
                                 "HOST[:GUEST][:ro|:rw])")
            return cls(host=Path(host_text), guest=parts[0], writable=mode == "rw")
        parts = spec.split(":")
        writable = False
        if len(parts) > 1 and parts[-1] in ("ro", "rw"):
            writable = parts.pop() == "rw"
        if not parts[0] or len(parts) > 2:
            raise ValueError(f"not a directory grant: {spec!r} (use HOST[:GUEST][:ro|:rw])")
        host = Path(parts[0])
        guest = parts[1] if len(parts) == 2 and parts[1] else parts[0]
        return cls(host=host, guest=guest, writable=writable)

    @classmethod
    def held(cls, fd: int, guest: str, writable: bool = False,
             source: Path | None = None) -> DirGrant:
        """A grant of the directory this process holds open as `fd` (`/proc/PID/fd/N`):
        opened from that descriptor, whatever its path leads to since; `source` is the
        path it was granted as, for reports. The descriptor must stay open until the run
        is over; it is the caller's to close."""
        return cls(Path(f"/proc/{os.getpid()}/fd/{fd}"), guest, writable, source)

    @property
    def shown(self) -> Path:
        """The host directory as reports, telemetry and messages show it: the path it
        was granted as (`source`), else `host`."""
        return self.host if self.source is None else self.source

    def held_fd(self) -> int | None:
        """The descriptor number when this grant is one this process holds (`held`)."""
        found = re.match(_HELD, str(self.host))
        if found is None or not str(self.host).startswith(f"/proc/{os.getpid()}/"):
            return None
        return int(found.group(1))

    def real_host(self) -> Path:
        """The host directory with every symlink resolved; a held descriptor (`held`)
        is kept as it is, so the directory is opened from the descriptor a decision
        was made on, never from the path it had then."""
        if re.match(_HELD, str(self.host)):
            return self.host
        return self.host.resolve()

    def __str__(self) -> str:
        return f"{self.shown}:{self.guest}:{'rw' if self.writable else 'ro'}"


def guest_path(path: str) -> str:
    """`path` as the guest's libc reads it: `//x`, `x`, `./x` and `/y/../x` are `/x`.
    Two directories at one guest path are one preopen hiding the other."""
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def scratch_problem(scratch: object) -> str | None:
    """Why `scratch` cannot be a scratch directory's guest path, or None: the one rule
    for `capabilities.scratch` and `--scratch` (the flag once took a relative path)."""
    if scratch is None:
        return None
    if not isinstance(scratch, str) or not scratch.startswith("/") or "\0" in scratch:
        return "expected an absolute guest path such as /scratch"
    return None


def _grants(dirs: Any) -> tuple[DirGrant, ...]:
    """`dirs` as directory grants: PolicyError for anything else (a path string)."""
    from ..errors import PolicyError

    grants = tuple(dirs) if isinstance(dirs, tuple | list) else None  # read once
    if grants is None or not all(isinstance(grant, DirGrant) for grant in grants):
        raise PolicyError("capabilities.dirs: expected directory grants (DirGrant.parse("
                          "'HOST[:GUEST][:ro|:rw]'))")
    return grants


def _names(names: Any) -> tuple[str, ...]:
    """`env_allow` as checked variable names: PolicyError for a string (not split)."""
    from ..envblock import variable_problem
    from ..errors import PolicyError

    if not isinstance(names, tuple | list):
        raise PolicyError("capabilities.env_allow: expected a list of variable names, not "
                          f"{type(names).__name__}")
    # Read once, as plain copies, and those checked: a subclass may answer otherwise.
    kept = tuple(str.__str__(name) if isinstance(name, str) else name for name in names)
    for name in kept:
        if variable_problem(name, "") is not None:
            raise PolicyError(f"capabilities.env_allow: {str(name)[:40]!r} is not a "
                              "variable name")
    return kept


@record(frozen=True, init=False, repr=False, eq=False)
class Capabilities(FrozenRecord):
    """What the guest may touch: preopened directories and environment variables.

    `env` is set as given; `env_allow` names host variables passed through (nothing else is).
    `scratch` names a guest path where each run gets a fresh writable directory, removed
    after the run unless `keep_scratch`. `allow_precompiled` accepts a `.cwasm` (native
    code) as the module, and then only one this host's key authenticates.
    """

    dirs: tuple[DirGrant, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    env_allow: tuple[str, ...] = ()
    scratch: str | None = None
    keep_scratch: bool = False
    allow_precompiled: bool = False

    def __init__(self, dirs: tuple[DirGrant, ...] = (), env: tuple[tuple[str, str], ...] = (),
                 env_allow: tuple[str, ...] = (), scratch: str | None = None,
                 keep_scratch: bool = False, allow_precompiled: bool = False) -> None:
        from ..errors import PolicyError

        problem = scratch_problem(scratch)
        if problem is not None:
            from .units import shown

            raise PolicyError(f"scratch (--scratch, capabilities.scratch): {problem}, "
                              f"not {shown(scratch)}")
        # Checked as the policy file's loader checks them: "false" turned native code on,
        # and a string of names was read one letter a name (host variables P, A, T, H).
        for label, flag in (("allow_precompiled", allow_precompiled),
                            ("keep_scratch", keep_scratch)):
            if not isinstance(flag, bool):
                raise PolicyError(f"capabilities.{label}: expected true or false, not "
                                  f"{type(flag).__name__}")
        from ..envblock import checked_env

        dirs, env_allow = _grants(dirs), _names(env_allow)
        env = checked_env(env, "capabilities.env", PolicyError)
        seen: dict[str, DirGrant] = {}
        for grant in dirs:  # two preopens at one guest path: which one the guest sees is luck
            where = guest_path(grant.guest) if isinstance(grant, DirGrant) else None
            if where is not None and where in seen:
                from ..errors import PolicyError

                raise PolicyError(f"two directory grants at guest path {where}: "
                                  f"{seen[where]} and {grant}")
            if where is not None:
                seen[where] = grant
        # The scratch directory is preopened last, where it would hide a grant (review).
        shadowed = None if scratch is None else seen.get(guest_path(scratch))
        if shadowed is not None:
            raise PolicyError(f"the scratch directory's guest path {scratch} is also "
                              f"granted: {shadowed}")
        put = object.__setattr__
        put(self, "dirs", dirs)
        put(self, "env", env)
        put(self, "env_allow", env_allow)
        put(self, "scratch", scratch)
        put(self, "keep_scratch", keep_scratch)
        put(self, "allow_precompiled", allow_precompiled)


@record(frozen=True, init=False, repr=False, eq=False)
class Trust(FrozenRecord):
    """Which modules may run at all: with `require_signature`, only modules an embedded
    signature by one of `keys` (public key files or directories of them) covers whole,
    or, for `oci://` modules, whose image a cosign key among `keys` signed (`vouched`:
    the sha256 hex digests of module bytes such a verified image signature covers).
    `require_image_signature` counts image signatures only (and implies
    `require_signature`). Trust only refuses: a signature never widens limits or
    capabilities."""

    require_signature: bool = False
    keys: tuple[Path, ...] = ()
    require_image_signature: bool = False
    vouched: tuple[str, ...] = ()

    def __init__(self, require_signature: bool = False, keys: tuple[Path, ...] = (),
                 require_image_signature: bool = False, vouched: tuple[str, ...] = ()) -> None:
        put = object.__setattr__
        put(self, "require_signature", require_signature)
        put(self, "keys", keys)
        put(self, "require_image_signature", require_image_signature)
        put(self, "vouched", vouched)


@record(frozen=True, init=False, repr=False, eq=False)
class Policy(FrozenRecord):
    """Limits, capabilities and trust; the profile name it started from is kept for reports."""

    limits: Limits = field(default_factory=Limits)
    capabilities: Capabilities = field(default_factory=Capabilities)
    profile: str = "default"
    trust: Trust = field(default_factory=Trust)

    def __init__(self, limits: Limits | None = None, capabilities: Capabilities | None = None,
                 profile: str = "default", trust: Trust | None = None) -> None:
        put = object.__setattr__
        put(self, "limits", Limits() if limits is None else limits)
        put(self, "capabilities", Capabilities() if capabilities is None else capabilities)
        put(self, "profile", profile)
        put(self, "trust", Trust() if trust is None else trust)

    def with_limits(self, **changes: Any) -> Policy:
        """A copy with some limits changed, e.g. `policy.with_limits(timeout="2s")`.
        Raises PolicyError for an unknown limit or a bad value, naming it."""
        from ..errors import PolicyError
        from .values import LIMIT_PARSERS, suggest

        for key in changes:
            if key not in LIMIT_PARSERS:
                raise PolicyError(f"{key}: unknown limit{suggest(key, LIMIT_PARSERS)}")
        return replace(self, limits=replace(self.limits, **changes))

    def with_capabilities(self, **changes: Any) -> Policy:
        """A copy with some capabilities changed."""
        return replace(self, capabilities=replace(self.capabilities, **changes))

    @classmethod
    def from_profile(cls, name: str) -> Policy:
        """The policy of a named profile (`strict`, `default`, `permissive`). Raises PolicyError."""
        from .profiles import profile

        return profile(name)
