"""A module file is opened once and read boundedly, on every backend: what is decided
about it (a regular file, its size) comes from the opened descriptor, and at most the
size limit plus one byte is read from it. A file that lies about its size, grows after
the check, or is a FIFO or a device is refused with one line and exit 126, never read
without bound, never waited on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stockade import Policy, Sandbox
from stockade.engine.loader import ModuleFile
from stockade.errors import ModuleError
from stockade.sandbox.capi import CapiSandbox
from tests.conftest import guest, stockade

KiB = 1024

# A regular file whose size says 0 and which holds megabytes (the kernel's symbols).
BIG_BUT_EMPTY = Path("/proc/kallsyms")


def _bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


@pytest.mark.parametrize("backend", ["sandbox", "capi"])
def test_a_file_larger_than_its_size_is_read_only_to_the_limit(backend: str) -> None:
    if not os.access(BIG_BUT_EMPTY, os.R_OK) or len(BIG_BUT_EMPTY.read_bytes()) < 1024 * KiB:
        pytest.skip(f"{BIG_BUT_EMPTY} is not readable or small on this machine")
    policy = Policy.from_profile("default").with_limits(max_module_size=64 * KiB)
    with (Sandbox(policy) if backend == "sandbox" else CapiSandbox(policy)) as sandbox:
        sandbox.run(guest("hello.wasm"))  # warm: the engine and the cache are open
        before = _bytes_read()
        with pytest.raises(ModuleError, match="more than the module size limit of 64KiB"):
            sandbox.run(BIG_BUT_EMPTY)
        # Megabytes were read whole, then refused by length; now at most limit + 1.
        assert _bytes_read() - before < 256 * KiB


def test_a_file_grown_after_the_check_is_read_only_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "grows.wasm"
    path.write_bytes(guest("hello.wasm").read_bytes()[:4 * KiB])
    with ModuleFile(path, 16 * KiB) as file:
        with path.open("ab") as more:
            more.write(b"\0" * (1024 * KiB))  # after the size was checked
        with pytest.raises(ModuleError, match="more than its size said, or it grew"):
            file.read()


@pytest.mark.parametrize("trusted", [False, True], ids=["any", "signed-only"])
@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
@pytest.mark.parametrize("backend", ["sandbox", "capi"])
def test_no_regular_file_no_module(tmp_path: Path, kind: str, backend: str,
                                   trusted: bool) -> None:
    """Under `require_signature` the trust gate read the file itself, blocking: a FIFO
    held the run for ever (found by review)."""
    path = tmp_path / "module.wasm"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: a blocking open or read would wait forever
    elif kind == "device":
        path = Path("/dev/zero")
    else:
        path.mkdir()
    policy = Policy.from_profile("default")
    if trusted:
        from stockade.policy.model import Trust
        from stockade.trust import SecretKey

        key = tmp_path / "signer.pub"
        key.write_bytes(SecretKey(bytes([1]) * 32).public.pem())
        policy = Policy(policy.limits, policy.capabilities, policy.profile,
                        Trust(True, (key,)))
    with (Sandbox(policy) if backend == "sandbox" else CapiSandbox(policy)) as sandbox:
        with pytest.raises(ModuleError, match="not a regular file"):
            sandbox.run(path)


@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_the_cli_refuses_what_is_not_a_regular_file(tmp_path: Path, target: str) -> None:
    path = Path(target)
    if target == "fifo":
        path = tmp_path / "module.wasm"
        os.mkfifo(path)
    done = stockade("run", str(path), timeout=60)
    assert done.returncode == 126, done.stderr
    assert b"not a regular file" in done.stderr
    assert len(done.stderr.decode().strip().splitlines()) == 1, done.stderr


def test_a_module_swapped_for_a_fifo_is_not_waited_on(tmp_path: Path) -> None:
    # The name is checked and read through one descriptor: replacing the file by a FIFO
    # between a check and a read (the race of stat-then-read) cannot make it block.
    path = tmp_path / "module.wasm"
    os.mkfifo(path)
    with pytest.raises(ModuleError, match="not a regular file"):
        ModuleFile(path, 16 * KiB)


@pytest.mark.parametrize("name, backend", [("big.wasm", "auto"), ("big.cwasm", "auto"),
                                           ("big.wasm", "wasmtime")])
def test_the_command_line_reads_no_more_than_the_policys_size_limit(
        tmp_path: Path, name: str, backend: str) -> None:
    """`stockade run` (and the OCI runtime, through it) hashed a module under a fixed
    512 MiB bound before the policy's limit refused it: a 400 MiB module under `strict`
    (64 MiB) took the process past 800 MB (found by review). Also on wasmtime-py's path,
    which a name ending in `.cwasm` picks (found by the review of the fix)."""
    big = tmp_path / name
    with big.open("wb") as out:
        out.write(b"\0asm\x01\0\0\0")
        out.truncate(300 * 1024 * KiB)  # sparse: costs the disk nothing
    probe = ("import os, resource, subprocess, sys\n"
             "done = subprocess.run([sys.executable, '-m', 'stockade', 'run', '--profile',"
             f" 'strict', '--allow-precompiled', {str(big)!r}], capture_output=True,"
             f" text=True, env={{**os.environ, 'STOCKADE_BACKEND': {backend!r}}})\n"
             "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "print(done.stderr)\n")
    measured = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              timeout=120)
    code, peak_kib = measured.stdout.split("\n", 1)[0].split()
    assert code == "126" and "module size limit of 64MiB" in measured.stdout, measured.stdout
    assert int(peak_kib) < 200 * KiB, peak_kib


def test_a_module_the_trust_gate_refuses_is_never_compiled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal `stockade run` compiled the module first, to show progress, before
    the sandbox's trust gate refused it: unsigned bytes reached the compiler and the AoT
    cache (found by review)."""
    from stockade import progress
    from stockade.cli import execute
    from stockade.invocation import Invocation
    from stockade.policy.model import Trust
    from stockade.trust import SecretKey

    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STOCKADE_BACKEND", "wasmtime")
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    key = tmp_path / "signer.pub"
    key.write_bytes(SecretKey(bytes([1]) * 32).public.pem())
    base = Policy.from_profile("default")
    policy = Policy(base.limits, base.capabilities, base.profile, Trust(True, (key,)))
    module = tmp_path / "unsigned.wasm"
    module.write_bytes(guest("hello.wasm").read_bytes())
    result = execute.run_observed(module, policy, Invocation(), "none", "off")
    assert result.outcome.value == "denied"
    assert not list((tmp_path / "cache").rglob("*.cwasm"))
