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
import os
import sys
import time
from pathlib import Path
from typing import Any

from stockade.engine.cache import AotCache
from stockade.gateway.manifest import load_manifest
from stockade.gateway.poolworker import worker_plan
from stockade.isolate.config import IsolationConfig
from stockade.isolate.handle import WorkerProcess
from stockade.isolate.plan import WorkerPlan, plan_for
from stockade.policy import profile

from ..conftest import guest

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
