"""OTLP export profiles (`edge`, `cloud`, `on-prem`, `hybrid`) and how `hybrid` picks one.

The numbers are the export table of design.md. A profile only sets defaults: the
standard `OTEL_*` variables override it (see `settings.py`).
"""

from __future__ import annotations

from ..errors import UsageError
from ..records import FieldTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    from .environment import Environment

__all__ = [
    "ExportProfile",
    "PROFILES",
    "DEFAULT_PROFILE",
    "PROFILE_NAMES",
    "Protocol",
    "Compression",
    "PROTOCOLS",
    "COMPRESSIONS",
    "choose_profile",
]

# The values each may take, checked at run time (the aliases are for type checkers).
PROTOCOLS = ("http/protobuf", "grpc")
COMPRESSIONS = ("gzip", "none")
if TYPE_CHECKING:
    Protocol = Literal["http/protobuf", "grpc"]
    Compression = Literal["gzip", "none"]
else:
    Protocol = Compression = str

GiB = 1024**3


class ExportProfile(FieldTuple):
    """How telemetry leaves the process.

    `batch_size` is the span/log batch (BatchSpanProcessor `max_export_batch_size`),
    `interval` the export interval in seconds (metrics reader and batch schedule delay),
    `sampling_ratio` the parent-based trace-id ratio (0.0-1.0).
    """

    name: str
    batch_size: int
    interval: float
    protocol: Protocol
    compression: Compression
    sampling_ratio: float


PROFILES: dict[str, ExportProfile] = {
    "edge": ExportProfile("edge", 32, 5.0, "http/protobuf", "gzip", 0.1),
    "cloud": ExportProfile("cloud", 512, 30.0, "grpc", "none", 1.0),
    "on-prem": ExportProfile("on-prem", 256, 15.0, "grpc", "none", 1.0),
}

# No profile named: the OpenTelemetry SDK's own defaults, every trace kept.
DEFAULT_PROFILE = ExportProfile("default", 512, 60.0, "http/protobuf", "none", 1.0)

PROFILE_NAMES = ("edge", "cloud", "on-prem", "hybrid", "off")


def choose_profile(name: str | None, environment: Environment | None = None) -> tuple[
    ExportProfile, str
]:
    """The profile called `name` and why it applies. `hybrid` decides from `environment`
    (detected when not given): edge for Wasm or constrained hosts (at most 2 CPUs or under
    2 GiB of memory), cloud for containers and VMs in a known cloud or Kubernetes, on-prem
    otherwise. Raises UsageError for an unknown name."""
    if name is None or name == "default":
        return DEFAULT_PROFILE, "no profile named: SDK defaults"
    if name in PROFILES:
        return PROFILES[name], f"profile {name!r} named"
    if name != "hybrid":
        raise UsageError(
            f"unknown telemetry profile {name!r}: use one of {', '.join(PROFILE_NAMES)}"
        )
    if environment is None:
        from .environment import detect_environment

        environment = detect_environment()
    return _hybrid(environment)


def _hybrid(env: Environment) -> tuple[ExportProfile, str]:
    if env.virtualization == "wasm":
        return PROFILES["edge"], "hybrid: running inside WebAssembly"
    memory = f"{env.memory_bytes / GiB:.1f} GiB" if env.memory_bytes else "unknown memory"
    if env.cpu_count <= 2 or (env.memory_bytes is not None and env.memory_bytes < 2 * GiB):
        return PROFILES["edge"], f"hybrid: constrained host ({env.cpu_count} CPUs, {memory})"
    if env.cloud_provider or env.container_runtime == "kubernetes":
        where = env.cloud_provider or "kubernetes"
        return PROFILES["cloud"], f"hybrid: {env.virtualization} in {where}"
    return PROFILES["on-prem"], f"hybrid: {env.virtualization} with no cloud detected"
