"""The VM backend: Debian's kernel in a QEMU microvm, boot per request and warm."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.bench.hosts.base import HostUnavailable, Layout, Request
from stockade.bench.hosts.process import measure_process
from stockade.bench.hosts.vm import MAX_PAYLOAD, VmHost, choose_accel

from ..conftest import ROOT, stockade

BUILD = ROOT / "build"
LAYOUT = Layout(BUILD / "guests" / "bench", BUILD / "native" / "bench", BUILD / "real")


def _need_vm() -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 missing: run `make setup` "
                    "(apt-get install qemu-system-x86)")
    if not (BUILD / "vm" / "vmlinuz").exists():
        pytest.fail("build/vm/vmlinuz missing: run `make vm` (scripts/fetch_vm.py)")


def test_accel_is_tcg_on_a_host_that_is_itself_a_vm() -> None:
    nested = " hypervisor" in Path("/proc/cpuinfo").read_text()
    assert choose_accel() == ("tcg" if nested or not os.access("/dev/kvm", os.W_OK) else "kvm")
    assert choose_accel("kvm") == "kvm"


@pytest.fixture(scope="module")
def warm_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmHost]:
    _need_vm()
    try:
        host = VmHost(LAYOUT, {"mode": "warm", "workdir": str(tmp_path_factory.mktemp("vm"))})
    except HostUnavailable as exc:
        pytest.fail(f"the microVM did not boot: {exc}")
    yield host
    host.close()
    host.close()  # twice is safe
    assert host.vm is None


def test_a_program_in_the_vm_computes_what_it_computes_natively(warm_vm: VmHost) -> None:
    request = Request("compute", ("sha256", "262144"))
    inside = warm_vm.run(request)
    native = measure_process([str(LAYOUT.native("compute")), *request.args]).sample
    assert inside.ok, inside.error
    assert inside.digest == native.digest
    assert inside.hot_ns and inside.rss_kb  # the guest's own timing; QEMU's memory


def test_a_payload_crosses_the_console_byte_for_byte(warm_vm: VmHost, tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    payload.write_bytes(bytes(range(256)) * 16)  # every byte value, raw console
    inside = warm_vm.run(Request("echo", (), str(payload)))
    native = measure_process([str(LAYOUT.native("echo"))], str(payload)).sample
    assert inside.ok, inside.error
    assert inside.digest == native.digest
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_PAYLOAD + 1))
    refused = warm_vm.run(Request("echo", (), str(big)))
    assert not refused.ok and "serial console" in refused.error


def test_bench_reports_the_vm_row_with_its_honesty_label(tmp_path: Path) -> None:
    _need_vm()
    out = tmp_path / "out"
    done = stockade("bench", "--quick", "--only", "vm", "--out", str(out), timeout=900)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    results = json.loads((out / "results.json").read_text())
    vm = next(b for b in results["backends"] if b["name"] == "vm")
    assert vm["skipped"] is None, vm["skipped"]
    assert ("TCG emulation" in vm["note"]) == (choose_accel() == "tcg")
    boots = [m for m in results["measurements"]
             if m["backend"] == "vm" and m["workload"] == "startup/hello"]
    assert boots and boots[0]["metrics"]["first_ms"], boots
    report = (out / "report.md").read_text()
    assert "microVM per request" in report
