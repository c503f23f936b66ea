"""A reload releases the quota cells of names its routes dropped, a failed build those it
opened, and a manifest needing more descriptors than the worker has is refused: five
reloads to 200 new names each kept 2 descriptors per name for the worker's life, and a
reload to 10,500 functions took all but one of them (every request 500 afterwards)."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from stockade.errors import ModuleError, UsageError
from stockade.gateway import registry as registry_module
from stockade.gateway.executor import Executors
from stockade.gateway.manifest import load_manifest
from stockade.gateway.registry import Registry
from stockade.state import LocalState

from .conftest import module


def manifest(tmp_path: Path, names: list[str], bad: Path | None = None) -> Path:
    """`names` serving hello (and a last function of module `bad`)."""
    text = '[server]\ntelemetry = "off"\n'
    modules = [(name, module("hello")) for name in names] + \
        ([("last", str(bad))] if bad is not None else [])
    for i, (name, wasm) in enumerate(modules):
        text += (f'[[function]]\nname = "{name}"\nroute = "/r{i}"\n'
                 f'module = "{wasm}"\nmax_concurrency = 4\nisolate = "none"\n')
    path = tmp_path / "stockade.toml"
    path.write_text(text)
    return path


def descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def reload(registry: Registry, path: Path) -> None:
    loaded = load_manifest(path)
    registry.swap(loaded, registry.build(loaded))


def test_reloads_release_the_cells_of_dropped_names(tmp_path: Path) -> None:
    registry = Registry(Executors("auto", 2), LocalState(tmp_path / "quotas"))
    try:
        for warm in ("w", "g0"):  # the engines' own descriptors, opened once
            reload(registry, manifest(tmp_path, [f"{warm}_{i}" for i in range(5)]))
        baseline = descriptors()
        for k in range(1, 4):
            reload(registry, manifest(tmp_path, [f"g{k}_{i}" for i in range(30)]))
        grown = descriptors()
        reload(registry, manifest(tmp_path, [f"g0_{i}" for i in range(5)]))
        assert grown <= baseline + 2 * 30 + 8, "cells of earlier reloads' names are kept"
        assert descriptors() == baseline
    finally:
        registry.close()


def test_a_failed_build_releases_the_cells_it_opened(tmp_path: Path) -> None:
    registry = Registry(Executors("auto", 2), LocalState(tmp_path / "quotas"))
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(os.urandom(100))
    try:
        reload(registry, manifest(tmp_path, ["a"]))
        baseline = descriptors()
        with pytest.raises(ModuleError):
            registry.build(load_manifest(manifest(tmp_path, [f"n{i}" for i in range(30)], bad)))
        assert descriptors() <= baseline + 1
    finally:
        registry.close()


def test_a_manifest_past_the_descriptor_limit_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry(Executors("auto", 2), LocalState(tmp_path / "quotas"))
    monkeypatch.setattr(registry_module.resource, "getrlimit", lambda _: (
        100, resource.RLIM_INFINITY))  # 50 for a manifest
    try:
        before = descriptors()
        with pytest.raises(UsageError, match=r"40 functions need 82 descriptors"):
            registry.build(load_manifest(manifest(tmp_path, [f"f{i}" for i in range(40)])))
        assert descriptors() == before
        reload(registry, manifest(tmp_path, [f"f{i}" for i in range(20)]))  # 42: fits
    finally:
        registry.close()


def test_the_supervisor_refuses_what_every_worker_would(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # It accepted a manifest every worker refused for its descriptors and wrote it as the
    # snapshot, on which a restarted worker died until the server stopped (found by review).
    from stockade.gateway.server import Supervisor

    path = manifest(tmp_path, ["hello"])
    supervisor = Supervisor(path)
    try:
        supervisor.manifest = supervisor.prepare()
        accepted = supervisor.snapshot.read_bytes()
        monkeypatch.setattr(registry_module.resource, "getrlimit", lambda _: (
            100, resource.RLIM_INFINITY))  # 50 for a manifest
        manifest(tmp_path, [f"f{i}" for i in range(40)])
        assert not supervisor.reload()
        assert supervisor.snapshot.read_bytes() == accepted
    finally:
        supervisor.stop()
