"""Environment detection from prepared file trees, and on this machine; OS protections."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any

import pytest

from stockade.telemetry import detect_environment, probe_protections
from stockade.telemetry.environment import cached_environment

DOCKER_ID = "4f2c" * 16


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


@pytest.mark.parametrize(("files", "env", "expected"), [
    ({"/proc/cpuinfo": "flags\t: fpu sse2\n"}, {},
     ("bare-metal", None, None, "process")),
    ({"/sys/class/dmi/id/product_name": "KVM\n", "/sys/class/dmi/id/sys_vendor": "QEMU"}, {},
     ("vm", "kvm", None, "hardware")),
    ({"/sys/class/dmi/id/sys_vendor": "VMware, Inc."}, {}, ("vm", "vmware", None, "hardware")),
    ({"/sys/hypervisor/type": "xen\n"}, {}, ("vm", "xen", None, "hardware")),
    ({"/sys/class/dmi/id/sys_vendor": "Microsoft Corporation",
      "/sys/class/dmi/id/product_name": "Virtual Machine"}, {},
     ("vm", "hyperv", None, "hardware")),
    ({"/proc/cmdline": "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5"}, {},
     ("vm", "firecracker", None, "hardware")),
    ({"/sys/devices/system/clocksource/clocksource0/available_clocksource": "kvm-clock tsc"},
     {}, ("vm", "kvm", None, "hardware")),
    ({"/proc/cpuinfo": "flags\t: fpu hypervisor sse2\n"}, {},
     ("vm", "unknown", None, "hardware")),
    ({"/.dockerenv": "", "/proc/self/cgroup": f"0::/docker/{DOCKER_ID}\n"}, {},
     ("container", None, "docker", "container")),
    ({"/run/.containerenv": ""}, {}, ("container", None, "podman", "container")),
    ({"/proc/self/cgroup": "0::/kubepods/burstable/pod1/abc\n"},
     {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, ("container", None, "kubernetes", "container")),
    ({"/proc/self/cgroup": "0::/system.slice/containerd.service\n",
      "/sys/class/dmi/id/sys_vendor": "Amazon EC2"}, {},
     ("container", "kvm", "containerd", "hardware")),
])
def test_detection(tmp_path: Path, files: dict[str, str], env: dict[str, str],
                   expected: tuple[str, str | None, str | None, str]) -> None:
    found = detect_environment(tree(tmp_path, files), env)
    assert (found.virtualization, found.hypervisor, found.container_runtime,
            found.isolation_level) == expected
    assert found.evidence


def test_container_id_and_cloud(tmp_path: Path) -> None:
    root = tree(tmp_path, {"/.dockerenv": "", "/proc/self/cgroup": f"0::/docker/{DOCKER_ID}",
                           "/sys/class/dmi/id/sys_vendor": "Google",
                           "/sys/class/dmi/id/product_name": "Google Compute Engine"})
    found = detect_environment(root, {})
    attrs = found.resource_attributes()
    assert attrs["container.id"] == DOCKER_ID
    assert attrs["cloud.provider"] == "gcp"
    assert attrs["hypervisor.type"] == "kvm"


def test_cloud_from_environment_variables(tmp_path: Path) -> None:
    found = detect_environment(tmp_path, {"AWS_EXECUTION_ENV": "AWS_ECS_FARGATE"})
    assert found.cloud_provider == "aws"


def test_this_machine() -> None:
    found = detect_environment()
    assert found is detect_environment()  # cached
    attrs = found.resource_attributes()
    assert attrs["virtualization.type"] in ("bare-metal", "vm", "container")
    assert {"isolation.level", "hypervisor.type", "host.name", "host.arch", "os.type",
            "os.version"} <= set(attrs)
    assert found.cpu_count == len(os.sched_getaffinity(0))
    assert found.memory_bytes is not None and found.memory_bytes > 0


def test_the_detection_is_remembered_per_boot(tmp_path: Path) -> None:
    path = tmp_path / "environment.json"
    first = cached_environment(path)
    assert first == detect_environment()
    data = json.loads(path.read_text())
    data["environment"]["cloud_provider"] = "remembered"
    path.write_text(json.dumps(data))
    assert cached_environment(path).cloud_provider == "remembered"
    data["key"] = "another boot"
    path.write_text(json.dumps(data))
    assert cached_environment(path) == first


@pytest.mark.parametrize("damage", [
    lambda data: [], lambda data: None, lambda data: 1e999, lambda data: "[" * 100_000,
    lambda data: {**data, "environment": []},
    lambda data: {**data, "environment": {**data["environment"], "evidence": "abc"}},
    lambda data: {**data, "environment": {**data["environment"], "hypervisor": 7}},
    lambda data: {**data, "environment": {**data["environment"], "virtualization": "moon"}},
    lambda data: {**data, "environment": {**data["environment"], "extra": 1}},
])
def test_a_remembered_detection_of_another_shape_is_detected_again(
        tmp_path: Path, damage: Any) -> None:
    # `[]` raised AttributeError past every run's telemetry (which stopped, unheard) and
    # `stockade doctor`; deep nesting a RecursionError.
    path = tmp_path / "environment.json"
    first = cached_environment(path)
    damaged = damage(json.loads(path.read_text()))
    path.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    assert cached_environment(path) == first
    assert cached_environment(path) == first  # and written again whole


def test_the_state_directory_it_makes_is_private_whatever_the_umask(tmp_path: Path) -> None:
    # Made 0775 under umask 002, which the audit log and telemetry file then refused.
    previous = os.umask(0o002)
    try:
        cached_environment(tmp_path / "state" / "environment.json")
    finally:
        os.umask(previous)
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


def test_protections_of_this_process() -> None:
    found = probe_protections()
    assert found.rlimits["NOFILE"] == resource.getrlimit(resource.RLIMIT_NOFILE)
    assert found.seccomp_filter == Path("/proc/sys/kernel/seccomp/actions_avail").exists()
    assert found.cgroup.version in ("1", "2", "hybrid", "none")
    assert found.namespaces["net"] == os.path.exists("/proc/self/ns/net")
    names = [name for name, _ in found.summary()]
    assert names == ["seccomp", "cgroups", "namespaces", "rlimits", "security modules"]
