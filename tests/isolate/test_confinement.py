"""Code that took a worker over stays confined: what native code can do from inside.

The probe below runs inside a real hardened worker, after every protection is applied,
the way code that escaped the guest would run there: it makes raw system calls through
ctypes (no Python-level guard in between) and reports the errno of each attempt.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import pwd
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade import Invocation, Outcome, Policy
from stockade.isolate import IsolatedSandbox, IsolationConfig
from stockade.isolate.handle import WorkerProcess
from stockade.isolate.plan import cgroup_limits_for, plan_for
from stockade.policy import DirGrant
from tests.conftest import guest

PROBE = r'''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
O_RDONLY, O_WRONLY, O_APPEND = 0, 1, 0o2000

def attempt(number, *args):
    ctypes.set_errno(0)
    value = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) if isinstance(a, int)
                                                   else a for a in args])
    return (value, ctypes.get_errno()) if value < 0 else (value, 0)

def open_raw(path, flags):
    fd, err = attempt(257, -100, ctypes.c_char_p(path.encode()), flags, 0)  # openat
    if fd >= 0:
        os.close(fd)
    return err

result = {"open": {name: open_raw(path, flags) for name, path, flags in TARGETS}}
procs = []
for line in open("/proc/self/cgroup").read().splitlines():
    _, controllers, path = line.split(":", 2)
    for controller in controllers.split(","):
        target = f"/sys/fs/cgroup/{controller}{path}/cgroup.procs"
        if controller in ("memory", "pids") and os.path.exists(f"/sys/fs/cgroup/{controller}"):
            procs.append((target, open_raw(target, O_WRONLY | O_APPEND)))
result["cgroup_procs"] = procs
result["socket_inet"] = attempt(41, 2, 1, 0)[1]     # socket(AF_INET, SOCK_STREAM)
result["socket_unix"] = attempt(41, 1, 1, 0)[1]     # socket(AF_UNIX, SOCK_STREAM)
result["tiocsti_high"] = attempt(16, 0, 0xDEADBEEF00005412, ctypes.c_char_p(b"x"))[1]
result["kill_parent"] = attempt(62, os.getppid(), 0)[1]
result["setuid_root"] = attempt(105, 0)[1]
result["uid"] = os.getuid()
result["status"] = open("/proc/self/status").read()
result["environ"] = repr(dict(os.environ))
'''


def _probe_worker(policy: Policy, targets: list[tuple[str, str, int]],
                  config: IsolationConfig | None = None) -> dict[str, Any]:
    """Start a hardened worker for `policy` whose plan carries the probe, run it."""
    config = config or IsolationConfig()
    source = f"TARGETS = {targets!r}\n{PROBE}"
    plan = dataclasses.replace(plan_for(policy, config), probe=source)
    worker = WorkerProcess(plan, cgroup_limits_for(policy, config), sys.executable)
    try:
        worker.wait_ready(config.start_timeout)
        worker.send(("probe",))
        kind, payload = worker.receive(time.monotonic() + 30, 1 << 20)
    finally:
        worker.close()
    assert kind == "probed"
    assert isinstance(payload, dict) and "error" not in payload, payload
    return payload


@pytest.fixture
def secret_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Files nobody granted: mode 000 owned by `nobody` inside a granted directory, and a
    world-readable file outside every grant."""
    root = tmp_path_factory.mktemp("confinement")
    granted = root / "granted"
    granted.mkdir()
    locked = granted / "locked.txt"
    locked.write_text("secret")
    nobody = pwd.getpwnam("nobody").pw_uid
    if os.geteuid() == 0:
        os.chown(locked, nobody, nobody)
    locked.chmod(0o000)
    outside = Path("/tmp") / f"stockade-outside-{os.getpid()}.txt"
    outside.write_text("not granted")
    outside.chmod(0o666)
    yield {"granted": granted, "locked": locked, "outside": outside}
    outside.unlink()


@pytest.mark.skipif(not Path("/proc/self/cgroup").exists(), reason="needs Linux /proc")
def test_native_code_in_a_worker_is_confined(secret_files: dict[str, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-secret-value")
    grant = DirGrant(host=secret_files["granted"], guest="/data", writable=True)
    policy = Policy.from_profile("strict").with_capabilities(dirs=(grant,))
    targets = [
        ("locked", str(secret_files["locked"]), os.O_RDONLY),
        ("locked_append", str(secret_files["locked"]), os.O_WRONLY | os.O_APPEND),
        ("outside", str(secret_files["outside"]), os.O_RDONLY),
        ("shadow", "/etc/shadow", os.O_RDONLY),
        ("passwd_write", "/etc/passwd", os.O_WRONLY | os.O_APPEND),
    ]
    found = _probe_worker(policy, targets)
    status = dict(line.split(":\t", 1) for line in found["status"].splitlines()
                  if ":\t" in line)
    # Who it is: no capability at all, not root, no way to gain privileges, filtered.
    assert status["CapEff"].strip() == "0000000000000000"
    assert status["CapPrm"].strip() == "0000000000000000"
    assert status["CapBnd"].strip() == "0000000000000000"
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"
    assert found["uid"] != 0
    assert found["setuid_root"] == errno.EPERM
    # What it cannot reach: files nobody granted, however they are owned and moded.
    for name, _, _ in targets:
        assert found["open"][name] in (errno.EACCES, errno.EPERM), (name, found["open"])
    assert found["cgroup_procs"], "no memory or pids cgroup to try"
    for path, code in found["cgroup_procs"]:
        assert code in (errno.EACCES, errno.EPERM), (path, code)
    assert found["socket_inet"] == errno.EPERM
    assert found["socket_unix"] == errno.EPERM
    # TIOCSTI with junk in the upper 32 bits is still TIOCSTI to the kernel: refused.
    assert found["tiocsti_high"] == errno.EPERM
    assert found["kill_parent"] == errno.EPERM
    # No secret from the parent's environment.
    assert "planted-secret-value" not in found["environ"]
    assert "AWS_SECRET_ACCESS_KEY" not in found["environ"]


def test_writable_grant_keeps_wasi_semantics_under_a_new_uid(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("data")
    policy = Policy.from_profile("strict").with_capabilities(
        dirs=(DirGrant(host=tmp_path, guest="/data", writable=True),))
    policy = policy.with_limits(max_files=10, disk_quota=1024**2)
    with IsolatedSandbox(policy) as sandbox:
        uid = next(p for p in sandbox.protections() if p.name == "uid")
        result = sandbox.run(guest("probe.wasm"),
                             Invocation(args=("/data/in.txt", "--write", "/data/out.txt")))
    lines = result.stdout.decode().splitlines()
    assert "read /data/in.txt ok" in lines and "write /data/out.txt ok" in lines, lines
    out = tmp_path / "out.txt"
    assert out.read_text() == "x"
    # Files the worker makes belong to the caller, as they would in-process.
    assert out.stat().st_uid == os.geteuid()
    if os.geteuid() == 0:
        assert uid.active, uid.detail


def test_started_frames_do_not_extend_the_deadline(tmp_path: Path) -> None:
    """A worker taken over by its guest answers every request with `started` frames,
    forever: the parent still returns at its own deadline."""
    impostor = tmp_path / "impostor.py"
    impostor.write_text(
        "import os, sys, time, pickle\n"
        "from stockade.isolate.protocol import read_frame, write_frame\n"
        "read_fd, write_fd = int(sys.argv[-4]), int(sys.argv[-3])\n"
        "read_frame(read_fd)\n"
        "write_frame(write_fd, ('ready', {'pid': os.getpid(), 'cpu_used': 0.0,\n"
        "                                 'protections': []}))\n"
        "read_frame(read_fd)\n"
        "while True:\n"
        "    write_frame(write_fd, ('started', {'module': 'x', 'sha256': '',\n"
        "                                       'started': time.time()}))\n"
        "    time.sleep(0.02)\n")
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {impostor} \"$@\"\n")
    python.chmod(0o755)
    policy = Policy.from_profile("strict").with_limits(timeout=1.0)
    config = IsolationConfig(python=str(python), grace=0.5, load_timeout=2.0, cgroup=False)
    results: list[Any] = []
    sandbox = IsolatedSandbox(policy, config=config)
    runner = threading.Thread(target=lambda: results.append(
        sandbox.run(guest("hello.wasm"))), daemon=True)
    began = time.monotonic()
    runner.start()
    runner.join(timeout=30)
    elapsed = time.monotonic() - began
    sandbox.close()
    assert not runner.is_alive(), "the parent kept waiting on a worker's frames"
    assert results and results[0].outcome is Outcome.TIMEOUT
    # At most load_timeout + timeout + grace (3.5 s), with slack for a busy machine.
    assert elapsed < 3.5 * 1.1 + 1.0
