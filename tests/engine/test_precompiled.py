"""A `.cwasm` is native code: refused without the opt-in, and with it unless this host's
key authenticates it. The attacker's file is a real `stockade compile` output with its
functions' machine code overwritten (tests/engine/elf.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Sandbox
from stockade.engine.seal import TRAILER_SIZE
from stockade.errors import PolicyError, PrecompiledRefused
from stockade.gateway.manifest import parse_manifest
from stockade.policy import policy_from_mapping

from ..conftest import STOCKADE, guest, stockade
from .elf import patch_functions

HELLO = "Hello from a Stockade sandbox!"

# Runs a .cwasm the way plain wasmtime does: no MAC, no opt-in.
_PLAIN_WASMTIME = """
import sys, wasmtime
from stockade.engine import EngineConfig
from stockade.policy import Policy
config = EngineConfig.for_limits(Policy.from_profile("default").limits, tripwire=False)
engine = wasmtime.Engine(config.to_wasmtime())
module = wasmtime.Module.deserialize(engine, open(sys.argv[1], "rb").read())
linker = wasmtime.Linker(engine)
linker.define_wasi()
store = wasmtime.Store(engine)
store.set_wasi(wasmtime.WasiConfig())
if config.fuel:
    store.set_fuel(10**9)
store.set_epoch_deadline(10**9)
linker.instantiate(store, module).exports(store)["_start"](store)
"""


def compile_to(output: Path, *, env: dict[str, str] | None = None,
               source: str = "hello.wasm", profile: str = "default") -> Path:
    """`stockade compile` for real (the session's key unless `env` says otherwise)."""
    done = subprocess.run([*STOCKADE, "compile", str(guest(source)), "-o", str(output),
                           "--profile", profile],
                          capture_output=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return output


@pytest.fixture
def sealed(tmp_path: Path) -> Path:
    """A genuine `.cwasm` made by `stockade compile` on this host."""
    return compile_to(tmp_path / "app.cwasm")


@pytest.fixture
def evil(sealed: Path) -> Path:
    """The sealed file with every function's code replaced by `exit_group(42)`."""
    path = sealed.with_name("evil.cwasm")
    path.write_bytes(patch_functions(sealed.read_bytes()))
    return path


@pytest.fixture
def evil_bare(sealed: Path) -> Path:
    """The patched machine code without any trailer (as plain wasmtime writes it)."""
    path = sealed.with_name("bare.cwasm")
    path.write_bytes(patch_functions(sealed.read_bytes()[:-TRAILER_SIZE]))
    return path


def one_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_the_patched_file_really_runs_native_code(evil: Path, evil_bare: Path) -> None:
    """Without Stockade's checks the patch executes: the process exits 42 at once."""
    for path in (evil, evil_bare):
        done = subprocess.run([sys.executable, "-c", _PLAIN_WASMTIME, str(path)],
                              capture_output=True, timeout=60, check=False)
        assert done.returncode == 42, done.stderr.decode()


@pytest.mark.parametrize("profile", ["default", "strict"])
def test_run_refuses_a_cwasm_without_the_opt_in(evil: Path, profile: str) -> None:
    done = stockade("run", "--profile", profile, str(evil))
    assert done.returncode == 126
    line = one_line(done.stderr)
    assert "denied" in line and "--allow-precompiled" in line
    assert done.stdout == b""


def test_run_json_reports_denied(evil: Path) -> None:
    done = stockade("run", "--json", str(evil))
    assert done.returncode == 126
    result = json.loads(done.stdout)
    assert result["outcome"] == "denied" and result["exit_code"] == 126
    assert "--allow-precompiled" in result["message"]


@pytest.mark.parametrize("profile", ["default", "strict"])
def test_run_refuses_a_patched_cwasm_with_the_opt_in(tmp_path: Path, profile: str) -> None:
    sealed = compile_to(tmp_path / "own.cwasm", profile=profile).read_bytes()
    evil, evil_bare = tmp_path / "evil.cwasm", tmp_path / "bare.cwasm"
    evil.write_bytes(patch_functions(sealed))
    evil_bare.write_bytes(patch_functions(sealed[:-TRAILER_SIZE]))
    done = stockade("run", "--allow-precompiled", "--profile", profile, str(evil))
    assert done.returncode == 126
    assert "MAC does not verify" in one_line(done.stderr)
    done = stockade("run", "--allow-precompiled", "--profile", profile, str(evil_bare))
    assert done.returncode == 126
    assert "no Stockade MAC" in one_line(done.stderr)


def test_run_accepts_a_sealed_cwasm_with_the_opt_in(sealed: Path) -> None:
    done = stockade("run", "--allow-precompiled", str(sealed))
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == HELLO
    assert stockade("run", str(sealed)).returncode == 126


def test_a_cwasm_sealed_under_another_key_is_refused(tmp_path: Path) -> None:
    other = {**os.environ, "STOCKADE_CONFIG_DIR": str(tmp_path / "other-host")}
    foreign = compile_to(tmp_path / "foreign.cwasm", env=other)
    done = stockade("run", "--allow-precompiled", str(foreign))
    assert done.returncode == 126
    assert "MAC does not verify" in one_line(done.stderr)
    # ... while its own host runs it.
    done = subprocess.run([*STOCKADE, "run", "--allow-precompiled", str(foreign)],
                          capture_output=True, timeout=120, env=other, check=False)
    assert done.returncode == 0 and HELLO in done.stdout.decode()


def test_a_cwasm_for_another_engine_configuration_says_so(sealed: Path) -> None:
    done = stockade("run", "--allow-precompiled", "--profile", "permissive", str(sealed))
    assert done.returncode == 126
    assert "another engine configuration" in one_line(done.stderr)


def test_compile_writes_a_private_sealed_file(sealed: Path) -> None:
    assert sealed.stat().st_mode & 0o777 == 0o600
    assert sealed.read_bytes()[-TRAILER_SIZE:].startswith(b"\0stockade-seal2\0")
    assert not [p for p in sealed.parent.iterdir() if p.name.endswith(".part")]


def test_api_refuses_without_the_opt_in(evil: Path, sealed: Path) -> None:
    with Sandbox() as sandbox:
        for module in (evil, sealed, sealed.read_bytes()):
            result = sandbox.run(module, Invocation())
            assert result.outcome is Outcome.DENIED and result.exit_code == 126
            assert "allow_precompiled=True" in result.message
        with pytest.raises(PrecompiledRefused):
            sandbox.load(sealed)


def test_api_checks_the_mac_with_the_opt_in(evil: Path, evil_bare: Path,
                                            sealed: Path) -> None:
    with Sandbox(allow_precompiled=True) as sandbox:
        for module in (evil, evil_bare, evil.read_bytes()):
            result = sandbox.run(module, Invocation())
            assert result.outcome is Outcome.DENIED, result
            assert "MAC" in result.message
        result = sandbox.run(sealed, Invocation())
        assert result.outcome is Outcome.EXITED and result.stdout.decode().strip() == HELLO
        loaded = sandbox.load(sealed)
    # A module loaded by a sandbox that allows native code is not a way around another's.
    with Sandbox() as strict:
        assert strict.run(loaded, Invocation()).outcome is Outcome.DENIED
        assert strict.run(sealed, Invocation()).outcome is Outcome.DENIED


def test_policy_and_manifest_keys_are_booleans(tmp_path: Path) -> None:
    policy = policy_from_mapping({"capabilities": {"allow_precompiled": True}}, "p.toml")
    assert policy.capabilities.allow_precompiled
    with pytest.raises(PolicyError, match="capabilities.allow_precompiled"):
        policy_from_mapping({"capabilities": {"allow_precompiled": "yes"}}, "p.toml")
    table = {"name": "f", "route": "/f", "module": "f.cwasm"}
    manifest = parse_manifest({"function": [{**table, "allow_precompiled": True}]},
                              tmp_path / "stockade.toml")
    assert manifest.functions[0].policy.capabilities.allow_precompiled
    default = parse_manifest({"function": [table]}, tmp_path / "stockade.toml")
    assert not default.functions[0].policy.capabilities.allow_precompiled
    with pytest.raises(PolicyError, match=r"\(f\)\.allow_precompiled"):
        parse_manifest({"function": [{**table, "allow_precompiled": 1}]},
                       tmp_path / "stockade.toml")


def _serve(tmp_path: Path, module: Path, allow: bool) -> subprocess.Popen[bytes]:
    manifest = tmp_path / "stockade.toml"
    manifest.write_text(f'[[function]]\nname = "app"\nroute = "/app"\nmodule = "{module}"\n'
                        f'profile = "default"\nallow_precompiled = {str(allow).lower()}\n')
    return subprocess.Popen([*STOCKADE, "serve", "-c", str(manifest), "--port", "0"],
                            stderr=subprocess.PIPE)


@pytest.mark.parametrize("allow", [False, True])
def test_the_gateway_refuses_a_patched_cwasm(tmp_path: Path, evil: Path, allow: bool) -> None:
    process = _serve(tmp_path, evil, allow)
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 126
    line = one_line(stderr)
    assert "function app" in line
    assert ("MAC does not verify" if allow else "allow_precompiled = true") in line


def test_the_gateway_serves_a_sealed_cwasm_when_allowed(tmp_path: Path) -> None:
    import httpx

    sealed = compile_to(tmp_path / "hello.cwasm", source="functions/hello.wasm")
    process = _serve(tmp_path, sealed, True)
    try:
        assert process.stderr is not None
        url = None
        for raw in process.stderr:
            if b"listening on " in raw:
                url = raw.decode().split("listening on ", 1)[1].split()[0]
                break
        assert url is not None, "the gateway did not start"
        response = httpx.get(f"{url}/app", timeout=30)
        assert response.status_code == 200 and response.text == "Hello, world!\n"
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()
