"""The Kubernetes files (`deploy/kubernetes/`) render, validate against the Kubernetes
API schemas, and say only what the gateway really accepts: its CLI flags, ports, probe
paths, environment variables and manifest keys, taken from the code, not restated."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import httpx
import pytest
import yaml

from stockade.gateway.manifest import RESERVED_PATHS, load_manifest

from ..conftest import ROOT
from ..gateway.conftest import Gateway, gateway_env
from .conftest import (
    KUBERNETES,
    OVERLAYS,
    container,
    materialise,
    one,
    redis_backend,
    render,
    secret_env,
    serve_params,
)

kubernetes_validate = pytest.importorskip("kubernetes_validate",
                                          reason="pip install -e '.[dev]' installs it")
jsonschema = pytest.importorskip("jsonschema", reason="pip install -e '.[dev]' installs it")

CONTAINERFILE = ROOT / "deploy" / "Containerfile"
# The version the files are written for (the kubectl here, 1.32, renders them).
KUBERNETES_VERSION = "1.32.0"
CRDS = KUBERNETES / "crds"  # CustomResourceDefinitions of any custom kind used


@pytest.mark.parametrize("directory", OVERLAYS, ids=lambda d: d.name)
def test_every_document_validates_strictly(rendered: dict[Path, list[dict[str, Any]]],
                                           directory: Path) -> None:
    """Built-in kinds against the Kubernetes API schemas, rejecting unknown fields;
    custom kinds against their CRD's openAPIV3Schema (none may go unchecked)."""
    docs = rendered[directory]
    assert docs
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            schema = crd_schema(doc["apiVersion"], doc["kind"])
            jsonschema.validate(doc, schema)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{directory.name}: {where}: {exc}")


def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of the served version of a custom kind, from deploy/kubernetes/crds."""
    group, _, version = api_version.rpartition("/")
    for path in sorted(CRDS.glob("*.yaml")) if CRDS.is_dir() else []:
        for crd in yaml.safe_load_all(path.read_text()):
            spec = crd["spec"]
            if spec["group"] == group and spec["names"]["kind"] == kind:
                for served in spec["versions"]:
                    if served["name"] == version:
                        return served["schema"]["openAPIV3Schema"]  # type: ignore
    pytest.fail(f"{api_version} {kind}: not a built-in kind and no CRD in {CRDS}")



@pytest.mark.parametrize("directory", OVERLAYS, ids=lambda d: d.name)
def test_the_validator_command_accepts_the_rendered_files(tmp_path: Path,
                                                          directory: Path) -> None:
    """The same through `kubernetes-validate --strict`, as an operator would run it."""
    command = Path(sys.executable).with_name("kubernetes-validate")
    if not command.exists():
        pytest.fail(f"{command} missing: pip install -e '.[dev]' installs it")
    rendered_file = tmp_path / "rendered.yaml"
    rendered_file.write_text(yaml.safe_dump_all(render(directory)))
    done = subprocess.run([str(command), "--strict", "-k", KUBERNETES_VERSION,
                           str(rendered_file)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed" in done.stdout and "failed" not in done.stdout


def test_strict_validation_rejects_a_misspelt_field(gateway: dict[str, Any],
                                                    base: list[dict[str, Any]]) -> None:
    """The validator is not a formality: a typo in a probe is an error."""
    deployment = one(base, "Deployment", "stockade-gateway")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    probe = container(broken["spec"]["template"])["readinessProbe"]
    probe["httpget"] = probe.pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError, match="httpget"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_pods_meet_the_restricted_standard(rendered: dict[Path, list[dict[str, Any]]]) -> None:
    """Every pod: non-root, seccomp RuntimeDefault, no privilege escalation, all
    capabilities dropped, a read-only root filesystem, no service account token."""
    pods = [d["spec"]["template"] for docs in rendered.values() for d in docs
            if d["kind"] in ("Deployment", "StatefulSet")]
    assert len(pods) == 3
    for pod in pods:
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for box in spec["containers"]:
            context = box["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    namespace = one(rendered[KUBERNETES], "Namespace", "stockade")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_args_ports_and_probes_match_the_gateway(gateway: dict[str, Any],
                                                 base: list[dict[str, Any]]) -> None:
    """The container's arguments parse with `stockade serve`'s own options; the port they
    name is the container port, the Service's target, the probes' and the scrape port;
    the probes and the scrape path are the gateway's reserved paths."""
    box = container(gateway)
    params = serve_params(box["args"])
    port = params["port"]
    ports = {p["name"]: p["containerPort"] for p in box["ports"]}
    assert ports == {"http": port}
    assert params["host"] == "0.0.0.0", "a pod must listen beyond its loopback"
    annotations = gateway["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics" and "/metrics" in RESERVED_PATHS
    probes = {name: box[name]["httpGet"] for name in
              ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert probe["path"] in RESERVED_PATHS
        assert probe["port"] in ("http", port)
    service = one(base, "Service", "stockade-gateway")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert service["spec"]["selector"].items() <= gateway["metadata"]["labels"].items()


def test_unknown_flags_are_refused_by_the_drift_check() -> None:
    """The check parses with click: a flag `stockade serve` lacks fails it."""
    with pytest.raises(click.NoSuchOption):
        serve_params(["serve", "--listen", "0.0.0.0:8080"])


def test_configmap_manifest_loads_and_fits_the_pod(base: list[dict[str, Any]],
                                                   gateway: dict[str, Any],
                                                   tmp_path: Path) -> None:
    """The ConfigMap's stockade.toml loads with the gateway's own loader, every module
    it names ships beside it, and the SIGTERM drain fits the probes and the termination
    grace period."""
    manifest = load_manifest(materialise(base, gateway, tmp_path))
    for spec in manifest.functions:
        assert spec.module.is_file(), f"{spec.name}: {spec.module} is not in the ConfigMap"
    # kustomize reads only below its directory: the example function is a copy, kept equal.
    assert (KUBERNETES / "config" / "hello.wat").read_bytes() == \
        (ROOT / "examples" / "hello.wat").read_bytes()
    # SIGTERM: /readyz answers 503 while the pod still serves for drain_grace; the
    # readiness probe must see it in that time, and the whole drain fit in the grace.
    server = manifest.server
    readiness = container(gateway)["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= server.drain_grace
    assert server.drain_grace + server.drain_timeout < \
        gateway["spec"]["terminationGracePeriodSeconds"]


def test_environment_is_read_by_the_gateway_and_writable(gateway: dict[str, Any]) -> None:
    """Every variable the pod sets is one the code reads (so a rename fails here), and
    every directory Stockade writes is a writable volume (the root filesystem is not)."""
    box = container(gateway)
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "stockade").rglob("*.py"))
    env = {e["name"]: e.get("value") for e in box["env"]}
    for name in env:
        assert re.search(rf"[\"']{re.escape(name)}[\"']", source), \
            f"{name}: set by the Deployment, read nowhere in src/stockade"
    writable = [m["mountPath"] for m in box["volumeMounts"] if not m.get("readOnly")]
    for name in ("STOCKADE_STATE_DIR", "STOCKADE_CONFIG_DIR", "STOCKADE_CACHE_DIR"):
        assert name in env, f"{name} unset: it would default under the read-only $HOME"
        assert any(env[name].startswith(m + "/") or env[name] == m for m in writable), name
    assert "/tmp" in writable, "the supervisor and workers make temporary directories"


def test_containerfile_matches_the_deployment(gateway: dict[str, Any]) -> None:
    """The image's entrypoint, port, user and directories are those the pod assumes."""
    text = CONTAINERFILE.read_text()
    box = container(gateway)
    assert re.search(r'^ENTRYPOINT \["[^"]*/stockade"\]$', text, re.M)
    [exposed] = re.findall(r"^EXPOSE (\d+)$", text, re.M)
    assert int(exposed) == serve_params(box["args"])["port"]
    [user] = re.findall(r"^USER (\d+):(\d+)$", text, re.M)
    assert tuple(map(int, user)) == (gateway["spec"]["securityContext"]["runAsUser"],
                                     gateway["spec"]["securityContext"]["runAsGroup"])
    env = {e["name"]: e["value"] for e in box["env"] if "value" in e}
    for name in ("STOCKADE_STATE_DIR", "STOCKADE_CONFIG_DIR", "STOCKADE_CACHE_DIR"):
        assert f"{name}={env[name]}" in text


def test_state_backend_is_the_redis_of_the_example(base: list[dict[str, Any]],
                                                   gateway: dict[str, Any],
                                                   tmp_path: Path) -> None:
    """[state] names the Redis Service and port, and the gateway's password variable
    is the Secret key Redis requires."""
    manifest = load_manifest(materialise(base, gateway, tmp_path))
    url = urlsplit(manifest.state.backend)
    service = one(base, "Service", "stockade-redis")
    assert url.hostname == service["metadata"]["name"]
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    redis_box = container(one(base, "StatefulSet", "stockade-redis")["spec"]["template"],
                          "redis")
    redis_password = secret_env(base, redis_box)["REDIS_PASSWORD"]
    assert "$(REDIS_PASSWORD)" in redis_box["args"]
    assert secret_env(base, container(gateway))["STOCKADE_REDIS_PASSWORD"] == redis_password


@pytest.fixture
def served(base: list[dict[str, Any]], gateway: dict[str, Any], tmp_path: Path,
           shared_cache: Path) -> Iterator[Gateway]:
    """`stockade serve` with the container's own arguments and secret variables on the
    ConfigMap's files, its [state] backend a real redis-server with the Secret's password."""
    box = container(gateway)
    manifest = materialise(base, gateway, tmp_path / "pod")
    args = list(box["args"][1:])
    # Gateway() passes --config and --port 0 itself; this machine is shared, so the
    # pod's address becomes loopback and its port a free one.
    for option in ("--config", "--port"):
        at = args.index(option)
        del args[at:at + 2]
    args[args.index("--host") + 1] = "127.0.0.1"
    env = gateway_env(shared_cache, tmp_path / "state")
    with redis_backend(base, box, manifest, tmp_path) as secrets:
        env.update(secrets)
        process = Gateway(manifest, env, tuple(args))
        try:
            yield process
        finally:
            process.stop()


@pytest.mark.slow
def test_the_configmap_manifest_serves_with_the_container_args(served: Gateway) -> None:
    """The real gateway, started as the pod starts it, answers the probes, the scrape
    and the example function (its quota decided in Redis, with the Secret's password:
    `fail_closed` would answer 503 otherwise)."""
    with httpx.Client(base_url=served.url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and "# TYPE" in metrics.text
        hello = client.get("/hello")
        assert hello.status_code == 200, served.log()
        assert "Hello from Stockade!" in hello.text
