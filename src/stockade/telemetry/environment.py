"""Where Stockade itself runs: bare metal, a VM (which hypervisor), a container, or Wasm.

Detection only reads files (DMI, `/sys/hypervisor`, clock sources, `/proc/cpuinfo`,
cgroups, marker files) and environment variables, so it is cheap and needs no
privileges. `root` lets tests point it at a prepared directory tree.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from ..records import FieldTuple

__all__ = ["Environment", "detect_environment", "cached_environment"]

# DMI vendor/product substrings -> (hypervisor, cloud provider)
_DMI_SIGNS: tuple[tuple[str, str | None, str | None], ...] = (
    ("amazon ec2", "kvm", "aws"),
    ("google", "kvm", "gcp"),
    ("alibaba cloud", "kvm", "alibaba_cloud"),
    ("digitalocean", "kvm", "digitalocean"),
    ("hetzner", "kvm", "hetzner"),
    ("openstack", "kvm", "openstack"),
    ("vmware", "vmware", None),
    ("virtualbox", "virtualbox", None),
    ("innotek", "virtualbox", None),
    ("parallels", "parallels", None),
    ("bochs", "bochs", None),
    ("bhyve", "bhyve", None),
    ("xen", "xen", None),
    ("kvm", "kvm", None),
    ("qemu", "qemu", None),
    ("firecracker", "firecracker", None),
    ("cloud hypervisor", "cloud-hypervisor", None),
)
_AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
_CLOCKSOURCES = {"kvm-clock": "kvm", "xen": "xen", "hyperv_clocksource_tsc_page": "hyperv"}
# cgroup path fragments -> container runtime, most specific first
_CGROUP_SIGNS = (
    ("kubepods", "kubernetes"),
    ("libpod", "podman"),
    ("crio", "cri-o"),
    ("docker", "docker"),
    ("containerd", "containerd"),
    ("lxc", "lxc"),
)
_CLOUD_ENV = (
    ("AWS_EXECUTION_ENV", "aws"),
    ("ECS_CONTAINER_METADATA_URI_V4", "aws"),
    ("K_SERVICE", "gcp"),
    ("GOOGLE_CLOUD_PROJECT", "gcp"),
    ("WEBSITE_SITE_NAME", "azure"),
    ("FLY_APP_NAME", "fly_io"),
)
_CONTAINER_ID = r"([0-9a-f]{64})"  # compiled on first use
_CACHE_BYTES = 64 * 1024  # an environment.json is well under 1 KiB
_ISOLATION = {
    "vm": "hardware", "container": "container", "bare-metal": "process", "wasm": "sandbox",
}


class Environment(FieldTuple):
    """What was detected. `virtualization` is the innermost layer (`bare-metal`, `vm`,
    `container`, `wasm`); `hypervisor` is set when a VM lies underneath, even below a
    container; `evidence` lists what was seen, for `stockade doctor`."""

    virtualization: str
    hypervisor: str | None
    container_runtime: str | None
    container_id: str | None
    cloud_provider: str | None
    cpu_count: int
    memory_bytes: int | None
    evidence: tuple[str, ...]

    @property
    def isolation_level(self) -> str:
        """The strongest boundary around this host: `hardware` under a hypervisor, else
        `container`, `process` on bare metal, `sandbox` inside Wasm."""
        if self.hypervisor is not None and self.virtualization != "wasm":
            return "hardware"
        return _ISOLATION[self.virtualization]

    def resource_attributes(self) -> dict[str, str | int]:
        """OTel resource attributes: `virtualization.type`, `isolation.level`,
        `hypervisor.type`, `host.*`, `os.*`, `container.*`, `cloud.provider` when known."""
        uname = os.uname()  # not `platform`: a millisecond of start-up for the same data
        attrs: dict[str, str | int] = {
            "virtualization.type": self.virtualization,
            "isolation.level": self.isolation_level,
            "hypervisor.type": self.hypervisor or "none",
            "host.name": uname.nodename,
            "host.arch": _ARCH.get(uname.machine, uname.machine.lower()),
            "host.cpu.count": self.cpu_count,
            "os.type": sys.platform.rstrip("0123456789"),
            "os.description": f"{uname.sysname} {uname.release}",
            "os.version": uname.release,
        }
        if self.memory_bytes is not None:
            attrs["host.memory.bytes"] = self.memory_bytes
        if self.container_runtime:
            attrs["container.runtime"] = self.container_runtime
        if self.container_id:
            attrs["container.id"] = self.container_id
        if self.cloud_provider:
            attrs["cloud.provider"] = self.cloud_provider
        return attrs


_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i686": "x86", "ppc64le": "ppc64"}


def _read(root: Path, path: str, limit: int = 65536) -> str:
    try:
        with open(root / path.lstrip("/"), "rb") as file:
            return file.read(limit).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _hypervisor(root: Path, evidence: list[str]) -> tuple[str | None, str | None]:
    xen = _read(root, "/sys/hypervisor/type")
    if xen:
        evidence.append(f"/sys/hypervisor/type: {xen}")
        return xen.lower(), None
    dmi = {
        key: _read(root, f"/sys/class/dmi/id/{key}")
        for key in ("sys_vendor", "product_name", "bios_vendor", "board_vendor")
    }
    if _read(root, "/sys/class/dmi/id/chassis_asset_tag") == _AZURE_ASSET_TAG:
        evidence.append("DMI chassis asset tag: Azure")
        return "hyperv", "azure"
    text = " ".join(dmi.values()).lower()
    if "microsoft corporation" in text and "virtual machine" in text:
        evidence.append("DMI: Microsoft Virtual Machine")
        return "hyperv", None
    for sign, hypervisor, cloud in _DMI_SIGNS:
        if sign in text:
            evidence.append(f"DMI: {' / '.join(v for v in dmi.values() if v)}")
            return hypervisor, cloud
    cmdline = _read(root, "/proc/cmdline")
    if "firecracker" in cmdline or "virtio_mmio.device=" in cmdline:
        evidence.append("/proc/cmdline: Firecracker microVM")
        return "firecracker", None
    clocks = _read(root, "/sys/devices/system/clocksource/clocksource0/available_clocksource")
    for clock, hypervisor in _CLOCKSOURCES.items():
        if clock in clocks.split():
            evidence.append(f"clock source {clock}")
            return hypervisor, None
    compatible = _read(root, "/proc/device-tree/hypervisor/compatible")
    if compatible:
        evidence.append(f"device tree hypervisor: {compatible}")
        return compatible.split(",")[0].lower() or "unknown", None
    cpuinfo = _read(root, "/proc/cpuinfo", 1 << 20)
    if re.search(r"^flags\s*:.*\bhypervisor\b", cpuinfo, re.MULTILINE):
        evidence.append("/proc/cpuinfo: hypervisor flag")
        return "unknown", None
    return None, None


def _container(root: Path, env: Mapping[str, str], evidence: list[str]) -> tuple[
    str | None, str | None
]:
    runtime: str | None = None
    cgroups = _read(root, "/proc/self/cgroup") + "\n" + _read(root, "/proc/1/cgroup")
    for sign, name in _CGROUP_SIGNS:
        if sign in cgroups:
            runtime = name
            evidence.append(f"cgroup path mentions {sign}")
            break
    if env.get("KUBERNETES_SERVICE_HOST") or (
        root / "var/run/secrets/kubernetes.io/serviceaccount"
    ).exists():
        runtime = "kubernetes"
        evidence.append("Kubernetes service account or KUBERNETES_SERVICE_HOST")
    elif runtime is None and (root / "run/.containerenv").exists():
        runtime = "podman"
        evidence.append("/run/.containerenv")
    elif runtime is None and (root / ".dockerenv").exists():
        runtime = "docker"
        evidence.append("/.dockerenv")
    elif runtime is None and env.get("container"):
        runtime = env["container"]
        evidence.append(f"container={runtime}")
    if runtime is None:
        return None, None
    match = re.search(_CONTAINER_ID, cgroups)
    if match is None:
        mounts = _read(root, "/proc/self/mountinfo", 1 << 20)
        match = re.search(r"/(?:containers|overlay-containers)/([0-9a-f]{64})/", mounts)
    return runtime, match.group(1) if match else None


def _cloud(env: Mapping[str, str], evidence: list[str]) -> str | None:
    for name, provider in _CLOUD_ENV:
        if env.get(name):
            evidence.append(f"${name} set")
            return provider
    return None


def _memory(root: Path) -> int | None:
    match = re.search(r"^MemTotal:\s+(\d+) kB", _read(root, "/proc/meminfo"), re.MULTILINE)
    total = int(match.group(1)) * 1024 if match else None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        value = _read(root, path)
        if value.isdigit() and (total is None or int(value) < total):
            total = int(value)
    return total


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def detect_environment(root: Path | str = "/", env: Mapping[str, str] | None = None) -> Environment:
    """Detect the environment from files under `root` and the variables in `env`
    (default: `os.environ`). Results for the real root are cached per process."""
    if str(root) == "/" and env is None:
        return _detect_cached()
    return _detect(Path(root), os.environ if env is None else env)


@functools.cache
def _detect_cached() -> Environment:
    return _detect(Path("/"), os.environ)


def _cache_key() -> str:
    """This boot, host name and set of namespaces: what the detected environment
    depends on (a container started later on the same host gets its own entry)."""
    names = [_read(Path("/"), "/proc/sys/kernel/random/boot_id"), os.uname().nodename]
    for ns in ("pid", "mnt", "cgroup"):
        try:
            names.append(str(os.stat(f"/proc/self/ns/{ns}").st_ino))
        except OSError:
            names.append("-")
    return "|".join(names)


def cached_environment(path: Path | None = None) -> Environment:
    """`detect_environment()`, remembered in `path` (default: `environment.json` in the
    state directory) for this boot and set of namespaces: detection reads a dozen files,
    which every `stockade run` would repeat. The CPU count is always read afresh."""
    import json

    from ..paths import state_dir
    from ..regularfile import read_regular, replace_file

    path = path or state_dir() / "environment.json"
    key = _cache_key()
    try:
        # Never a FIFO planted there (it hung every run) nor a link's target.
        cached = _cached(json.loads(read_regular(path, _CACHE_BYTES)), key)
        if cached is not None:
            return cached._replace(cpu_count=_cpus())
    except (OSError, ValueError, RecursionError):
        pass
    found = detect_environment()
    try:
        # 0700 whatever the umask: the first run makes the state directory, and the audit
        # log refuses one group can write (under umask 002 every record was lost).
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        replace_file(path, json.dumps({"key": key, "environment": found._asdict()}).encode())
    except OSError:
        pass  # a read-only state directory only costs the next run a detection
    return found


def _cached(data: object, key: str) -> Environment | None:
    """The environment `data` (as read from the cache file) remembers for `key`, or None
    when it is of another boot or of any other shape: `[]` there raised past every run's
    telemetry (which stopped, unheard) and `stockade doctor`."""
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    fields = data.get("environment")
    if not isinstance(fields, dict) or set(fields) != set(Environment._fields):
        return None
    evidence = fields["evidence"]
    if not isinstance(evidence, list) or not all(isinstance(item, str) for item in evidence):
        return None
    texts = ("virtualization", "hypervisor", "container_runtime", "container_id",
             "cloud_provider")
    if fields["virtualization"] not in _ISOLATION or not all(
            fields[name] is None or isinstance(fields[name], str) for name in texts):
        return None
    memory = fields["memory_bytes"]
    if memory is not None and (type(memory) is not int or memory < 0):
        return None
    return Environment(**{**fields, "evidence": tuple(evidence)})


def _detect(root: Path, env: Mapping[str, str]) -> Environment:
    evidence: list[str] = []
    if sys.platform in ("wasi", "emscripten"):
        return Environment("wasm", None, None, None, None, 1, None, (f"platform {sys.platform}",))
    hypervisor, cloud = _hypervisor(root, evidence)
    runtime, container_id = _container(root, env, evidence)
    cloud = cloud or _cloud(env, evidence)
    if runtime is not None:
        kind = "container"
    elif hypervisor is not None:
        kind = "vm"
    else:
        kind = "bare-metal"
        evidence.append("no hypervisor or container signs")
    return Environment(
        virtualization=kind,
        hypervisor=hypervisor,
        container_runtime=runtime,
        container_id=container_id,
        cloud_provider=cloud,
        cpu_count=_cpus(),
        memory_bytes=_memory(root),
        evidence=tuple(evidence),
    )
