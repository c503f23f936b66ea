"""Each protection of a worker bites: the worker tries what it must not be able to do."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from stockade import Policy
from stockade.isolate import IsolatedSandbox, format_protections, protections
from tests.isolate.conftest import protection, require

EXPECTED = {
    "network namespace", "mount namespace", "uid", "capabilities", "no_new_privs", "landlock",
    "seccomp", "rlimit as", "rlimit cpu", "rlimit core", "rlimit nofile", "rlimit fsize",
    "rlimit nproc",
}


def test_every_protection_is_reported_active_or_with_a_reason(
        strict_sandbox: IsolatedSandbox) -> None:
    report = strict_sandbox.protections()
    names = {item.name for item in report}
    assert EXPECTED <= names
    assert any(name.startswith("cgroup") for name in names)
    for item in report:
        assert item.detail, f"{item.name} has no detail"
    assert "seccomp" in format_protections(report)


def test_protections_function_starts_a_real_worker() -> None:
    report = protections(Policy.from_profile("strict"))
    assert {item.name for item in report} >= EXPECTED


def test_seccomp_refuses_inet_and_unix_sockets(strict_sandbox: IsolatedSandbox) -> None:
    require(strict_sandbox, "seccomp")
    for check in ("socket_inet", "socket_unix"):
        outcome = strict_sandbox.check(check)
        assert outcome["held"], outcome["detail"]
        assert outcome["value"] == errno.EPERM


def test_seccomp_refuses_new_processes_namespaces_and_signals(
        strict_sandbox: IsolatedSandbox) -> None:
    require(strict_sandbox, "seccomp")
    for check in ("spawn", "unshare", "signal_parent"):
        outcome = strict_sandbox.check(check)
        assert outcome["held"], f"{check}: {outcome['detail']}"


def test_worker_status_shows_filter_and_no_new_privileges(
        strict_sandbox: IsolatedSandbox) -> None:
    require(strict_sandbox, "seccomp")
    status = strict_sandbox.check("status")["value"]["status"]
    assert status["Seccomp"] == "2"
    assert status["NoNewPrivs"] == "1"


def test_the_parent_is_not_filtered(strict_sandbox: IsolatedSandbox) -> None:
    strict_sandbox.check("status")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM):
        pass
    assert "Seccomp:\t0" in Path("/proc/self/status").read_text()


def test_allocation_past_rlimit_as_fails(strict_sandbox: IsolatedSandbox) -> None:
    require(strict_sandbox, "rlimit as")
    outcome = strict_sandbox.check("address_space", 0)
    assert outcome["held"], outcome["detail"]
    below = strict_sandbox.check("allocate", 16 * 1024**2)
    assert not below["held"], below["detail"]


def test_rlimits_seen_by_the_worker(strict_sandbox: IsolatedSandbox) -> None:
    limits = strict_sandbox.policy.limits
    rlimits = strict_sandbox.check("status")["value"]["rlimits"]
    assert rlimits["RLIMIT_CORE"] == (0, 0)
    assert rlimits["RLIMIT_NOFILE"][0] == limits.max_open_files + 64
    assert rlimits["RLIMIT_FSIZE"][0] >= limits.max_output
    assert 0 < rlimits["RLIMIT_CPU"][0] <= rlimits["RLIMIT_CPU"][1]


def test_only_loopback_in_the_network_namespace(strict_sandbox: IsolatedSandbox) -> None:
    require(strict_sandbox, "network namespace")
    outcome = strict_sandbox.check("interfaces")
    assert outcome["value"] == ["lo"]
    assert "lo" in protection(strict_sandbox, "network namespace").detail


def test_no_capabilities_and_an_unprivileged_uid(strict_sandbox: IsolatedSandbox) -> None:
    assert protection(strict_sandbox, "capabilities").active
    status = strict_sandbox.check("status")["value"]["status"]
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapBnd"], 16) == 0
    if os.geteuid() == 0:
        require(strict_sandbox, "uid")
        assert "uid/gid" in protection(strict_sandbox, "uid").detail


def test_landlock_and_mount_namespace_are_reported(strict_sandbox: IsolatedSandbox) -> None:
    for name in ("landlock", "mount namespace", "no_new_privs"):
        assert protection(strict_sandbox, name).detail
