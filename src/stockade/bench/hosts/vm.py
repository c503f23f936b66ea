"""The VM backend: the static native binaries inside a QEMU `microvm`.

The benchmark makes the whole guest itself: Debian's kernel (`build/vm/vmlinuz`, see
`scripts/fetch_vm.py`) and an initramfs written here (busybox, the bench binaries and an
`/init`), no disk. Two modes:

- `boot`: one VM per request; its init runs the program named on the kernel command line
  and powers off. `first_ms` is boot to the program's first output.
- `warm`: one VM for the whole run; its init reads `SIZE PROGRAM ARGS` lines on the serial
  console, feeds the next SIZE bytes to the program and frames its output, so a request
  measures the program inside an already-running VM.

KVM is used only on bare metal: on a host that is itself a VM (the `hypervisor` CPU flag)
nested KVM is unreliable (seen stalling at early boot here), so TCG emulation runs
instead, and its figures are emulation's, not a VM's cost on real hardware. Under TCG
the guest clock follows the instruction count (`-icount shift=auto`): without it a
loaded host stalled the kernel's timer calibration at boot.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import selectors
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..guestio import fingerprint
from .base import Host, HostUnavailable, Layout, Request, Sample
from .process import LAUNCHER, Launched, launch

__all__ = ["VmHost", "choose_accel", "write_initramfs", "VM_DIR"]

VM_DIR = Path("build") / "vm"
_GUESTS = ("noop", "compute", "echo", "micro")
_READY, _OUT, _ERR, _END = b"@@ready\n", b"@@out\n", b"@@err\n", b"@@end "
_BOOT_TIMEOUT = 120.0
_PR_SET_PDEATHSIG = 1
# The serial console moves about 30 KiB/s under TCG: larger payloads are not measured.
MAX_PAYLOAD = 64 * 1024
# The program's stderr goes to a file shown after its stdout: the console carries both.
_INIT_BOOT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox stty raw -echo
echo "@@out"
/bin/"$@" </dev/null 2>/tmp/err
code=$?
echo "@@err"
/bin/busybox cat /tmp/err
echo "@@end $code"
/bin/busybox poweroff -f
"""
_INIT_WARM = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox stty raw -echo
echo "@@ready"
while read -r size program args; do
  echo "@@out"
  if [ "$size" -gt 0 ]; then
    /bin/busybox head -c "$size" | /bin/"$program" $args 2>/tmp/err
  else
    /bin/"$program" $args </dev/null 2>/tmp/err
  fi
  code=$?
  echo "@@err"
  /bin/busybox cat /tmp/err
  echo "@@end $code"
done
/bin/busybox poweroff -f
"""


def choose_accel(requested: str | None = None) -> str:
    """`kvm` on bare metal with a usable /dev/kvm, `tcg` otherwise (or as `requested`)."""
    if requested in ("kvm", "tcg"):
        return requested
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    nested = " hypervisor" in flags
    if not nested and os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "kvm"
    return "tcg"


def _newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A `newc` cpio archive (what the kernel unpacks as an initramfs)."""
    out = bytearray()
    for inode, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], 1):
        encoded = name.encode() + b"\0"
        fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + "".join(f"{value:08x}" for value in fields).encode() + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def write_initramfs(target: Path, busybox: Path, programs: dict[str, Path], init: str) -> Path:
    """Write a gzip initramfs holding busybox, `programs` (name -> binary) and `init`."""
    directory, executable = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o755
    entries = [("bin", directory, b""), ("proc", directory, b""), ("dev", directory, b""),
               ("tmp", stat.S_IFDIR | 0o1777, b""),
               ("init", executable, init.encode()),
               ("bin/busybox", executable, busybox.read_bytes())]
    entries += [(f"bin/{name}", executable, path.read_bytes()) for name, path in
                programs.items()]
    target.write_bytes(gzip.compress(_newc(entries), compresslevel=1, mtime=0))
    return target


class VmHost(Host):
    """Runs requests in QEMU microVMs. Options: `mode` (boot or warm), `workdir`, `vm_dir`
    (vmlinuz and busybox), `accel` (kvm, tcg or None to choose), `memory_mib`.
    Raises HostUnavailable when QEMU, the kernel or a trial boot fails."""

    def __init__(self, layout: Layout, options: dict[str, Any]) -> None:
        super().__init__(layout, options)
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is None:
            raise HostUnavailable("qemu-system-x86_64 is not installed "
                                  "(apt-get install qemu-system-x86)")
        vm_dir = Path(options.get("vm_dir") or VM_DIR)
        kernel, busybox = vm_dir / "vmlinuz", vm_dir / "busybox"
        if not kernel.exists() or not busybox.exists():
            raise HostUnavailable(f"no kernel or busybox in {vm_dir} "
                                  "(run: python scripts/fetch_vm.py)")
        self.launcher = layout.native(LAUNCHER)
        if not self.launcher.is_file():
            raise HostUnavailable(f"no launcher {self.launcher} (run: python "
                                  "scripts/build_guests.py)")
        self.mode = str(options.get("mode", "boot"))
        self.accel = choose_accel(options.get("accel"))
        workdir = Path(options["workdir"])
        workdir.mkdir(parents=True, exist_ok=True)
        programs = {name: layout.native(name) for name in _GUESTS}
        init = _INIT_WARM if self.mode == "warm" else _INIT_BOOT
        self.initrd = write_initramfs(workdir / f"initramfs-{self.mode}.gz", busybox, programs,
                                      init)
        # TCG: guest time from the instruction count, so a loaded host slows the boot
        # down instead of stalling the kernel's timer calibration (seen here under load).
        accel = ["-cpu", "host"] if self.accel == "kvm" else \
            ["-cpu", "max", "-icount", "shift=auto,sleep=off"]
        self.command = [
            qemu, "-machine", f"microvm,accel={self.accel}", *accel,
            "-m", str(options.get("memory_mib", 256)), "-smp", "1", "-nodefaults",
            "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
            "-kernel", str(kernel), "-initrd", str(self.initrd),
        ]
        self.append = "console=ttyS0 quiet panic=-1 rdinit=/init"
        self.vm: subprocess.Popen[bytes] | None = None
        self.buffer = b""
        if self.mode == "warm":
            self._boot_warm()
        else:
            trial = self.run(Request(guest="noop"))
            if not trial.ok:
                raise HostUnavailable(f"a {self.accel} microVM did not boot: {trial.error}")

    # -- boot: one VM per request -------------------------------------------------------

    def _run_boot(self, request: Request) -> Sample:
        if request.stdin:
            return Sample(wall_ms=0.0, ok=False, error="boot mode takes no stdin payload")
        argv = " ".join((request.guest, *request.args))
        # Through the launcher: its report is QEMU's own peak RSS, not this agent's
        # (see hosts/process.py), and QEMU dies with this agent.
        started = time.perf_counter()
        run = launch([*self.command, "-append", f"{self.append} -- {argv}"], self.launcher,
                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL)
        try:
            raw, first = _collect(run, started + _BOOT_TIMEOUT)
        except BaseException:  # interrupted: leave no VM running
            run.kill()
            with contextlib.suppress(OSError):
                run.finish()
            if run.proc.stdout is not None:
                run.proc.stdout.close()
            raise
        usage = run.finish()
        if usage is None:
            wall = (time.perf_counter() - started) * 1000.0
            return Sample(wall_ms=wall, ok=False, error=f"killed after {_BOOT_TIMEOUT:g} s")
        wall = (usage.reaped - usage.forked) * 1000.0
        return _sample(raw, None if first is None else min(first, usage.reaped), usage.forked,
                       wall, usage.rss_kb, usage.cpu_ms)

    # -- warm: one VM, requests over the serial console ---------------------------------

    def _boot_warm(self) -> None:
        # QEMU dies with this agent, however the agent ends (SIGKILL included).
        self.vm = subprocess.Popen([*self.command, "-append", self.append],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL,
                                   preexec_fn=_die_with_parent(os.getpid()))
        try:
            self._until(_READY, time.perf_counter() + _BOOT_TIMEOUT)
        except HostUnavailable:
            self.close()
            raise

    def _until(self, marker: bytes, deadline: float) -> bytes:
        """Read the console up to and including `marker`; return what came before it."""
        assert self.vm is not None and self.vm.stdout is not None
        while marker not in self.buffer:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise HostUnavailable(f"the VM did not answer {marker!r} in time")
            ready, _, _ = _select(self.vm.stdout.fileno(), remaining)
            if not ready:
                continue
            chunk = os.read(self.vm.stdout.fileno(), 1 << 16)
            if not chunk:
                raise HostUnavailable("the VM exited")
            self.buffer += chunk
        before, _, self.buffer = self.buffer.partition(marker)
        return before

    def _run_warm(self, request: Request) -> Sample:
        if self.vm is None or self.vm.stdin is None:
            return Sample(wall_ms=0.0, ok=False, error="the VM is not running")
        payload = request.payload()
        if len(payload) > MAX_PAYLOAD:
            return Sample(wall_ms=0.0, ok=False, error=f"payloads over {MAX_PAYLOAD >> 10} KiB "
                          "are not sent over the VM's serial console (too slow to measure)")
        line = " ".join((str(len(payload)), request.guest, *request.args)).encode() + b"\n"
        started = time.perf_counter()
        deadline = started + _BOOT_TIMEOUT
        try:
            self.vm.stdin.write(line + payload)
            self.vm.stdin.flush()
            self._until(_OUT, deadline)
            stdout = self._until(_ERR, deadline)
            stderr = self._until(_END, deadline)
            code = self._until(b"\n", deadline)
        except (HostUnavailable, OSError) as exc:
            return Sample(wall_ms=0.0, ok=False, error=str(exc))
        wall = (time.perf_counter() - started) * 1000.0
        digest, hot = fingerprint(stdout, stderr)
        ok = code.strip() == b"0"
        return Sample(wall_ms=wall, rss_kb=_rss_kb(self.vm.pid), hot_ns=hot, digest=digest,
                      ok=ok, error="" if ok else f"exit {code.decode(errors='replace')}")

    def run(self, request: Request) -> Sample:
        """Run one request in a new VM (boot mode) or in the running one (warm mode)."""
        if request.guest not in _GUESTS:
            return Sample(wall_ms=0.0, ok=False, error=f"no {request.guest} in the initramfs")
        return self._run_warm(request) if self.mode == "warm" else self._run_boot(request)

    def artifacts(self) -> dict[str, int]:
        """Sizes of the VM's kernel and initramfs."""
        kernel = Path(self.command[self.command.index("-kernel") + 1])
        return {"vm kernel (vmlinuz)": kernel.stat().st_size,
                f"vm initramfs ({self.mode})": self.initrd.stat().st_size}

    def close(self) -> None:
        """Stop the warm VM. Safe to call twice."""
        if self.vm is not None:
            self.vm.kill()
            self.vm.wait()
            for pipe in (self.vm.stdin, self.vm.stdout):
                if pipe is not None:
                    pipe.close()
            self.vm = None


def _select(fd: int, timeout: float) -> tuple[list[Any], list[Any], list[Any]]:
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        events = selector.select(timeout)
    return [key for key, _ in events], [], []


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A `preexec_fn` that has the child killed when `parent` (this thread) ends."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arrange() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent ended before the line above
            os._exit(1)

    return arrange


def _collect(run: Launched, deadline: float) -> tuple[bytes, float | None]:
    """Everything a boot-mode VM printed, and when the program's output began."""
    proc = run.proc
    assert proc.stdout is not None
    raw, first = b"", None
    fd = proc.stdout.fileno()
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            run.kill()
            break
        ready, _, _ = _select(fd, remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        raw += chunk
        if first is None and _OUT in raw:
            first = time.perf_counter()
    proc.stdout.close()
    return raw, first


def _sample(raw: bytes, first: float | None, started: float, wall: float, rss_kb: int,
            cpu_ms: float) -> Sample:
    _, found, rest = raw.partition(_OUT)
    stdout, _, rest = rest.partition(_ERR)
    stderr, ended, tail = rest.partition(_END)
    if not found or not ended:
        text = raw[-300:].decode("utf-8", "replace").strip()
        return Sample(wall_ms=wall, ok=False, error=f"no program output: {text}")
    digest, hot = fingerprint(stdout, stderr)
    code = tail.split(b"\n", 1)[0].strip()
    ok = code == b"0"
    return Sample(wall_ms=wall, first_ms=None if first is None else (first - started) * 1000.0,
                  cpu_ms=cpu_ms, rss_kb=rss_kb, hot_ns=hot, digest=digest, ok=ok,
                  error="" if ok else f"exit {code.decode(errors='replace')}")


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
