"""The gateway image, built for real with `deploy/build-image.sh` (mmdebstrap + buildah,
no container registry), run as the Deployment runs it: the pod's uid, no capabilities,
`no_new_privs`, a read-only root filesystem with tmpfs where the pod has emptyDirs, the
image's environment plus the Deployment's, the ConfigMap's files, the container's args."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import ROOT
from ..gateway.conftest import Gateway
from .conftest import container, materialise, redis_backend

pytestmark = pytest.mark.slow

TAG = "localhost/stockade-gateway:test"
BUILD_TIMEOUT = 1200  # seconds: a Debian base, apt and pip from their registries


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built (again: layers are cached) from this checkout."""
    if os.geteuid() != 0:
        pytest.skip("building and running the image here needs root (buildah, mounts)")
    for tool in ("buildah", "mmdebstrap", "unshare", "setpriv"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: the set-up installs it (make system)")
    done = subprocess.run([str(ROOT / "deploy" / "build-image.sh"), TAG], capture_output=True,
                          text=True, timeout=BUILD_TIMEOUT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return TAG


def image_env(tag: str) -> dict[str, str]:
    """The image's configured environment."""
    config = json.loads(subprocess.run(["buildah", "inspect", "--type", "image", tag],
                                       capture_output=True, text=True, check=True).stdout)
    return dict(item.split("=", 1) for item in config["OCIv1"]["config"]["Env"])


@pytest.fixture
def pod(image: str, base: list[dict[str, Any]], gateway: dict[str, Any],
        tmp_path: Path) -> Iterator[Gateway]:
    """The image's root filesystem, mounted read-only in a private mount namespace, with
    the pod's volumes, running the container's command as the pod's user."""
    box = container(gateway)
    ctr = subprocess.run(["buildah", "from", image], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        root = subprocess.run(["buildah", "mount", ctr], capture_output=True, text=True,
                              check=True).stdout.strip()
        manifest = materialise(base, gateway, tmp_path / "pod")
        with redis_backend(base, box, manifest, tmp_path) as secrets:
            env = image_env(image)
            env.update({e["name"]: e["value"] for e in box["env"] if "value" in e}, **secrets)
            script = tmp_path / "pod.sh"
            script.write_text(pod_script(root, tmp_path / "pod", gateway, env))
            process = PodGateway(script)
            try:
                yield process
            finally:
                process.stop()
    finally:
        subprocess.run(["buildah", "umount", ctr], capture_output=True)
        subprocess.run(["buildah", "rm", ctr], capture_output=True)


def pod_script(root: str, files: Path, gateway: dict[str, Any], env: dict[str, str]) -> str:
    """A shell script for a private mount namespace: the image's root read-only, tmpfs
    on the pod's writable volumes, the ConfigMap's files (under `files`) read-only where
    the pod mounts them, then the container's command as the pod's user, without
    capabilities, with `no_new_privs`, on 127.0.0.1 and a free port."""
    box = container(gateway)
    context = gateway["spec"]["securityContext"]
    uid, gid = context["runAsUser"], context["runAsGroup"]
    args = list(box["args"])
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = "0"
    q = shlex.quote
    lines = ["set -e", f"root={q(root)}",
             'mount --bind "$root" "$root"', 'mount -o remount,bind,ro "$root"',
             'mount -t proc proc "$root/proc"', 'mount --rbind /dev "$root/dev"']
    for mount in box["volumeMounts"]:
        path = mount["mountPath"]
        if (files / path.lstrip("/")).is_dir():  # the ConfigMap
            lines += [f'mount --bind {q(str(files / path.lstrip("/")))} "$root{path}"',
                      f'mount -o remount,bind,ro "$root{path}"']
        elif not mount.get("readOnly"):  # an emptyDir (Secrets reach it as variables)
            lines.append(f'mount -t tmpfs -o mode=0700,uid={uid},gid={gid} tmpfs '
                         f'"$root{path}"')
    variables = " ".join(q(f"{k}={v}") for k, v in env.items())
    command = " ".join(q(a) for a in ["/opt/stockade/bin/stockade", *args])
    lines.append(f'exec chroot "$root" env -i {variables} setpriv --reuid={uid} '
                 f"--regid={gid} --clear-groups --inh-caps=-all --bounding-set=-all "
                 f"--no-new-privs {command}")
    return "\n".join(lines) + "\n"


class PodGateway(Gateway):
    """A running pod script (it execs into `stockade serve`): `url`, `log()`, `stop()`."""

    def __init__(self, script: Path) -> None:
        self.manifest = script
        self.process = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh",
                                         str(script)], stderr=subprocess.PIPE)
        self.lines = []
        self.url = self._wait_for_url()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.client = httpx.Client(base_url=self.url, timeout=30.0)


def test_the_image_serves_as_the_pod_runs_it(pod: Gateway, gateway: dict[str, Any]) -> None:
    """Probes, scrape and the example function answer (its quota in Redis); the process
    is the pod's user, without capabilities, with `no_new_privs`."""
    with httpx.Client(base_url=pod.url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 200
        hello = client.get("/hello")
        assert hello.status_code == 200, pod.log()
        assert "Hello from Stockade!" in hello.text
    status = Path(f"/proc/{pod.process.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    assert int(fields["Uid"].split()[0]) == gateway["spec"]["securityContext"]["runAsUser"]
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"
