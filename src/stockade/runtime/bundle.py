"""`Bundle`: an OCI runtime bundle (`config.json` + rootfs) read as a Stockade run.

`process.args[0]` names the module inside the rootfs (`path#export` as runwasi writes it:
the export is ignored, `_start` runs); the rest are guest arguments. Limits come from the
bundle, only ever narrowing the profile's (`io.stockade.profile` annotation, default
`default`): `linux.resources.memory.limit` caps linear memory, a CPU quota below one CPU
scales the fuel budget, `RLIMIT_NOFILE` caps open files, `RLIMIT_FSIZE` the disk quota,
`io.stockade.timeout` / `io.stockade.fuel` annotations narrow time and fuel. The rootfs is
preopened read-only at `/` (not under a host trust that requires signatures: the module
is read from it, but no signature covers its other files); bind mounts of directories are
preopened at their destination, read-only unless their options say `rw`. Anything that
is not a Wasm module is refused, naming its platform.

The host's policy, when there is one (`STOCKADE_RUNTIME_POLICY`, else
`/etc/stockade/runtime.toml`), replaces the profile as the starting point (the
`io.stockade.profile` annotation is then ignored: whoever creates a container never
widens the host's limits), and its `[trust]` applies: with `require_signature`, a module
without an embedded signature by a trusted key is denied (exit 126, audit record). A
bundle carries no image digest, so image signatures cannot count here: a host policy
with `require_image_signature` is refused as a configuration error. Its
`capabilities.dirs` bound the bundle's bind mounts: a mount whose source is not inside
one of them, or that asks for `rw` inside a read-only one, is refused (exit 125), so
whoever creates a container cannot hand the guest more of the host than the host allows;
so is a rootfs outside the bundle directory that they do not cover, unless it is the
container engine's own (Podman's: `dirs.in_engine_storage`). The check is made again
when the container starts. Each directory is opened once, judged on its descriptor and
granted from it (`dirs`), and the module is run from the descriptor it was checked on: a
path swapped after the check changes nothing the guest sees or what runs.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..envblock import variable_problem
from ..errors import PolicyError
from ..hostcalls.descriptors import open_beneath
from ..oci.errors import UnsupportedBundle
from ..policy import DirGrant, Policy, apply_limit, load_policy, profile
from .dirs import HeldDirs, beneath, in_engine_storage, path_of

__all__ = ["Bundle", "read_bundle", "host_policy", "HOST_POLICY"]

HOST_POLICY = Path("/etc/stockade/runtime.toml")

_ELF_MACHINES = {3: "386", 40: "arm", 62: "amd64", 183: "arm64", 243: "riscv64", 8: "mips",
                 21: "ppc64le", 22: "s390x"}
_MAX_CONFIG = 4 * 1024**2


@dataclass(frozen=True)
class Bundle:
    """A bundle ready to run: the module file, guest arguments and the narrowed policy;
    the module and the policy's directories are opened from descriptors it holds
    (`close()` or `with`)."""

    path: Path
    module: Path
    args: tuple[str, ...]
    policy: Policy
    config: dict[str, Any]
    held: HeldDirs

    def close(self) -> None:
        """Close the descriptors the policy's directories are granted from. Safe twice."""
        self.held.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _platform_of(head: bytes) -> str:
    if head.startswith(b"\x7fELF") and len(head) >= 20:
        machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
        return f"linux/{_ELF_MACHINES.get(machine, f'machine {machine}')}"
    if head.startswith(b"#!"):
        return "a script for " + head[2:].split(b"\n", 1)[0].strip().decode("utf-8", "replace")
    return "not WebAssembly"


def _module(rootfs: DirGrant, arg0: str, held: HeldDirs) -> Path:
    """The module `process.args[0]` names, opened beneath the held rootfs (no `..`,
    absolute symlink or magic link leaves it) and held (`HeldDirs.hold_file`): the run
    reads the file found now, whatever its name leads to since (a name swapped for a
    symlink to a host module ran that module, found by review). Raises
    UnsupportedBundle when it leaves the rootfs, is missing or is no module."""
    name = arg0.split("#", 1)[0].lstrip("/")
    rootfs_fd = rootfs.held_fd()
    if rootfs_fd is None:  # `_grants` holds it; a plain path would be judged by name
        raise UnsupportedBundle(f"{rootfs.host}: the rootfs is not held open")
    try:
        fd = open_beneath(rootfs_fd, os.fsencode(name), directory=False)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise UnsupportedBundle(f"process.args[0] {arg0!r} leaves the rootfs") from None
        raise UnsupportedBundle(f"{arg0}: {exc.strerror} in the bundle's rootfs") from None
    try:
        head = b""
        if stat.S_ISREG(os.fstat(fd).st_mode):
            with open(f"/proc/self/fd/{fd}", "rb") as handle:
                head = handle.read(64)
    except BaseException:
        os.close(fd)
        raise
    if not head.startswith(b"\0asm"):
        os.close(fd)
        raise UnsupportedBundle(
            f"{arg0} is {_platform_of(head)}: stockade-runtime runs only wasi/wasm images "
            "(use runc or crun for this one)")
    return held.hold_file(fd, name.rsplit("/", 1)[-1])


def _narrow(policy: Policy, key: str, value: Any, label: str) -> Policy:
    narrowed = apply_limit(policy, key, value, label)
    old, new = getattr(policy.limits, key), getattr(narrowed.limits, key)
    if old is not None and (new is None or new > old):
        return policy
    return narrowed


def read_bundle(path: Path, links_in: Path | None = None) -> Bundle:
    """Read and check the bundle at `path`. Raises UnsupportedBundle (one line, naming what
    is wrong or the platform the bundle is for), PolicyError for a bad annotation. The
    module is held through a link made in `links_in` (a directory of this process's own,
    removed with it; default: a temporary directory removed by `close()`)."""
    # The bundle is opened once: config.json, the rootfs it names and the check that a
    # directory lies inside the bundle all go through that descriptor, so a bundle path
    # swapped (for a symlink to an ancestor) after config.json is read changes nothing.
    held = HeldDirs(links_in)
    try:
        try:
            bundle_fd = held.open(path)
        except OSError as exc:
            raise UnsupportedBundle(f"{path}: {exc.strerror}") from None
        try:
            return _read(path, bundle_fd, held)
        except (RecursionError, UnicodeError, ValueError, TypeError, AttributeError,
                OverflowError) as exc:
            # What a hostile config.json's values raise past the checks (JSON nested
            # 200,000 deep, a lone surrogate or NUL in a path, annotations that are a
            # list, a CPU quota of 10^400): one line, not a traceback (found by review).
            raise UnsupportedBundle(f"{path}/config.json: unusable "
                                    f"({type(exc).__name__}: {str(exc)[:200]})") from None
    except BaseException:
        held.close()
        raise


def _read(path: Path, bundle_fd: int, held: HeldDirs) -> Bundle:
    try:
        # Not a FIFO nor a device, which held `create` for ever (found by review).
        config_fd = os.open("config.json", os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW
                            | os.O_CLOEXEC, dir_fd=bundle_fd)
        with os.fdopen(config_fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(config_fd).st_mode):
                raise UnsupportedBundle(f"{path}/config.json: not a regular file")
            raw = handle.read(_MAX_CONFIG + 1)
        if len(raw) > _MAX_CONFIG:
            raise UnsupportedBundle(f"{path}/config.json: larger than "
                                    f"{_MAX_CONFIG // 1024**2} MiB")
        config = json.loads(raw)
    except OSError as exc:
        raise UnsupportedBundle(f"{path}/config.json: {exc.strerror}") from None
    except ValueError as exc:
        raise UnsupportedBundle(f"{path}/config.json: not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise UnsupportedBundle(f"{path}/config.json: not a JSON object")
    where = f"{path}/config.json"
    process = _table(config, "process", where)
    args = [str(a) for a in _list(process, "args", f"{where}: process")]
    if not args:
        raise UnsupportedBundle(f"{path}/config.json: process.args is empty")
    root = str(_table(config, "root", where).get("path") or "rootfs")
    annotations = config.get("annotations") or {}
    host = host_policy()
    policy = host or profile(str(annotations.get("io.stockade.profile", "default")))
    policy = _limits(policy, config, annotations)
    env = []
    for index, item in enumerate(_list(process, "env", f"{where}: process")):
        # As runc: an entry that is no KEY=VALUE string is refused, not dropped.
        if not isinstance(item, str):
            raise UnsupportedBundle(f"{where}: process.env[{index}] is not a string "
                                    f"({_shown(item)})")
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UnsupportedBundle(f"{where}: process.env[{index}] {item[:40]!r}: "
                                    "expected KEY=VALUE")
        # Refused here, at `create`, not when the guest starts (found by review).
        problem = variable_problem(key, value)
        if problem:
            raise UnsupportedBundle(f"{where}: process.env {key[:40]!r}: {problem}")
        (key + value).encode()  # a lone surrogate: UnicodeError, one line too
        env.append((key, value))
    cwd = process.get("cwd")
    if isinstance(cwd, str) and cwd and not any(k == "PWD" for k, _ in env):
        env.append(("PWD", cwd))
    grants = _grants(path, root, config, host, held, bundle_fd)
    module = _module(grants[0], args[0], held)
    if host is not None and host.trust.require_signature:
        # The module comes from the rootfs, but its other files are not the guest's: no
        # signature covers them, and a signed interpreter loads code from them (an empty
        # `/pyvenv.cfg` made python.wasm run the image's `.pth` files; found by review).
        grants = grants[1:]
    policy = policy.with_capabilities(dirs=tuple(grants), env=tuple(env), env_allow=())
    return Bundle(path, module, tuple(args[1:]), policy, config, held)


def _grants(path: Path, root: str, config: dict[str, Any], host: Policy | None,
            held: HeldDirs, bundle_fd: int) -> list[DirGrant]:
    """The rootfs (`root`, relative to the bundle held as `bundle_fd`, or absolute) and
    the bind mounts as grants of descriptors `held` opens, each judged on its descriptor
    against the host policy (`dirs.beneath`)."""
    where = f"{path}/config.json"
    try:
        rootfs_fd = held.open(Path(f"/proc/self/fd/{bundle_fd}") / root)
    except OSError as exc:
        raise UnsupportedBundle(f"{path / root}: {exc.strerror}") from None
    allowed = _allowed(host, held) if host is not None else []
    if host is not None and not beneath(rootfs_fd, bundle_fd) \
            and not in_engine_storage(bundle_fd, rootfs_fd, held):
        # Whoever creates the container names the rootfs too: outside the bundle and
        # the engine's own storage (Podman's), only where the host policy's dirs reach.
        _within_host(rootfs_fd, "/", False, allowed, "rootfs")
    # Granted from the descriptors; shown as the bundle names them.
    grants = [DirGrant.held(rootfs_fd, "/", source=path / root)]
    for index, mount in enumerate(_list(config, "mounts", where)):
        if not isinstance(mount, dict):
            raise UnsupportedBundle(f"{where}: mounts[{index}] is not an object")
        options = [str(o) for o in _list(mount, "options", f"{where}: mounts[{index}]")]
        if not (mount.get("type") == "bind" or "bind" in options or "rbind" in options):
            continue
        raw_source, guest = mount.get("source"), mount.get("destination")
        if not isinstance(raw_source, str) or not raw_source:  # Path("") is the cwd
            raise UnsupportedBundle(f"{where}: mounts[{index}] is a bind mount without a "
                                    "source")
        if not isinstance(guest, str) or not guest.startswith("/"):
            raise UnsupportedBundle(f"{where}: mounts[{index}] destination must be an "
                                    "absolute path")
        source = Path(raw_source)
        try:
            fd = held.open(source)
        except OSError as exc:
            if exc.errno == errno.ENOTDIR and _names_no_directory(source):
                continue  # a file or a device (Podman's /etc/hosts): nothing granted
            # As runc: the guest would miss what it asked for (missing, a loop of
            # links, a path through a file, unreadable).
            raise UnsupportedBundle(f"{where}: mounts[{index}] source {str(source)[:200]!r} "
                                    f"-> {guest[:60]}: {os.strerror(exc.errno or 0)}") from None
        if host is not None and host.trust.require_signature \
                and (beneath(fd, rootfs_fd) or beneath(rootfs_fd, fd)):
            # The rootfs is not the guest's under such a host (see `_read`): mounted
            # back, or within a mount of its parent, it would be (found by review).
            raise UnsupportedBundle(f"{where}: mounts[{index}] source {str(source)[:200]!r} "
                                    f"-> {guest[:60]}: shows the rootfs, which no "
                                    "signature covers")
        # As mount(8): the last of ro/rw wins; read-only unless one says rw.
        modes = [o for o in options if o in ("ro", "rw")]
        writable = bool(modes) and modes[-1] == "rw"
        # A read-only mount of the bundle's own files (Podman's `userdata/shm`) shows
        # no more of the host than the bundle itself; anything else is the policy's.
        if host is not None and (writable or not beneath(fd, bundle_fd)):
            _within_host(fd, guest, writable, allowed, "bind mount")
        grants.append(DirGrant.held(fd, guest, writable, source=source))
    return grants


def _names_no_directory(source: Path) -> bool:
    """Whether `source` leads to something that is there and is no directory."""
    try:
        return not stat.S_ISDIR(os.stat(source).st_mode)
    except OSError:
        return False


def _allowed(host: Policy, held: HeldDirs) -> list[tuple[DirGrant, int]]:
    """The host policy's dirs that exist, each with a descriptor `held` opens."""
    allowed = []
    for grant in host.capabilities.dirs:
        try:
            allowed.append((grant, held.open(grant.host)))
        except OSError:
            continue  # a dir the host does not have covers nothing
    return allowed


def _within_host(fd: int, guest: str, writable: bool, allowed: list[tuple[DirGrant, int]],
                 what: str) -> None:
    """Refuse a bind mount (or rootfs), held as `fd`, that the host policy's
    `capabilities.dirs` (`allowed`, held) do not cover, or cover only read-only when
    it asks for rw."""
    covering = [grant for grant, root_fd in allowed if beneath(fd, root_fd)]
    shown = f"{what} {path_of(fd)} -> {guest}"
    if not covering:
        dirs = ", ".join(str(grant.host) for grant, _ in allowed) or "none"
        raise PolicyError(f"{shown} ({'rw' if writable else 'ro'}): outside the host "
                          f"policy's capabilities.dirs ({dirs})")
    if writable and not any(grant.writable for grant in covering):
        raise PolicyError(f"{shown} (rw): the host policy grants it read-only")


def host_policy() -> Policy | None:
    """The host's runtime policy (`STOCKADE_RUNTIME_POLICY`, else `HOST_POLICY` when it
    exists), or None. Raises PolicyError for a bad file, or one that requires image
    signatures (a bundle has no image to check)."""
    import os

    named = os.environ.get("STOCKADE_RUNTIME_POLICY")
    path = Path(named) if named else HOST_POLICY
    if not named and not path.exists():
        return None
    policy = load_policy(path)
    if policy.trust.require_image_signature:
        raise PolicyError(f"{path}: trust.require_image_signature: stockade-runtime sees a "
                          "bundle, not an image digest; use require_signature with module "
                          "(Ed25519) keys, and verify images before they are pulled")
    return policy


def _table(parent: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """`parent[key]` when it is a JSON object ({} when absent or null); UnsupportedBundle
    else (0, false, [] or "" included: no object that asks for nothing)."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UnsupportedBundle(f"{where}: {key} is not an object")
    return value


def _list(parent: dict[str, Any], key: str, where: str) -> list[Any]:
    """`parent[key]` when it is a JSON array ([] when absent or null); UnsupportedBundle
    else."""
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise UnsupportedBundle(f"{where}: {key} is not an array")
    return value


def _limits(policy: Policy, config: dict[str, Any], annotations: dict[str, Any]) -> Policy:
    """`policy` narrowed by the bundle's resources, rlimits and annotations. A value of
    the wrong type or range is refused (UnsupportedBundle), as runc refuses it at
    `create`: skipped, the guest ran without the limit the bundle asked for."""
    where = "config.json"
    resources = _table(_table(config, "linux", where), "resources", f"{where}: linux")
    memory = _integer(_table(resources, "memory", f"{where}: linux.resources"), "limit",
                      f"{where}: linux.resources.memory", minimum=-1)
    if memory is not None and memory > 0:  # -1 is unlimited and 0 unset: the profile's
        policy = _narrow(policy, "max_memory", memory, "linux.resources.memory.limit")
    cpu = _table(resources, "cpu", f"{where}: linux.resources")
    quota = _integer(cpu, "quota", f"{where}: linux.resources.cpu", minimum=-1)
    period = _integer(cpu, "period", f"{where}: linux.resources.cpu", minimum=0) or 100_000
    if quota is not None and quota > 0:
        share = min(1.0, quota / period)
        if policy.limits.fuel is not None:
            policy = policy.with_limits(fuel=max(1, int(policy.limits.fuel * share)))
    rlimits = _list(_table(config, "process", where), "rlimits", f"{where}: process")
    for index, rlimit in enumerate(rlimits):
        at = f"{where}: process.rlimits[{index}]"
        if not isinstance(rlimit, dict):
            raise UnsupportedBundle(f"{at} is not an object")
        kind = rlimit.get("type")
        if kind not in _RLIMITS:
            raise UnsupportedBundle(f"{at}.type: not an rlimit ({_shown(kind)})")
        soft, hard = (_integer(rlimit, bound, at, minimum=0) for bound in ("soft", "hard"))
        if soft is None or hard is None:
            raise UnsupportedBundle(f"{at}: needs both soft and hard")
        if soft > hard:
            raise UnsupportedBundle(f"{at}: soft {soft} is above hard {hard}")
        if kind == "RLIMIT_NOFILE":
            policy = _narrow(policy, "max_open_files", soft, "process.rlimits RLIMIT_NOFILE")
        elif kind == "RLIMIT_FSIZE":
            policy = _narrow(policy, "disk_quota", soft, "process.rlimits RLIMIT_FSIZE")
    for key in ("timeout", "fuel"):
        value = annotations.get(f"io.stockade.{key}")
        if value is not None:
            policy = _narrow(policy, key, value, f"annotation io.stockade.{key}")
    return policy


_RLIMITS = frozenset(f"RLIMIT_{name}" for name in (
    "AS", "CORE", "CPU", "DATA", "FSIZE", "LOCKS", "MEMLOCK", "MSGQUEUE", "NICE", "NOFILE",
    "NPROC", "RSS", "RTPRIO", "RTTIME", "SIGPENDING", "STACK"))


def _integer(parent: dict[str, Any], key: str, where: str, minimum: int) -> int | None:
    """`parent[key]` when it is a JSON integer of at least `minimum`, None when absent;
    UnsupportedBundle else. A string or a float is no integer, as in Go's decoding of
    the spec (runc refuses it)."""
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UnsupportedBundle(f"{where}.{key}: expected an integer of at least "
                                f"{minimum}, not {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """`value` as JSON, cut short, for a one-line message."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."
