"""Build, push, pull and run both layouts through a real docker-registry, checked by
skopeo and buildah; tampered, missing, foreign and oversized content refused."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from ..conftest import guest
from .fixtures import Registry, cli, require, stockade_env


def unique_module(tmp_path: Path, marker: str) -> Path:
    """A module whose bytes no other test pushes (registry blobs are shared by digest)."""
    path = tmp_path / f"{marker}.wat"
    path.write_text(
        '(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))'
        f' (memory (export "memory") 1) (data (i32.const 0) "{marker}{os.urandom(8).hex()}")'
        ' (func (export "_start") (call $exit (i32.const 7))))')
    return path


def env_for(tmp_path: Path, registry: Registry, name: str = "cache") -> dict[str, str]:
    return stockade_env(tmp_path / name, tmp_path / "state", registry)


@pytest.mark.parametrize("fmt", ["artifact", "image"])
def test_round_trip_digests_match_skopeo(registry: Registry, tmp_path: Path, fmt: str) -> None:
    ref = f"{registry.host}/hello-{fmt}:1"
    builder = env_for(tmp_path, registry, "build")
    built = cli(builder, "oci", "build", str(guest("hello.wasm")), "--tag", ref,
                "--format", fmt, "--json")
    assert built.returncode == 0, built.stderr
    digest = json.loads(built.stdout)["digest"]
    pushed = cli(builder, "oci", "push", ref)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.split()[0] == digest

    skopeo = require("skopeo")
    raw = subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         capture_output=True, check=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    copy = f"{registry.host}/copied-{fmt}:1"
    subprocess.run([skopeo, "copy", "--preserve-digests", "--src-tls-verify=false",
                    "--dest-tls-verify=false", f"docker://{ref}", f"docker://{copy}"],
                   capture_output=True, check=True)

    puller = env_for(tmp_path, registry, "pull")
    pulled = cli(puller, "oci", "pull", copy, "--json")
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["digest"] == digest
    assert json.loads(pulled.stdout)["layout"] == fmt
    run = cli(puller, "run", f"oci://{copy}", "--", "world")
    assert run.returncode == 0, run.stderr
    assert "arg 1: world" in run.stdout
    store = tmp_path / "pull" / "oci"
    assert oct(store.stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600"
               for p in (store / "blobs" / "sha256").iterdir())
    inspected = json.loads(cli(puller, "oci", "inspect", copy, "--json").stdout)
    assert inspected["digest"] == digest and inspected["platform"].endswith("/wasm")


def test_push_json_names_the_reference_and_digest(registry: Registry, tmp_path: Path) -> None:
    ref = f"{registry.host}/push-json:1"
    env = env_for(tmp_path, registry)
    built = cli(env, "oci", "build", str(unique_module(tmp_path, "pushjson")), "--tag", ref,
                "--json")
    assert built.returncode == 0, built.stderr
    pushed = cli(env, "oci", "push", ref, "--json")
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout) == {"ref": ref, "digest": json.loads(built.stdout)["digest"]}


def test_build_is_reproducible(tmp_path: Path) -> None:
    for fmt in ("artifact", "image"):
        digests = set()
        for name in ("a", "b"):
            env = stockade_env(tmp_path / f"{fmt}-{name}", tmp_path / "state")
            out = cli(env, "oci", "build", str(guest("hello.wasm")), "--tag",
                      f"localhost/r:{name}", "--format", fmt, "--json")
            assert out.returncode == 0, out.stderr
            digests.add(json.loads(out.stdout)["digest"])
        assert len(digests) == 1, fmt


def _rust_oci_wasm_parse(manifest: dict[str, object], config: dict[str, object]) -> None:
    """The artifact rules as rust-oci-wasm applies them (WasmConfig + WasmClient::pull),
    written from its source, not from Stockade's."""
    assert manifest["config"]["mediaType"] == "application/vnd.wasm.config.v0+json"  # type: ignore[index]
    layers = manifest["layers"]
    assert isinstance(layers, list) and len(layers) == 1
    assert layers[0]["mediaType"] == "application/wasm"
    for key, kind in (("created", str), ("architecture", str), ("os", str),
                      ("layerDigests", list)):
        assert isinstance(config[key], kind), key
    assert config["created"].endswith("Z")  # type: ignore[union-attr]
    assert config.get("author") is None or isinstance(config["author"], str)
    assert config["architecture"] == "wasm" and config["os"] in ("wasip1", "wasip2")
    assert config["layerDigests"] == [layers[0]["digest"]]
    assert config.get("component") is None  # a module, not a component


def test_artifact_config_follows_rust_oci_wasm_rules(tmp_path: Path) -> None:
    env = stockade_env(tmp_path / "cache", tmp_path / "state")
    out = cli(env, "oci", "build", str(guest("hello.wasm")), "--tag", "localhost/a:1", "--json")
    blobs = tmp_path / "cache" / "oci" / "blobs" / "sha256"
    manifest = json.loads((blobs / json.loads(out.stdout)["digest"][7:]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())
    _rust_oci_wasm_parse(manifest, config)
    assert (blobs / manifest["layers"][0]["digest"][7:]).read_bytes() == \
        guest("hello.wasm").read_bytes()


def test_tampered_registry_blob_refused(registry: Registry, tmp_path: Path) -> None:
    ref = f"{registry.host}/tampered:1"
    env = env_for(tmp_path, registry)
    built = cli(env, "oci", "build", str(unique_module(tmp_path, "tamper")), "--tag", ref,
                "--json")
    layer = json.loads(built.stdout)["module_digest"][7:]
    assert cli(env, "oci", "push", ref).returncode == 0
    data = registry.storage / "docker/registry/v2/blobs/sha256" / layer[:2] / layer / "data"
    content = bytearray(data.read_bytes())
    content[-1] ^= 0xFF
    data.write_bytes(bytes(content))
    fresh = env_for(tmp_path, registry, "fresh")
    pulled = cli(fresh, "oci", "pull", ref)
    assert pulled.returncode == 65, pulled.stderr
    assert pulled.stderr.count("\n") == 1 and "refused" in pulled.stderr
    store = tmp_path / "fresh" / "oci"
    assert json.loads(cli(fresh, "oci", "ls", "--json").stdout) == []
    assert not (store / "blobs" / "sha256" / layer).exists()
    assert list((store / "tmp").iterdir()) == []


def _push_raw(registry: Registry, repo: str, config: dict[str, object], layer: bytes,
              layer_type: str) -> None:
    """Push an image by hand over the distribution API (for foreign platforms)."""
    base = f"http://{registry.host}/v2/{repo}"
    blobs = []
    for data in (json.dumps(config).encode(), layer):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = httpx.post(f"{base}/blobs/uploads/")
        location = start.headers["location"]
        url = location if location.startswith("http") else f"http://{registry.host}{location}"
        sep = "&" if "?" in url else "?"
        httpx.put(f"{url}{sep}digest={digest}", content=data).raise_for_status()
        blobs.append({"digest": digest, "size": len(data)})
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blobs[0]},
                "layers": [{"mediaType": layer_type, **blobs[1]}]}
    httpx.put(f"{base}/manifests/1", content=json.dumps(manifest).encode(), headers={
        "Content-Type": "application/vnd.oci.image.manifest.v1+json"}).raise_for_status()


def test_bad_input_one_line_distinct_codes(registry: Registry, tmp_path: Path) -> None:
    env = env_for(tmp_path, registry)
    ref = f"{registry.host}/bad:1"
    cli(env, "oci", "build", str(unique_module(tmp_path, "bad")), "--tag", ref)
    assert cli(env, "oci", "push", ref).returncode == 0
    _push_raw(registry, "linux-image", {"os": "linux", "architecture": "amd64",
                                        "rootfs": {"type": "layers", "diff_ids": []}},
              b"not a layer", "application/vnd.oci.image.layer.v1.tar")
    plain = {k: v for k, v in env.items() if k != "STOCKADE_INSECURE_REGISTRIES"}
    fresh = env_for(tmp_path, registry, "fresh")
    cases = {
        "unknown registry": (env, ("oci", "pull", "no-such-registry.invalid/x:1"), 69),
        "https to a plain registry": (plain, ("oci", "pull", ref), 69),
        "404 tag": (env, ("oci", "pull", f"{registry.host}/bad:nope"), 127),
        "wrong platform": (env, ("oci", "pull", f"{registry.host}/linux-image:1"), 126),
        "layer over the limit": (fresh, ("oci", "pull", ref, "--max-layer-size", "16"), 75),
        "not a reference": (env, ("oci", "pull", "UPPER/Case:!"), 125),
    }
    codes = {}
    for name, (case_env, args, code) in cases.items():
        out = cli(case_env, *args)
        assert out.returncode == code, (name, out.stderr)
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, (name, out.stderr)
        codes[name] = code
    assert "linux/amd64" in cli(env, "oci", "pull", f"{registry.host}/linux-image:1").stderr
    assert "--insecure" in cli(plain, "oci", "pull", ref).stderr
    assert json.loads(cli(fresh, "oci", "ls", "--json").stdout) == []


def test_corrupted_local_store_refused(registry: Registry, tmp_path: Path) -> None:
    env = env_for(tmp_path, registry)
    ref = f"{registry.host}/corrupt:1"
    built = cli(env, "oci", "build", str(unique_module(tmp_path, "corrupt")), "--tag", ref,
                "--json")
    assert cli(env, "run", f"oci://{ref}").returncode == 7
    module = tmp_path / "cache" / "oci" / "blobs" / "sha256" / \
        json.loads(built.stdout)["module_digest"][7:]
    module.write_bytes(module.read_bytes() + b"\0")
    out = cli(env, "run", f"oci://{ref}")
    assert out.returncode == 74, out.stderr
    assert out.stderr.count("\n") == 1 and "does not match" in out.stderr
    assert not module.exists()


def test_buildah_image_pulled_and_run(registry: Registry, tmp_path: Path) -> None:
    buildah = require("buildah")
    context = tmp_path / "context"
    context.mkdir()
    (context / "hello.wasm").write_bytes(guest("hello.wasm").read_bytes())
    (context / "Containerfile").write_text(
        'FROM scratch\nCOPY hello.wasm /hello.wasm\nENTRYPOINT ["/hello.wasm"]\n'
        'CMD ["from-buildah"]\nENV GREETING=hi\n')
    storage = tmp_path / "containers"
    (tmp_path / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{storage}/run"\ngraphroot = "{storage}/graph"\n')
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(tmp_path / "storage.conf")}
    ref = f"{registry.host}/buildah-hello:1"
    for args in (["build", "--platform", "wasi/wasm", "-t", ref, str(context)],
                 ["push", "--tls-verify=false", ref]):
        done = subprocess.run([buildah, *args], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    mine = env_for(tmp_path, registry)
    run = cli(mine, "run", f"oci://{ref}")
    assert run.returncode == 0, run.stderr
    assert "arg 1: from-buildah" in run.stdout
    replaced = cli(mine, "run", f"oci://{ref}", "--", "mine")
    assert "arg 1: mine" in replaced.stdout and "from-buildah" not in replaced.stdout
