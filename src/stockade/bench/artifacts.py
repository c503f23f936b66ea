"""Artifact sizes: `.wasm`, `.cwasm` (Stockade's AoT cache, bare Cranelift, Pulley),
native binaries, and container root filesystems (directory and gzipped layer)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from .hosts.base import Layout

__all__ = ["collect_artifacts", "layer_size", "GUESTS"]

GUESTS = ("noop", "compute", "echo", "micro", "python")


class _HasArtifacts(Protocol):
    def artifacts(self) -> dict[str, int]: ...


def layer_size(files: Mapping[str, Path]) -> int:
    """Bytes of a gzipped tar layer holding `files` (name in the layer -> file)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, path in files.items():
            tar.add(path, arcname=name)
    return len(buffer.getvalue())


def _cached(cache_dir: Path, module: Path) -> int | None:
    digest = hashlib.sha256(module.read_bytes()).hexdigest()
    found = sorted(cache_dir.glob(f"*/{digest}.cwasm"))
    return found[0].stat().st_size if found else None


def collect_artifacts(layout: Layout, cache_dir: Path, workdir: Path,
                      agents: Mapping[str, _HasArtifacts]) -> dict[str, int]:
    """Sizes in bytes, by name such as `noop.wasm` or `noop container layer (tar.gz)`."""
    sizes: dict[str, int] = {}
    for guest in GUESTS:
        module = layout.wasm(guest)
        if not module.exists():
            continue
        sizes[f"{guest}.wasm"] = module.stat().st_size
        cached = _cached(cache_dir, module) if cache_dir.exists() else None
        if cached is not None:
            sizes[f"{guest}.cwasm (Stockade AoT cache)"] = cached
        native = layout.native(guest)
        if guest != "python" and native.exists():
            sizes[f"{guest} native binary"] = native.stat().st_size
            sizes[f"{guest} container layer (tar.gz)"] = layer_size({f"bin/{guest}": native})
    for agent in agents.values():
        try:
            sizes.update(agent.artifacts())
        except Exception:  # noqa: BLE001 - a size we cannot get is left out
            continue
    return sizes
