"""`build_image`: a module into either Wasm image layout, reproducibly.

Two layouts:
- `artifact`: the CNCF Wasm OCI artifact (config `application/vnd.wasm.config.v0+json`,
  one `application/wasm` layer holding the raw module), as wkg, wasmCloud and runwasi read.
- `image`: the Docker+Wasm image (`wasi/wasm` OCI image config, one tar+gzip layer holding
  the module, `Entrypoint` its path, the crun `compat` annotation), as `buildah build
  --platform wasi/wasm` writes.

The same module gives the same digest: fixed mtimes (`SOURCE_DATE_EPOCH`, else the epoch),
owner 0, canonical JSON, gzip without a name or time.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModuleError, UsageError
from .media import (
    COMPAT_ANNOTATION,
    GZIP_LAYERS,
    OCI_CONFIG,
    OCI_MANIFEST,
    WASM_CONFIG,
    WASM_LAYER,
    canonical_json,
    sha256_digest,
)
from .store import Store

__all__ = ["BuiltImage", "build_image", "module_bytes", "FORMATS"]

FORMATS = ("artifact", "image")
_CORE_VERSION = b"\x01\x00\x00\x00"


@dataclass(frozen=True)
class BuiltImage:
    """What `build_image` stored: the manifest's descriptor and the module's digest."""

    descriptor: dict[str, Any]
    module_digest: str
    format: str


def module_bytes(path: Path) -> bytes:
    """A `.wasm` module's bytes, or a `.wat` file compiled to binary. Raises ModuleNotFound,
    or ModuleError for anything else (a `.cwasm` is native code and never goes in an image;
    a component is not a module Stockade runs)."""
    from ..engine.loader import read_module, wat_binary

    data = read_module(path)
    if data.startswith(b"\x7fELF"):
        raise ModuleError(f"{path}: a precompiled .cwasm is native code for this host, not "
                          "a portable module; build the image from the .wasm")
    if not data.startswith(b"\0asm"):
        data = wat_binary(data, str(path))
    if data[4:8] != _CORE_VERSION:
        raise ModuleError(f"{path}: a WebAssembly component, not a core module; Stockade "
                          "runs core modules (wasip1)")
    _validate(data, path)
    return data


def _validate(data: bytes, path: Path) -> None:
    """Refuse bytes no engine would run (a module cut short was built, and refused only
    at its first run: found by review). The GC and exception proposals are allowed: a
    run's policy decides on them (`--wasm-gc`)."""
    import wasmtime

    from ..engine.config import EngineConfig
    from ..engine.traps import invalid_module

    try:
        wasmtime.Module.validate(wasmtime.Engine(EngineConfig(gc=True).to_wasmtime()), data)
    except wasmtime.WasmtimeError as exc:
        raise invalid_module(str(path), exc) from None


def _created() -> tuple[int, str]:
    raw = os.environ.get("SOURCE_DATE_EPOCH", "0")
    try:
        epoch = int(raw)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH={raw!r}: expected whole seconds") from None
    return epoch, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data), **extra}


def _tar_of(name: str, data: bytes, mtime: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), mtime, 0o755
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build_image(module: Path, fmt: str, store: Store, tag: str | None,
                args: tuple[str, ...] = (), env: tuple[str, ...] = ()) -> BuiltImage:
    """Build `module` into the `fmt` layout in `store`, tagged `tag` when given. `args` and
    `env` go in the image config (`image` layout only: the artifact has no process)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: choose artifact or image")
    with store.recording():  # a writer of blobs not tagged yet (`Store.recording`)
        return _build(module, fmt, store, tag, args, env)


def _build(module: Path, fmt: str, store: Store, tag: str | None, args: tuple[str, ...],
           env: tuple[str, ...]) -> BuiltImage:
    data = module_bytes(module)
    epoch, created = _created()
    module_digest = store.put(data)
    if fmt == "artifact":
        if args or env:
            raise UsageError("--arg/--env need --format image (the artifact has no process)")
        layer = _descriptor(WASM_LAYER, data,
                            annotations={"org.opencontainers.image.title": module.name})
        config: dict[str, Any] = {
            "created": created, "author": None, "architecture": "wasm", "os": "wasip1",
            "layerDigests": [layer["digest"]], "component": None,
        }
        config_type, annotations = WASM_CONFIG, {"org.opencontainers.image.created": created}
    else:
        name = module.with_suffix(".wasm").name
        tar = _tar_of(name, data, epoch)
        compressed = gzip.compress(tar, compresslevel=9, mtime=0)
        store.put(compressed)
        layer = _descriptor(GZIP_LAYERS[0], compressed)
        process: dict[str, Any] = {"Entrypoint": [f"/{name}"]}
        if args:
            process["Cmd"] = list(args)
        if env:
            process["Env"] = list(env)
        config = {
            "created": created, "architecture": "wasm", "os": "wasi", "config": process,
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar)]},
            "history": [{"created": created, "created_by": f"stockade oci build {name}"}],
        }
        config_type = OCI_CONFIG
        annotations = {COMPAT_ANNOTATION[0]: COMPAT_ANNOTATION[1],
                       "org.opencontainers.image.created": created}
    config_bytes = canonical_json(config)
    store.put(config_bytes)
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": _descriptor(config_type, config_bytes), "layers": [layer],
        "annotations": annotations,
    }
    manifest_bytes = canonical_json(manifest)
    store.put(manifest_bytes)
    descriptor = _descriptor(OCI_MANIFEST, manifest_bytes, annotations={
        "io.stockade.module.digest": module_digest, "io.stockade.layout": fmt})
    if tag is not None:
        store.tag(tag, descriptor)
    return BuiltImage(descriptor, module_digest, fmt)
