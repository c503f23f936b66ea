"""The Kubernetes files as the tests read them: rendered with `kubectl kustomize`, the
gateway's pod and container, the container's arguments parsed by `stockade serve`
itself, the ConfigMap's files on disk, and a real Redis with the Secret's password."""

from __future__ import annotations

import atexit
import base64
import functools
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from stockade.cli import cli as stockade_cli
from stockade.gateway.manifest import load_manifest

from ..conftest import ROOT

KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = (KUBERNETES, KUBERNETES / "wasm")


def kustomize(directory: Path) -> subprocess.CompletedProcess[str]:
    """`kubectl kustomize DIRECTORY` as it ran."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (it renders kustomizations offline)")
    return subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=60)


def deploy_copy(into: Path) -> Path:
    """A copy of deploy/kubernetes under `into`, without any secrets made in the tree
    (`secrets/*.env`): what a fresh clone has."""
    copy = into / "kubernetes"
    shutil.copytree(KUBERNETES, copy, ignore=shutil.ignore_patterns("*.env"))
    return copy


@functools.cache
def _prepared() -> Path:
    """A copy of deploy/kubernetes with its secrets made by its own script, as an
    operator does before the first `kubectl apply -k` (removed at exit)."""
    base = Path(tempfile.mkdtemp(prefix="stockade-deploy-"))
    atexit.register(shutil.rmtree, base, True)
    copy = deploy_copy(base)
    subprocess.run(["sh", str(copy / "make-secrets.sh")], check=True, capture_output=True,
                   timeout=60)
    return copy


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIRECTORY` (a directory under deploy/kubernetes, rendered from
    a copy whose secrets `make-secrets.sh` made), parsed."""
    done = kustomize(_prepared() / directory.relative_to(KUBERNETES))
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[Path, list[dict[str, Any]]]:
    """Every kustomization under deploy/kubernetes, rendered."""
    return {directory: render(directory) for directory in OVERLAYS}


@pytest.fixture(scope="module")
def base(rendered: dict[Path, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The base's objects."""
    return rendered[KUBERNETES]


@pytest.fixture(scope="module")
def gateway(base: list[dict[str, Any]]) -> dict[str, Any]:
    """The gateway Deployment's pod template."""
    return one(base, "Deployment", "stockade-gateway")["spec"]["template"]  # type: ignore


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of `kind` whose name starts with `name` (generated names have a
    hash suffix)."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def container(pod: dict[str, Any], name: str = "gateway") -> dict[str, Any]:
    """The container `name` of a pod template."""
    found = [c for c in pod["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, name
    return found[0]


def serve_params(args: list[str]) -> dict[str, Any]:
    """The container's arguments parsed by the real `stockade serve` command."""
    assert args[0] == "serve", f"the image's entrypoint is `stockade`: args start {args[0]!r}"
    command = stockade_cli.get_command(click.Context(stockade_cli), args[0])
    assert command is not None
    with command.make_context("serve", list(args[1:])) as ctx:
        return dict(ctx.params)


def materialise(base: list[dict[str, Any]], gateway: dict[str, Any], into: Path) -> Path:
    """The ConfigMap's files written where the pod mounts them (under `into`); the path
    of the manifest the container's `--config` names."""
    mounts = {m["name"]: m["mountPath"] for m in container(gateway)["volumeMounts"]}
    volumes = {v["name"]: v for v in gateway["spec"]["volumes"]}
    config_map = one(base, "ConfigMap", "stockade-manifest")
    [name] = [n for n, v in volumes.items()
              if v.get("configMap", {}).get("name") == config_map["metadata"]["name"]]
    directory = into / mounts[name].lstrip("/")
    directory.mkdir(parents=True)
    for key, text in config_map["data"].items():
        (directory / key).write_text(text)
    config = serve_params(container(gateway)["args"])["config"]
    assert str(config).startswith(mounts[name] + "/"), "--config is not in the ConfigMap"
    return into / str(config).lstrip("/")


def secret_env(base: list[dict[str, Any]], box: dict[str, Any]) -> dict[str, str]:
    """The container's variables taken from Secrets, resolved from the rendered Secrets."""
    values = {}
    for var in box["env"]:
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            secret = one(base, "Secret", ref["name"])
            if ref["key"] in secret.get("stringData", {}):
                values[var["name"]] = secret["stringData"][ref["key"]]
            else:  # generated Secrets hold base64 `data`
                values[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return values


@contextmanager
def redis_backend(base: list[dict[str, Any]], box: dict[str, Any], manifest: Path,
                  directory: Path) -> Iterator[dict[str, str]]:
    """A real redis-server requiring the Secret's password, on 127.0.0.1 (the Service's
    name does not resolve here), written into `manifest`'s [state] backend in place of
    the Service; yields the container's secret variables."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is missing: the set-up installs it (Debian redis-server)")
    secrets = secret_env(base, box)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    redis = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                              "--appendonly", "no", "--dir", str(directory),
                              "--requirepass", secrets["STOCKADE_REDIS_PASSWORD"]],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        backend = load_manifest(manifest).state.backend
        text = manifest.read_text()
        manifest.write_text(text.replace(f'"{backend}"', f'"redis://127.0.0.1:{port}/0"'))
        yield secrets
    finally:
        redis.terminate()
        redis.wait(10)
