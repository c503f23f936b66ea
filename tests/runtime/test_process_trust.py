"""stockade-runtime under a host policy requiring signatures: the bundle's process
(`process.args` after the module, `process.env`, `process.cwd`) comes from config.json,
which no module signature covers. A signed interpreter re-wrapped in an unsigned image
whose `Cmd` carried other code ran that code. The runtime cannot tell the image's
process from the caller's, nor whether an image signature covered it, so a process that
passes the guest anything beyond what the container engines set on their own is denied
(container exit 126, one line, audit record); a signed module whose process is its
module alone runs, under containerd and Podman."""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.rmtree import remove_tree
from stockade.trust import sign_module
from stockade.trust.keys import SecretKey

from ..conftest import guest
from ..oci.fixtures import Registry, cli, stockade_env
from .conftest import Containerd
from .direct import RUNTIME, create, runtime, wait_gone
from .test_podman import Podman

SIGNER = SecretKey(bytes(range(32)))
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ids = itertools.count()


def _signed_probe(base: Path) -> Path:
    signed = base / "probe.signed.wasm"
    signed.write_bytes(sign_module(guest("probe.wasm").read_bytes(), SIGNER).module)
    return signed


def _trust_policy(base: Path) -> Path:
    (base / "signer.pub").write_bytes(SIGNER.public.pem())
    policy = base / "runtime.toml"
    policy.write_text(f'[trust]\nrequire_signature = true\nkeys = ["{base}/signer.pub"]\n')
    return policy


def _denials(state: Path) -> list[dict[str, object]]:
    audit = state / "audit.jsonl"
    records = [json.loads(line) for line in audit.read_text().splitlines()] \
        if audit.exists() else []
    return [r for r in records if r.get("kind") == "denial"]


def _bundle(tmp_path: Path, args: list[str], env: list[str], cwd: str) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "rootfs" / "probe.wasm").write_bytes(_signed_probe(tmp_path).read_bytes())
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["/probe.wasm", *args], "env": env, "cwd": cwd}}))
    return bundle


def _started(tmp_path: Path, bundle: Path) -> tuple[str, str, dict[str, str]]:
    """(the container's stdout, its stderr, the runtime's environment) of `bundle` run
    by `create` and `start` under the trust policy."""
    env = stockade_env(tmp_path / "cache", tmp_path / "state")
    env["STOCKADE_RUNTIME_POLICY"] = str(_trust_policy(tmp_path))
    created = create(tmp_path, env, bundle)
    assert created.returncode == 0 and created.pid is not None, created.errors.read_text()
    assert runtime(tmp_path, env, "start", "c1").returncode == 0
    wait_gone(created.pid)
    assert runtime(tmp_path, env, "delete", "c1").returncode == 0
    return created.output.read_text(), created.errors.read_text(), env


def test_a_bundle_process_beyond_the_module_is_denied(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, ["/attacker-chosen"], [DEFAULT_PATH, "INJECTED=1"], "/srv")
    output, errors, _ = _started(tmp_path, bundle)
    assert "attacker-chosen" not in output and "INJECTED" not in output, output
    [line] = errors.strip().splitlines()
    assert line.startswith("stockade-runtime: denied: "), line
    for words in ("process.args", "process.env INJECTED", "process.cwd /srv",
                  "not covered by a signature"):
        assert words in line, line
    assert "PATH" not in line, line  # the engines' own default names no image's choice
    [denial] = _denials(tmp_path / "state")
    assert denial["outcome"] == "denied" and "process.args" in str(denial["message"])


def test_the_engines_own_environment_passes(tmp_path: Path) -> None:
    """What containerd and Podman set on their own (`PATH`'s default, Podman's
    `container`, `TERM`, `HOSTNAME`; `cwd` at the root) and Kubernetes' service links
    are no process of the image's."""
    engine = [DEFAULT_PATH, "TERM=xterm", "container=podman", "HOSTNAME=0123456789ab",
              "KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_PORT=tcp://10.96.0.1:443"]
    output, errors, _ = _started(tmp_path, _bundle(tmp_path, [], engine, "/"))
    assert "env container=podman" in output and "env HOSTNAME=0123456789ab" in output, \
        output + errors
    assert "denied" not in errors and not _denials(tmp_path / "state"), errors


@pytest.mark.parametrize(("args", "env", "cwd", "refused"), [
    ([], [DEFAULT_PATH, "KUBERNETES_SERVICE_PORT=443", "DB_PORT_5432_TCP_ADDR=fd00::1"], "/",
     None),
    ([], ["PATH=/attacker/bin"], "/", "process.env PATH"),
    ([], ["TERM=xterm; rm -rf /"], "/", "process.env TERM"),
    ([], ["KUBERNETES_SERVICE_HOST=$(code)"], "/", "process.env KUBERNETES_SERVICE_HOST"),
    ([], [f"V{n}=1" for n in range(6)], "/", "process.env V0 V1 V2 V3 and 2 more"),
    ([], [DEFAULT_PATH], "/app", "process.cwd /app"),
    (["-c", "code"], [], "/", "config.json sets process.args, not covered"),
])
def test_what_the_refusal_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                args: list[str], env: list[str], cwd: str,
                                refused: str | None) -> None:
    from stockade.runtime.bundle import read_bundle
    from stockade.runtime.process import unsigned_process

    monkeypatch.setenv("STOCKADE_RUNTIME_POLICY", str(_trust_policy(tmp_path)))
    with read_bundle(_bundle(tmp_path, args, env, cwd)) as bundle:
        refusal = unsigned_process(bundle)
    if refused is None:
        assert refusal is None, refusal
    else:
        assert refusal is not None and refused in refusal, refusal
        assert "\n" not in refusal
    monkeypatch.delenv("STOCKADE_RUNTIME_POLICY")  # no host trust: the process is the bundle's
    with read_bundle(_bundle(tmp_path / "free", args, env, cwd)) as bundle:
        assert unsigned_process(bundle) is None


@pytest.fixture(scope="module")
def images(registry: Registry, tmp_path_factory: pytest.TempPathFactory,
           ) -> tuple[dict[str, str], Path, dict[str, str]]:
    """(image refs: a signed probe re-wrapped with a `Cmd` and `Env`, and the same probe
    alone; the trust policy; the environment that built them)."""
    base = tmp_path_factory.mktemp("process-trust")
    env = stockade_env(base / "cache", base / "state", registry)
    signed = _signed_probe(base)
    refs = {}
    for name, process in (("rewrapped", ("--arg", "/attacker-chosen", "--env", "INJECTED=1")),
                          ("plain", ())):
        ref = f"{registry.host}/runtime-process-{name}:1"
        built = cli(env, "oci", "build", str(signed), "--tag", ref, "--format", "image",
                    *process)
        assert built.returncode == 0, built.stderr
        assert cli(env, "oci", "push", ref).returncode == 0
        refs[name] = ref
    return refs, _trust_policy(base), env


def test_containerd_denies_an_unsigned_image_process(
        containerd: Containerd, images: tuple[dict[str, str], Path, dict[str, str]],
        tmp_path: Path) -> None:
    refs, policy, _ = images
    wrapper = tmp_path / "stockade-runtime-trusted"
    wrapper.write_text(f"#!/bin/sh\nSTOCKADE_RUNTIME_POLICY={policy} exec {RUNTIME} \"$@\"\n")
    wrapper.chmod(0o755)
    for ref in refs.values():
        pulled = containerd.ctr("images", "pull", "--plain-http", "--platform", "wasi/wasm", ref)
        assert pulled.returncode == 0, pulled.stderr

    def ctr_run(ref: str, *extra: str) -> tuple[int, str, str]:
        done = containerd.ctr("run", "--rm", "--snapshotter", "native", "--platform",
                              "wasi/wasm", "--runc-binary", str(wrapper), ref,
                              f"stockade-process-{next(_ids)}", *extra)
        return done.returncode, done.stdout, done.stderr

    code, output, errors = ctr_run(refs["rewrapped"])
    assert code == 126, output + errors
    assert "attacker-chosen" not in output and "INJECTED" not in output, output
    [line] = [text for text in errors.splitlines() if "stockade-runtime" in text]
    for words in ("denied", "process.args", "process.env INJECTED", "stockade-runtime "
                  "cannot tell"):
        assert words in line, line
    assert '"denied"' in (containerd.telemetry / "audit.jsonl").read_text()

    code, output, errors = ctr_run(refs["plain"])
    assert code == 0, output + errors
    assert "env PATH=" in output, output
    # The caller's arguments are config.json's too: the runtime cannot tell them apart.
    code, output, errors = ctr_run(refs["plain"], "/probe.signed.wasm", "/mine")
    assert code == 126 and "read /mine" not in output, output + errors


@pytest.fixture
def podman_run() -> Iterator[Path]:
    """A run root for Podman (it refuses one longer than 50 characters)."""
    run = Path(tempfile.mkdtemp(prefix="podman-run-", dir="/tmp"))
    yield run
    remove_tree(run)


def test_podman_denies_an_unsigned_image_process(
        images: tuple[dict[str, str], Path, dict[str, str]], tmp_path: Path,
        podman_run: Path) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("Podman runs here only as root (unshare -m, umount); this run is not")
    refs, policy, env = images
    podman = Podman(tmp_path, {**env, "STOCKADE_STATE_DIR": str(tmp_path / "state"),
                               "STOCKADE_CACHE_DIR": str(tmp_path / "cache")},
                    podman_run, policy)
    done = podman.run(refs["plain"])
    assert done.returncode == 0, done.stderr
    assert "env container=podman" in done.stdout, done.stdout
    refused = podman.run(refs["rewrapped"])
    assert refused.returncode == 126, refused.stdout + refused.stderr
    assert "attacker-chosen" not in refused.stdout
    assert "process.env INJECTED" in refused.stderr, refused.stderr
    assert _denials(tmp_path / "state"), "no audit record"


def test_the_image_files_are_not_the_guests_under_a_signature_requiring_host(
        tmp_path: Path) -> None:
    """The process check left the rootfs at `/`, which no signature covers: a signed
    python.wasm given only an empty `/pyvenv.cfg` and a `.pth` file beside it ran the
    image's code. The module is still read from the rootfs; its other files are not
    granted (the signed lister finds no `/d`)."""
    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "d").mkdir(parents=True)
    (bundle / "rootfs" / "d" / "planted").write_text("the image's, unsigned\n")
    signed = sign_module(guest("readdir_list.wasm").read_bytes(), SIGNER).module
    (bundle / "rootfs" / "lister.wasm").write_bytes(signed)
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["/lister.wasm"], "env": [DEFAULT_PATH], "cwd": "/"}}))
    output, errors, _ = _started(tmp_path, bundle)
    assert "planted" not in output, output
    assert "opendir" in errors, output + errors  # it ran, and found nothing at /d
    assert not _denials(tmp_path / "state"), errors


@pytest.mark.parametrize("source", ["rootfs", "rootfs/lib", "."])
def test_a_mount_showing_the_rootfs_is_refused_under_a_signature_requiring_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """A read-only bind mount from inside the bundle passed unchecked, and one of the
    rootfs (or of a folder in it, or of the bundle holding it) put back at `/` the files
    no signature covers, which the rootfs itself no longer is."""
    from stockade.runtime.bundle import UnsupportedBundle, read_bundle

    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "lib").mkdir(parents=True)
    (bundle / "rootfs" / "pyvenv.cfg").write_text("")
    signed = sign_module(guest("hello.wasm").read_bytes(), SIGNER).module
    (bundle / "rootfs" / "hello.wasm").write_bytes(signed)
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["/hello.wasm"], "env": [DEFAULT_PATH], "cwd": "/"},
        "mounts": [{"type": "bind", "source": str(bundle / source), "destination": "/",
                    "options": ["rbind", "ro"]}]}))
    monkeypatch.setenv("STOCKADE_RUNTIME_POLICY", str(_trust_policy(tmp_path)))
    with pytest.raises(UnsupportedBundle, match="shows the rootfs, which no signature"):
        read_bundle(bundle)
