"""Benchmark plans: which workloads, how many samples, how much warm-up.

Every backend runs every workload it supports in `rounds` round-robin rounds (the order
of backends rotates each round), so drift on a shared machine hits all of them alike.
Before round one each backend runs `warmup` unrecorded iterations (caches, JIT tiers,
page cache). Sample counts depend on the workload group and on the backend's cost class:
`fast` (in-process, µs..ms), `spawn` (a native process or container, ms), `slow` (a
Python or node process, tens of ms, or an interpreter on compute), `compile` (compilation
included, seconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .stats import BenchError
from .workloads import KERNELS, Workload

__all__ = ["Plan", "GatewayPlan", "PLANS", "COSTS", "NO_GATEWAY", "get_plan"]

COSTS = ("fast", "spawn", "slow", "compile")
_VARIANTS = ("small", "medium", "large")

# Sizes chosen so the native hot loop takes about 1, 10 and 50 ms on a 2-core VM.
COMPUTE_SIZES: dict[str, tuple[int, int, int]] = {
    "fnv": (1 << 20, 8 << 20, 32 << 20),
    "sha256": (256 << 10, 2 << 20, 8 << 20),
    "sieve": (300_000, 3_000_000, 20_000_000),
    "qsort": (20_000, 200_000, 1_000_000),
}


@dataclass(frozen=True)
class GatewayPlan:
    """The gateway's ratio to its server's ceiling (`gatewayload.measure_ratios`):
    `rounds` interleaved rounds of `seconds` of wrk per server."""

    rounds: int = 8
    seconds: float = 2.0


# Why a plan without a gateway section skips it (the report says so).
NO_GATEWAY = ("the quick plan skips the gateway ratio (about a minute of wrk load); "
              "`stockade bench --only gateway` runs it alone")


@dataclass(frozen=True)
class Plan:
    """A benchmark plan. `counts[group][cost]` is the number of recorded samples."""

    name: str
    rounds: int
    warmup: Mapping[str, int]
    counts: Mapping[str, Mapping[str, int]]
    variants: tuple[str, ...] = ("medium",)
    interpreter_variants: tuple[str, ...] = ("small",)
    echo_sizes: tuple[int, ...] = (1 << 10, 1 << 20, 16 << 20)
    micro: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    groups: tuple[str, ...] = ("startup", "compute", "io", "micro", "real")
    gateway: GatewayPlan | None = None

    def samples(self, group: str, cost: str) -> int:
        """Recorded samples for a group and cost class (0: not run)."""
        return self.counts.get(group, {}).get(cost, 0)

    def batch(self, group: str, cost: str) -> int:
        """Iterations per round (samples spread over the rounds, at least one)."""
        total = self.samples(group, cost)
        return 0 if total == 0 else max(1, -(-total // self.rounds))

    def workloads(self) -> list[Workload]:
        """The workloads of this plan, in run order."""
        found: list[Workload] = []
        if "startup" in self.groups:
            found.append(Workload(key="startup/hello", group="startup", guest="noop"))
        if "compute" in self.groups:
            for kernel in KERNELS:
                for variant in _VARIANTS:
                    if variant in self.variants or variant in self.interpreter_variants:
                        size = COMPUTE_SIZES[kernel][_VARIANTS.index(variant)]
                        found.append(Workload(
                            key=f"compute/{kernel}/{variant}", group="compute",
                            guest="compute", args=(kernel, str(size)), kernel=kernel,
                            variant=variant, size=size))
        if "io" in self.groups:
            for size in self.echo_sizes:
                found.append(Workload(key=f"io/echo/{size}", group="io", guest="echo",
                                      payload=size, kernel="echo", size=size))
        if "micro" in self.groups:
            for kind, args in self.micro.items():
                found.append(Workload(key=f"micro/{kind}", group="micro", guest="micro",
                                      args=(kind, *args), kernel=kind, size=int(args[0])))
        if "real" in self.groups:
            found.append(Workload(key="real/python", group="real", guest="python",
                                  args=("-c", "print(1)")))
        return found

    def describe(self) -> dict[str, object]:
        """Plain data for results.json and the report's method section."""
        return {"name": self.name, "rounds": self.rounds, "warmup": dict(self.warmup),
                "counts": {g: dict(c) for g, c in self.counts.items()},
                "variants": list(self.variants),
                "interpreter_variants": list(self.interpreter_variants),
                "echo_sizes": list(self.echo_sizes),
                "micro": {k: list(v) for k, v in self.micro.items()},
                "gateway": None if self.gateway is None else dict(self.gateway.__dict__)}


PLANS: dict[str, Plan] = {
    "full": Plan(
        name="full", rounds=5,
        warmup={"fast": 20, "spawn": 3, "slow": 1, "compile": 0},
        counts={
            "startup": {"fast": 1000, "spawn": 200, "slow": 30, "compile": 10},
            "compute": {"fast": 10, "spawn": 10, "slow": 5},
            "io": {"fast": 30, "spawn": 30, "slow": 10},
            "micro": {"fast": 10, "spawn": 10, "slow": 5},
            "real": {"fast": 30, "spawn": 30, "slow": 10, "compile": 3},
        },
        variants=("small", "medium", "large"), interpreter_variants=("small", "medium"),
        echo_sizes=(1 << 10, 64 << 10, 1 << 20, 16 << 20),
        micro={"cpu": ("100000000",), "clock": ("1000000",), "syscall": ("1000000",),
               "memcpy": ("16", "32")},
        gateway=GatewayPlan(),
    ),
    "quick": Plan(
        name="quick", rounds=2,
        warmup={"fast": 10, "spawn": 1, "slow": 1, "compile": 0},
        counts={
            "startup": {"fast": 100, "spawn": 20, "slow": 4, "compile": 2},
            "compute": {"fast": 3, "spawn": 3, "slow": 2},
            "io": {"fast": 4, "spawn": 4, "slow": 2},
            "micro": {"fast": 3, "spawn": 3, "slow": 2},
            # Compiling CPython takes seconds: the quick plan runs it from the cache only.
            "real": {"fast": 4, "spawn": 4, "slow": 2, "compile": 0},
        },
        variants=("medium",), interpreter_variants=("medium",),
        echo_sizes=(1 << 10, 1 << 20, 16 << 20),
        micro={"cpu": ("20000000",), "clock": ("200000",), "syscall": ("200000",),
               "memcpy": ("16", "8")},
    ),
    # `stockade advise --probe`: start-up and small compute kernels, under 30 s.
    "probe": Plan(
        name="probe", rounds=1,
        warmup={"fast": 5, "spawn": 1, "slow": 1, "compile": 0},
        counts={"startup": {"fast": 50, "spawn": 5, "slow": 3},
                "compute": {"fast": 2, "spawn": 2}},
        variants=("small",), interpreter_variants=(), groups=("startup", "compute"),
    ),
}


def get_plan(name: str) -> Plan:
    """A named plan. Raises BenchError for an unknown name."""
    try:
        return PLANS[name]
    except KeyError:
        raise BenchError(f"unknown plan {name!r} (choose from {', '.join(PLANS)})") from None
