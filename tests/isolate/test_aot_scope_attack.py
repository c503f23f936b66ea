"""Attack: code that took a worker over forges AoT cache entries for others.

A cache entry is native code that runs when a module with its digest is next loaded; it
is trusted because a key authenticates it. The probe below runs inside a real hardened
worker, as code that escaped a guest would, and seals a forged entry for a module digest
with the key its worker holds, into the cache its worker reaches. Neither the parent (the
gateway or `stockade run`, unconfined) nor a pool worker of another cordon (another
tenant) may accept it; nor may the worker read this host's key file itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from stockade import Outcome
from stockade.engine.cache import AotCache
from stockade.engine.engine import Engine
from stockade.engine.seal import strip
from stockade.gateway.manifest import load_manifest
from stockade.gateway.poolworker import worker_plan
from stockade.isolate import IsolatedSandbox
from stockade.isolate.backend import worker_engine_config
from stockade.isolate.config import IsolationConfig
from stockade.isolate.handle import WorkerProcess
from stockade.isolate.plan import ISOLATED_SCOPE, WorkerPlan, plan_for
from stockade.isolate.reseal import Resealer
from stockade.policy import profile

from ..conftest import guest, stockade

FINGERPRINT, SHA256 = "0123456789abcdef", "ab" * 32

FORGE = f'''
import os
from stockade.engine.cache import AotCache
from stockade.paths import cache_dir, config_dir
stored = AotCache(cache_dir()).store({FINGERPRINT!r}, {SHA256!r}, b"\\x7fELF forged native code")
try:
    with open(config_dir() / "aot.key", "rb") as handle:
        read = len(handle.read())
except OSError as exc:
    read = -exc.errno
result = {{"stored": str(stored), "key_file_bytes": read}}
'''

ACCEPTS = f'''
from stockade.engine.cache import AotCache
from stockade.paths import cache_dir
with AotCache(cache_dir()).open({FINGERPRINT!r}, {SHA256!r}) as found:
    result = {{"accepted": found is not None}}
'''


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache of this test's own: a forged entry must not outlive the test."""
    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(tmp_path / "aot-cache"))


def _probe(plan: WorkerPlan, source: str) -> dict[str, Any]:
    """Run `source` in a hardened worker of `plan` (a test-only hook standing for code
    that took the worker over); its `result`."""
    worker = WorkerProcess(dataclasses.replace(plan, probe=source), None, sys.executable)
    try:
        worker.wait_ready(IsolationConfig().start_timeout)
        worker.send(("probe",))
        kind, payload = worker.receive(time.monotonic() + 60, 1 << 20)
    finally:
        worker.close()
    assert kind == "probed" and isinstance(payload, dict), payload
    assert "error" not in payload, payload
    return payload


def _parent_accepts() -> bool:
    with AotCache(Path(os.environ["STOCKADE_CACHE_DIR"])).open(FINGERPRINT, SHA256) as found:
        return found is not None


def test_an_isolated_worker_cannot_forge_the_parents_cache() -> None:
    forged = _probe(plan_for(profile("strict"), IsolationConfig()), FORGE)
    assert forged["stored"] != "None", forged  # it did write a sealed entry somewhere
    assert not _parent_accepts()


def test_an_isolated_workers_forgery_is_loaded_by_neither_the_parent_nor_a_cordon(
        tmp_path: Path) -> None:
    isolated = plan_for(profile("default"), IsolationConfig())
    forged = _probe(isolated, FORGE)
    assert forged["key_file_bytes"] < 0, "an isolated worker read this host's AoT key file"
    scope = _host().scope(ISOLATED_SCOPE)
    assert forged["stored"] != "None", forged
    assert scope.path(FINGERPRINT, SHA256).is_file(), "the worker wrote outside its scope"
    assert not _parent_accepts(), "`stockade run` in-process would run the forged code"
    alpha, _ = _cordon_plans(tmp_path)
    assert not _probe(alpha, ACCEPTS)["accepted"], "a gateway cordon ran the forged code"
    # The forgery is real: the isolated scope itself accepts it.
    assert _probe(isolated, ACCEPTS)["accepted"]


# The parent hands its own compiled code to isolated workers: verified under this host's
# key, sealed again with the scope's, so a scoped worker does not compile it again.

def _host() -> AotCache:
    return AotCache(Path(os.environ["STOCKADE_CACHE_DIR"]))


def _warm_host(module: Path, plan: WorkerPlan) -> tuple[str, str]:
    """Compile `module` in this process into this host's cache, for the engine the
    workers of `plan` use: (fingerprint, sha256) of its entry."""
    config = worker_engine_config(plan.policy.limits, plan.backend, plan.process_deadline)
    engine = Engine(config, _host())
    try:
        loaded = engine.load(module)
    finally:
        engine.close()
    assert not loaded.from_cache
    fingerprint = config.fingerprint()
    assert _host().path(fingerprint, loaded.sha256).is_file()
    return fingerprint, loaded.sha256


def test_an_isolated_worker_loads_this_hosts_entry_without_compiling(tmp_path: Path) -> None:
    module = tmp_path / "hello.wasm"
    module.write_bytes(guest("hello.wasm").read_bytes())
    policy, config = profile("default"), IsolationConfig()
    plan = plan_for(policy, config)
    engine_config = worker_engine_config(policy.limits, plan.backend, plan.process_deadline)
    fingerprint, sha = engine_config.fingerprint(), hashlib.sha256(module.read_bytes()).hexdigest()
    # This host's entry for hello.wasm holds, sealed under this host's key, the code of a
    # module that prints nothing: a worker that compiled hello.wasm would print "Hello".
    silent = wasmtime.Module(wasmtime.Engine(engine_config.to_wasmtime()),
                             '(module (memory (export "memory") 1) (func (export "_start")))')
    assert _host().store(fingerprint, sha, strip(bytes(silent.serialize()))) is not None
    scoped = _host().scope(ISOLATED_SCOPE).path(fingerprint, sha)
    assert not scoped.exists()
    with IsolatedSandbox(policy, config=config) as sandbox:
        result = sandbox.run(module)
    assert result.outcome is Outcome.EXITED and result.stdout == b"", result.stderr
    # The parent copied its entry into the scope, sealed with the scope's key (which
    # this host's does not verify), before the worker loaded the module.
    assert strip(scoped.read_bytes()) == strip(_host().path(fingerprint, sha).read_bytes())
    with AotCache(scoped.parent.parent).open(fingerprint, sha) as foreign:
        assert foreign is None


def test_a_tampered_host_entry_is_not_resealed_into_the_scope(tmp_path: Path) -> None:
    module = tmp_path / "hello.wasm"
    module.write_bytes(guest("hello.wasm").read_bytes())
    policy, config = profile("default"), IsolationConfig()
    plan = plan_for(policy, config)
    fingerprint, sha = _warm_host(module, plan)
    entry = _host().path(fingerprint, sha)
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the code changed on disk, the file still ours and 0600
    entry.write_bytes(bytes(data))
    resealer = Resealer(_host(), ISOLATED_SCOPE, policy.limits)
    assert not resealer.prepare(module, plan.backend, plan.process_deadline)
    assert not _host().scope(ISOLATED_SCOPE).path(fingerprint, sha).exists()
    assert not entry.exists(), "the tampered entry was not refused"
    # The worker compiles it for itself, in its scope, and runs it.
    with IsolatedSandbox(policy, config=config) as sandbox:
        result = sandbox.run(module)
    assert result.outcome is Outcome.EXITED and b"Hello" in result.stdout, result.stderr
    assert _host().scope(ISOLATED_SCOPE).path(fingerprint, sha).is_file()


def _cordon_plans(tmp_path: Path) -> tuple[WorkerPlan, WorkerPlan]:
    module = tmp_path / "hello.wasm"
    module.write_bytes(guest("hello.wasm").read_bytes())
    manifest = tmp_path / "stockade.toml"
    manifest.write_text(
        '[tenant.a]\ncordon = "alpha"\n[tenant.b]\ncordon = "beta"\n'
        '[[function]]\nname = "fa"\nroute = "/a"\nmodule = "hello.wasm"\ntenant = "a"\n'
        '[[function]]\nname = "fb"\nroute = "/b"\nmodule = "hello.wasm"\ntenant = "b"\n')
    functions = {spec.name: spec for spec in load_manifest(manifest).functions}
    return worker_plan((functions["fa"],)), worker_plan((functions["fb"],))


def test_a_pool_worker_cannot_forge_for_another_cordon_or_read_the_key(
        tmp_path: Path) -> None:
    alpha, beta = _cordon_plans(tmp_path)
    forged = _probe(alpha, FORGE)
    assert forged["stored"] != "None", forged
    assert forged["key_file_bytes"] < 0, "a pool worker read this host's AoT key file"
    assert not _probe(beta, ACCEPTS)["accepted"], "cordon beta ran alpha's forged code"
    assert not _parent_accepts(), "the gateway would run a pool worker's forged code"
    # Its own cordon's workers do share its entries (that is what the cache is for).
    assert _probe(alpha, ACCEPTS)["accepted"]


# A worker holds no key that verifies `stockade compile` output: the parent vouches for
# the exact bytes of a `.cwasm` this host sealed, and for nothing else.

LOADS = '''
from pathlib import Path
from stockade.engine import EngineConfig, get_engine
from stockade.errors import StockadeError
from stockade.policy import profile
engine = get_engine(EngineConfig.for_limits(profile("default").limits))
result = {}
for path in PATHS:
    try:
        engine.load(Path(path), allow_precompiled=True)
        result[path] = "loaded"
    except StockadeError as exc:
        result[path] = exc.message
'''


def _compiled(tmp_path: Path, profile_name: str) -> tuple[Path, Path]:
    """(a `.cwasm` this host sealed, the same with one byte of its code changed)."""
    sealed = tmp_path / "hello.cwasm"
    done = stockade("compile", str(guest("hello.wasm")), "-o", str(sealed), "--profile",
                    profile_name)
    assert done.returncode == 0, done.stderr
    patched = tmp_path / "patched.cwasm"
    data = bytearray(sealed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    patched.write_bytes(bytes(data))
    return sealed, patched


def test_a_sealed_cwasm_still_runs_in_an_isolated_worker(tmp_path: Path) -> None:
    sealed, patched = _compiled(tmp_path, "strict")  # strict runs in an isolated worker
    done = stockade("run", "--allow-precompiled", "--profile", "strict", str(sealed))
    assert done.returncode == 0 and b"Hello" in done.stdout, done.stderr
    done = stockade("run", "--allow-precompiled", "--profile", "strict", str(patched))
    assert done.returncode == 126 and b"MAC does not verify" in done.stderr, done.stderr


def test_a_pool_worker_loads_only_the_cwasm_its_parent_vouched_for(tmp_path: Path) -> None:
    sealed, patched = _compiled(tmp_path, "default")
    manifest = tmp_path / "stockade.toml"
    manifest.write_text(
        '[tenant.a]\ncordon = "alpha"\n'
        '[[function]]\nname = "fa"\nroute = "/a"\nmodule = "hello.cwasm"\ntenant = "a"\n'
        'allow_precompiled = true\n'
        '[[function]]\nname = "fp"\nroute = "/p"\nmodule = "patched.cwasm"\ntenant = "a"\n'
        'allow_precompiled = true\n')
    plan = worker_plan(tuple(load_manifest(manifest).functions))
    paths = [str(sealed), str(patched)]
    found = _probe(plan, f"PATHS = {paths!r}\n{LOADS}")
    assert found[str(sealed)] == "loaded", found
    assert "MAC does not verify" in found[str(patched)], found


def test_a_link_planted_in_the_scope_does_not_redirect_the_reseal(tmp_path: Path) -> None:
    # A worker writes its scope: it links the scope's engine directory to this host's, so
    # that the parent's copy (sealed with the scope's key) would replace the host's entry.
    module = tmp_path / "hello.wasm"
    module.write_bytes(guest("hello.wasm").read_bytes())
    policy = profile("default")
    plan = plan_for(policy, IsolationConfig())
    fingerprint, sha = _warm_host(module, plan)
    host_entry = _host().path(fingerprint, sha)
    before = host_entry.read_bytes()
    scope = _host().scope(ISOLATED_SCOPE)
    scope.root.mkdir(mode=0o700, parents=True)
    (scope.root / fingerprint).symlink_to(host_entry.parent)
    assert Resealer(_host(), ISOLATED_SCOPE, policy.limits).prepare(
        module, plan.backend, plan.process_deadline)
    assert host_entry.read_bytes() == before, "the reseal wrote through the planted link"
    copied = scope.path(fingerprint, sha)
    assert not copied.parent.is_symlink() and copied.is_file()
    with _host().open(fingerprint, sha) as entry, scope.open(fingerprint, sha) as scoped:
        assert entry is not None and scoped is not None
