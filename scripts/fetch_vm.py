"""Fetch the VM backend's kernel and busybox from Debian into build/vm/ (never committed).

`stockade bench`'s VM rows boot Debian's own kernel (the package `linux-image-amd64`
depends on) with an initramfs the benchmark writes around `busybox-static`. The packages
are downloaded and unpacked here, not installed: the machine's own kernel and boot files
stay untouched.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "vm"


def _run(cmd: list[str], cwd: Path) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"fetch_vm: {' '.join(cmd)} failed: {done.stderr.strip()[-300:]}")
    return done.stdout


def _kernel_package(tmp: Path) -> str:
    known = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], cwd=tmp,
                           capture_output=True, text=True)
    if known.returncode != 0 or "Depends" not in known.stdout:
        _run(["apt-get", "update", "-qq"], tmp)  # a fresh machine may have no package lists
    for line in _run(["apt-cache", "depends", "linux-image-amd64"], tmp).splitlines():
        name = line.strip().removeprefix("Depends:").strip()
        if name.startswith("linux-image-") and name != "linux-image-amd64":
            return name
    sys.exit("fetch_vm: apt-cache knows no linux-image-amd64 (run apt-get update)")


def main() -> None:
    if (OUT / "vmlinuz").exists() and (OUT / "busybox").exists():
        print(f"fetch_vm: up to date in {OUT.relative_to(ROOT)}")
        return
    if shutil.which("apt-get") is None:
        sys.exit("fetch_vm: needs Debian's apt-get to download the kernel and busybox")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        tmp.chmod(0o755)  # apt's download user must be able to write here
        kernel = _kernel_package(tmp)
        _run(["apt-get", "download", "-q", kernel, "busybox-static"], tmp)
        for deb in tmp.glob("*.deb"):
            _run(["dpkg-deb", "-x", str(deb), "root"], tmp)
        vmlinuz = next((tmp / "root" / "boot").glob("vmlinuz-*"))
        for source, target in ((vmlinuz, "vmlinuz"), (tmp / "root/bin/busybox", "busybox")):
            partial = OUT / f".{target}.part"
            shutil.copyfile(source, partial)
            partial.chmod(0o755)
            partial.rename(OUT / target)
        print(f"fetch_vm: {vmlinuz.name} and busybox in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
