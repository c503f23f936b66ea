"""The container backend: the static native binaries in an OCI bundle run by `crun`.

The benchmark builds the root filesystem itself (the binaries in `/bin`, empty `/proc`,
`/dev`, `/tmp`). Cgroups: on a host with hybrid cgroups (v1 controllers plus a v2 tree at
`/sys/fs/cgroup/unified`) crun refuses to start; the agent running this host is started
under `unshare -m` (a private mount namespace), detaches that v2 mount there only, and runs
`crun --cgroup-manager=disabled`. Containers still get pid, network, ipc, uts and mount
namespaces; they get no cgroup limits.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ...rmtree import remove_tree
from .base import Host, HostUnavailable, Layout, Request, Sample
from .process import LAUNCHER, measure_process

__all__ = ["ContainerHost", "build_rootfs", "HYBRID_MOUNT"]

HYBRID_MOUNT = Path("/sys/fs/cgroup/unified")
_MNT_DETACH = 2
_GUESTS = ("noop", "compute", "echo", "micro")


def build_rootfs(layout: Layout, root: Path) -> Path:
    """Create the container root filesystem under `root` from the native binaries."""
    failure = remove_tree(root)
    if failure is not None:
        raise HostUnavailable(f"cannot replace the container root: {failure}")
    for sub in ("bin", "proc", "dev", "tmp", "sys"):
        (root / sub).mkdir(parents=True)
    for guest in _GUESTS:
        shutil.copy2(layout.native(guest), root / "bin" / guest)
    return root


def _detach_hybrid_mount() -> None:
    """Detach the cgroup v2 mount in this (private) mount namespace, if hybrid."""
    if not os.path.ismount(HYBRID_MOUNT):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(str(HYBRID_MOUNT).encode(), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise HostUnavailable(f"cannot detach {HYBRID_MOUNT}: {os.strerror(err)}")


class ContainerHost(Host):
    """Runs each request as `crun run` of a bundle whose process is the guest binary.

    Options: `crun` (executable), `workdir` (bundles, state and the root filesystem).
    Raises HostUnavailable when crun is missing or a trial container fails.
    """

    def __init__(self, layout: Layout, options: dict[str, Any]) -> None:
        super().__init__(layout, options)
        crun = shutil.which(str(options.get("crun", "crun")))
        if crun is None:
            raise HostUnavailable("crun is not installed (apt-get install crun)")
        self.crun = crun
        self.workdir = Path(options["workdir"])
        self.rootfs = build_rootfs(layout, self.workdir / "rootfs")
        self.state = self.workdir / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        self.template = self._spec_template()
        self.bundles: dict[tuple[str, ...], Path] = {}
        self.ids = itertools.count()
        _detach_hybrid_mount()
        trial = self.run(Request(guest="noop"))
        if not trial.ok:
            raise HostUnavailable(f"crun cannot start a container here: {trial.error}")

    def _spec_template(self) -> dict[str, Any]:
        spec_dir = self.workdir / "spec"
        spec_dir.mkdir(parents=True, exist_ok=True)
        (spec_dir / "config.json").unlink(missing_ok=True)  # crun spec will not overwrite
        made = subprocess.run([self.crun, "spec"], cwd=spec_dir, capture_output=True, text=True)
        if made.returncode != 0:
            raise HostUnavailable(f"crun spec failed: {made.stderr.strip()}")
        spec: dict[str, Any] = json.loads((spec_dir / "config.json").read_text())
        spec["process"]["terminal"] = False
        spec["root"] = {"path": str(self.rootfs), "readonly": True}
        # No cgroup filesystem inside: cgroups are disabled for these containers.
        spec["mounts"] = [m for m in spec["mounts"] if m["destination"] != "/sys/fs/cgroup"]
        return spec

    def bundle(self, request: Request) -> Path:
        """A bundle directory whose config runs `request` (one per distinct argv)."""
        argv = (f"/bin/{request.guest}", *request.args)
        found = self.bundles.get(argv)
        if found is None:
            found = self.workdir / f"bundle-{len(self.bundles)}"
            found.mkdir(parents=True, exist_ok=True)
            spec = json.loads(json.dumps(self.template))
            spec["process"]["args"] = list(argv)
            (found / "config.json").write_text(json.dumps(spec))
            self.bundles[argv] = found
        return found

    def run(self, request: Request) -> Sample:
        """`crun run` one container; the clock covers create, start, run and delete."""
        if request.guest not in _GUESTS:
            return Sample(wall_ms=0.0, ok=False, error=f"no {request.guest} in the rootfs")
        bundle = self.bundle(request)
        name = f"bench-{os.getpid()}-{next(self.ids)}"
        cmd = [self.crun, "--cgroup-manager=disabled", "--root", str(self.state), "run",
               "--bundle", str(bundle), name]
        return measure_process(cmd, request.stdin,
                               launcher=self.layout.native(LAUNCHER)).sample

    def artifacts(self) -> dict[str, int]:
        """Size of the container root filesystem."""
        total = sum(p.stat().st_size for p in self.rootfs.rglob("*") if p.is_file())
        return {"container rootfs": total}
