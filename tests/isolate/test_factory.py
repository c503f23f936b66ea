"""`make_sandbox` and `IsolationConfig`: the `--isolate` choice and its settings."""

from __future__ import annotations

import pytest

from stockade import Policy, Sandbox, UsageError
from stockade.isolate import (
    IsolatedSandbox,
    IsolationConfig,
    Protection,
    default_isolation,
    format_protections,
    make_sandbox,
)
from stockade.isolate.config import MiB
from tests.conftest import guest


def test_strict_defaults_to_a_worker_and_the_others_to_in_process() -> None:
    assert default_isolation(Policy.from_profile("strict")) == "process"
    assert default_isolation(Policy.from_profile("default")) == "none"
    assert default_isolation(Policy.from_profile("permissive")) == "none"


def test_make_sandbox_picks_the_implementation() -> None:
    policy = Policy.from_profile("strict")
    with make_sandbox(policy, "none") as local:
        assert isinstance(local, Sandbox)
    with make_sandbox(policy, "process") as isolated:
        assert isinstance(isolated, IsolatedSandbox)
        assert isolated.run(guest("hello.wasm")).ok
    with make_sandbox(policy) as chosen:
        assert isinstance(chosen, IsolatedSandbox)


def test_unknown_isolation_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="process|none"):
        make_sandbox(Policy.from_profile("strict"), "vm")


@pytest.mark.parametrize("bad", [{"grace": -1.0}, {"cpu_quota": 0.0}, {"pids_max": 2},
                                 {"max_runs": 0}, {"cpu_budget_runs": 0}])
def test_invalid_settings_are_usage_errors(bad: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        IsolationConfig(**bad)  # type: ignore[arg-type]


def test_figures_derive_from_the_policy() -> None:
    policy = Policy.from_profile("strict")
    config = IsolationConfig(memory_overhead=100 * MiB, grace=2.0, cpu_quota=1.0)
    assert config.cgroup_memory(policy) == 116 * MiB
    assert config.run_cpu_seconds(policy) == 32
    assert config.deadline(policy) == 32.0
    assert config.run_cpu_seconds(policy.with_limits(timeout=None)) is None
    assert IsolationConfig(memory_limit=64 * MiB).cgroup_memory(policy) == 64 * MiB


def test_format_protections_aligns_columns() -> None:
    text = format_protections([Protection("seccomp", True, "on"),
                               Protection("network namespace", False, "needs root")])
    assert text.splitlines() == ["seccomp            active       on",
                                 "network namespace  unavailable  needs root"]
