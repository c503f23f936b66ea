"""`pull` and `push`: images between a registry and the local store, verified throughout.

A pull checks every manifest against the digest that names it (the reference's pin, the
index entry, or the registry's `Docker-Content-Digest`), refuses a non-Wasm platform
before downloading layers, streams each blob into the store through its digest and size,
checks a Docker+Wasm image's `diff_ids`, and extracts the module as a blob of its own, so
the AoT cache sees the same bytes whichever layout brought them. Only then is the
reference tagged in the store: a failed pull leaves no tag and no unverified file. An
image reached through an index keeps the index's digest beside the manifest's.

`load_local` takes nothing on the store's word: the entry's manifest digest must be the
one a pinned reference names (or its index's), an index it names must list that manifest
as its wasi/wasm entry, and the module is what the manifest holds, checked on every load
(the artifact's layer digest; an image's layers, searched again and re-hashed in that
same read, one read per layer).

A pull is bounded whatever the manifest lists: at most `MAX_LAYERS` layers, each config
and layer descriptor with the integer `size` OCI requires, a `diff_ids` entry for each
layer checked before any is fetched, at most `MAX_PULL_BYTES` of layers in all (a layer
listed twice counts twice) and as many unpacked bytes in all (each distinct layer is
read and unpacked once: its `diff_ids` entry is checked in the read that searches it for
the module and its links), the config and layers within one deadline (`PULL_GRACE`,
`BLOB_GRACE` per distinct blob, and their listed sizes at `MIN_BLOB_RATE`), and layers
are read from the store's files one at a time, never all held in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModuleError
from .errors import BlobTooLarge, ImageNotFound, IntegrityError, StoreCorrupt
from .image import (
    UnpackBudget,
    WasmImage,
    describe,
    extract_module,
    field,
    manifest_kind,
    parse_json,
    select_platform,
)
from .media import OCI_MANIFEST, descriptor_size, sha256_digest, shown
from .reference import Reference, is_digest
from .registry import DOCUMENT_DEADLINE, MIN_BLOB_RATE, Deadline, RegistryClient
from .store import Store

__all__ = ["PulledImage", "pull", "push", "load_local", "MAX_LAYER_BYTES", "MAX_CONFIG_BYTES",
           "MAX_LAYERS", "MAX_PULL_BYTES", "MODULE_ANNOTATION", "LAYOUT_ANNOTATION",
           "INDEX_ANNOTATION", "PULL_GRACE", "BLOB_GRACE", "fetch_manifest"]

# The engine's own cap on a module (512 MiB), without importing the engine.
MAX_LAYER_BYTES = 512 * 1024**2
MAX_CONFIG_BYTES = 4 * 1024**2
MAX_LAYERS = 128  # Docker's own limit on a build is 127 layers
MAX_PULL_BYTES = 2 * 1024**3  # every layer of one pull, as listed; and as unpacked
# The config and layers of one pull arrive within PULL_GRACE, plus BLOB_GRACE per distinct
# blob (its round trips), plus their listed sizes at MIN_BLOB_RATE: each blob's own
# deadline alone let 128 trickled layers take 128 times as long.
PULL_GRACE = DOCUMENT_DEADLINE
BLOB_GRACE = 2.0
MODULE_ANNOTATION = "io.stockade.module.digest"
LAYOUT_ANNOTATION = "io.stockade.layout"
INDEX_ANNOTATION = "io.stockade.index.digest"  # the index an image was pulled through


@dataclass(frozen=True)
class PulledImage:
    """An image in the local store: its manifest descriptor (with the module's digest in
    its annotations), the parsed manifest and config, and what they describe."""

    ref: Reference
    descriptor: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]
    image: WasmImage

    @property
    def digest(self) -> str:
        """The manifest digest: what a reference is pinned to."""
        return str(self.descriptor["digest"])

    @property
    def module_digest(self) -> str:
        """The digest of the raw module bytes in the store (checked against the manifest
        by `load_local`)."""
        return str(self.descriptor["annotations"][MODULE_ANNOTATION])

    @property
    def index_digest(self) -> str | None:
        """The digest of the index this manifest was reached through (its wasi/wasm
        entry), or None."""
        index = (self.descriptor.get("annotations") or {}).get(INDEX_ANNOTATION)
        return None if index is None else str(index)


def fetch_manifest(client: RegistryClient, ref: Reference, selector: str,
                   expected: str | None) -> tuple[bytes, str]:
    """(body, media type) of a manifest, checked against `expected` and the registry's
    `Docker-Content-Digest`. Raises ImageNotFound, IntegrityError, RegistryUnavailable."""
    body, media_type, header_digest = client.get_manifest(ref.repository, selector, str(ref))
    actual = sha256_digest(body)
    if expected is not None and actual != expected:
        raise IntegrityError(f"{ref}: manifest has digest {actual}, expected {expected}; refused")
    if header_digest and header_digest.startswith("sha256:") and header_digest != actual:
        raise IntegrityError(f"{ref}: manifest has digest {actual}, the registry says "
                             f"{header_digest}; refused")
    return body, media_type


def _has_size(descriptor: dict[str, Any]) -> bool:
    """Whether a descriptor has the non-negative integer `size` OCI requires (not a bool,
    a float or a string): without it a blob's deadline and limits fall back to the maximum."""
    size = descriptor_size(descriptor)
    return size is not None and size >= 0


def _layer_descriptors(manifest: dict[str, Any], ref: str) -> list[dict[str, Any]]:
    """The manifest's layer descriptors, each an object with a string digest and an
    integer size, at most `MAX_LAYERS` of them. Raises ModuleError."""
    layers = field(manifest, "layers", list, f"{ref}: manifest") or []
    if len(layers) > MAX_LAYERS:
        raise ModuleError(f"{ref}: manifest lists {len(layers)} layers (at most "
                          f"{MAX_LAYERS}); refused")
    for number, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("digest"), str):
            raise ModuleError(f"{ref}: manifest layer {number} is not a descriptor")
        if not is_digest(layer["digest"]):  # `sha256:../x` was an integrity error (65)
            raise ModuleError(f"{ref}: manifest layer {number} digest "
                              f"{shown(layer['digest'])} is not sha256:HEX; refused")
        if not _has_size(layer):
            raise ModuleError(f"{ref}: manifest layer {number} has no size (a non-negative "
                              "integer); refused")
    return layers


def _config_descriptor(manifest: dict[str, Any], ref: str) -> dict[str, Any]:
    """The manifest's config descriptor, with an integer size. Raises ModuleError."""
    config = manifest.get("config")
    if not isinstance(config, dict):
        raise ModuleError(f"{ref}: manifest has no config descriptor")
    if not is_digest(config.get("digest")):
        raise ModuleError(f"{ref}: manifest config digest {shown(config.get('digest'))} is "
                          "not sha256:HEX; refused")
    if not _has_size(config):
        raise ModuleError(f"{ref}: manifest config descriptor has no size (a non-negative "
                          "integer); refused")
    return config


def _pull_deadline(blobs: Iterable[dict[str, Any]]) -> Deadline:
    """One deadline for fetching `blobs` (sized descriptors; a digest listed again is
    fetched once, so it is counted once)."""
    sizes = {str(blob["digest"]): int(blob["size"]) for blob in blobs}
    return Deadline.after(PULL_GRACE + BLOB_GRACE * len(sizes) +
                          sum(sizes.values()) / MIN_BLOB_RATE)


def _diff_ids(config: dict[str, Any], count: int, ref: str) -> list[str]:
    """A Docker+Wasm config's rootfs.diff_ids, one string per layer (checked before any
    layer is fetched). Raises ModuleError."""
    rootfs = field(config, "rootfs", dict, f"{ref}: image config") or {}
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list) or len(diff_ids) != count or \
            not all(isinstance(d, str) for d in diff_ids):
        raise ModuleError(f"{ref}: rootfs.diff_ids does not list one digest per layer")
    return diff_ids


def _check_total(layers: list[dict[str, Any]], limit: int, ref: str) -> None:
    """Refuse, before fetching, layers whose listed sizes add up to more than `limit`."""
    total = sum(size for layer in layers if (size := descriptor_size(layer) or 0) > 0)
    if total > limit:
        raise BlobTooLarge(f"{ref}: layers of {total} bytes, over the limit of {limit} bytes "
                           "in all; refused")


def _fetch_layers(client: RegistryClient, ref: Reference, store: Store,
                  layers: list[dict[str, Any]], max_layer: int, max_total: int,
                  overall: Deadline) -> list[tuple[dict[str, Any], Path]]:
    """Fetch each layer into the store (a digest listed again is not fetched again),
    within `max_total` bytes in all and before `overall`. Returns (descriptor, blob file)
    pairs."""
    fetched: dict[str, Path] = {}
    used = 0
    for descriptor in layers:
        digest = descriptor["digest"]
        if digest not in fetched:
            left = max_total - used
            if left <= 0:
                raise BlobTooLarge(f"{ref}: layers over the limit of {max_total} bytes in "
                                   "all; refused")
            stored = client.fetch_blob(ref.repository, descriptor, store,
                                       min(max_layer, left), "layer", overall)
            fetched[digest] = store.blob_path(stored)
        used += fetched[digest].stat().st_size
        if used > max_total:
            raise BlobTooLarge(f"{ref}: layers over the limit of {max_total} bytes in all; "
                               "refused")
    return [(descriptor, fetched[descriptor["digest"]]) for descriptor in layers]


def pull(ref: Reference, store: Store, insecure: frozenset[str] = frozenset(),
         max_layer: int = MAX_LAYER_BYTES, max_total: int | None = None) -> PulledImage:
    """Pull `ref` into `store` and tag it there under `str(ref)`; `max_total` bounds the
    layers in all, as fetched and as unpacked (default `MAX_PULL_BYTES`, or `max_layer`
    when larger). Raises
    ImageNotFound, PlatformMismatch, IntegrityError, BlobTooLarge, RegistryUnavailable,
    ModuleError."""
    total = max(MAX_PULL_BYTES, max_layer) if max_total is None else max_total
    with store.recording() as written:
        try:
            return _pull(ref, store, insecure, max_layer, total)
        except BaseException:
            # A failed pull leaves nothing behind: not the verified config or layers it
            # fetched before the failure, unless another image uses them.
            store.discard_unreferenced(written)
            raise


def _pull(ref: Reference, store: Store, insecure: frozenset[str], max_layer: int,
          total: int) -> PulledImage:
    with RegistryClient(ref, insecure) as client:
        body, media_type = fetch_manifest(client, ref, ref.selector, ref.digest)
        document = parse_json(body, f"{ref}: manifest")
        index_digest = None
        if manifest_kind(document, media_type) == "index":
            entry = select_platform(document, str(ref))
            index_digest = store.put(body)
            body, media_type = fetch_manifest(client, ref, str(entry.get("digest")),
                                                  str(entry.get("digest")))
            document = parse_json(body, f"{ref}: manifest")
            if manifest_kind(document, media_type) != "manifest":
                raise ModuleError(f"{ref}: the index's wasi/wasm entry is not a manifest")
        descriptors = _layer_descriptors(document, str(ref))
        _check_total(descriptors, total, str(ref))
        config_descriptor = _config_descriptor(document, str(ref))
        overall = _pull_deadline([config_descriptor, *descriptors])
        config_digest = client.fetch_blob(ref.repository, config_descriptor, store,
                                          MAX_CONFIG_BYTES, "config", overall)
        config = parse_json(store.get(config_digest, MAX_CONFIG_BYTES), f"{ref}: config")
        image = describe(document, config, str(ref))
        diff_ids = [] if image.layout == "artifact" else \
            _diff_ids(config, len(descriptors), str(ref))
        layers = _fetch_layers(client, ref, store, descriptors, max_layer, total, overall)
    if image.layout == "artifact":
        module_digest = str(image.module_layer["digest"])
    else:
        module_digest = store.put(extract_module(layers, image.module_path or "", max_layer,
                                                 UnpackBudget(total), diff_ids))
    manifest_digest = store.put(body)
    annotations = {MODULE_ANNOTATION: module_digest, LAYOUT_ANNOTATION: image.layout}
    if index_digest is not None:
        annotations[INDEX_ANNOTATION] = index_digest
    descriptor = {"mediaType": document.get("mediaType") or media_type or OCI_MANIFEST,
                  "digest": manifest_digest, "size": len(body), "annotations": annotations}
    store.tag(str(ref), descriptor)
    if ref.digest is None:
        store.tag(str(ref.with_digest(manifest_digest)), descriptor)
    return PulledImage(ref, descriptor, document, config, image)


def load_local(ref: Reference, store: Store) -> PulledImage:
    """The image stored under `ref` (or, for a digest reference, any entry with that
    manifest or index digest), every blob re-verified and the module checked against
    the manifest. Raises ImageNotFound when absent, StoreCorrupt when a blob no longer
    matches or the entry names another manifest or module than the manifest holds,
    StoreRefused for a store of another user or writable by group or others."""
    descriptor = store.lookup(str(ref))
    named = descriptor is not None
    if descriptor is None and ref.digest is not None:
        descriptor = next((d for d in store.entries() if ref.digest in
                           (d.get("digest"), (d.get("annotations") or {}).get(INDEX_ANNOTATION))),
                          None)
    if descriptor is None:
        raise ImageNotFound(f"{ref}: not in the local store ({store.root}); "
                            "`stockade oci pull` it first")
    annotations = descriptor.get("annotations")
    if not isinstance(annotations, dict) or MODULE_ANNOTATION not in annotations:
        raise ImageNotFound(f"{ref}: the store entry names no module; pull it again")
    digest, index = descriptor.get("digest"), annotations.get(INDEX_ANNOTATION)
    if not isinstance(digest, str) or not is_digest(digest) or \
            (index is not None and not is_digest(index)):
        raise StoreCorrupt(f"{ref}: the store entry's digests are malformed; pull the "
                           "image again")
    if ref.digest is not None and ref.digest not in (digest, index):
        raise StoreCorrupt(f"{ref}: the store entry names manifest {digest}; pull the "
                           "image again")
    if index is not None and not (named or ref.digest == index):
        # Found by the manifest's own digest: not reached through that index.
        annotations = {k: v for k, v in annotations.items() if k != INDEX_ANNOTATION}
        index = None
    if index is not None:
        _check_index(ref, store, str(index), digest)
    manifest = parse_json(store.get(digest, MAX_CONFIG_BYTES), f"{ref}: manifest")
    config_digest = str((field(manifest, "config", dict, f"{ref}: manifest") or {}).get("digest"))
    config = parse_json(store.get(config_digest, MAX_CONFIG_BYTES), f"{ref}: config")
    image = describe(manifest, config, str(ref))
    held = _held_module(ref, store, manifest, image)
    named_module = annotations[MODULE_ANNOTATION]
    if named_module != held:
        said = named_module if is_digest(named_module) else shown(named_module)
        raise StoreCorrupt(f"{ref}: the store entry names module {said}, the manifest "
                           f"holds {held}; pull the image again")
    return PulledImage(ref, {**descriptor, "annotations": annotations}, manifest, config, image)


def _check_index(ref: Reference, store: Store, index: str, digest: str) -> None:
    """Refuse (StoreCorrupt) an index that does not list manifest `digest` as its
    wasi/wasm entry."""
    document = parse_json(store.get(index, MAX_CONFIG_BYTES), f"{ref}: index")
    if manifest_kind(document, None) != "index" or \
            select_platform(document, str(ref)).get("digest") != digest:
        raise StoreCorrupt(f"{ref}: the store entry's index {index} does not list manifest "
                           f"{digest} as its wasi/wasm image; pull the image again")


def _held_module(ref: Reference, store: Store, manifest: dict[str, Any],
                 image: WasmImage) -> str:
    """The digest of the module `manifest` holds: the artifact's layer, or the file an
    image's layers leave at its Entrypoint (each layer re-hashed in the read that searches
    it: one read per layer)."""
    if image.layout == "artifact":
        return str(image.module_layer.get("digest"))
    descriptors = _layer_descriptors(manifest, str(ref))
    layers = [(layer, store.blob_path(str(layer["digest"]))) for layer in descriptors]
    total = max(MAX_PULL_BYTES, MAX_LAYER_BYTES)
    module = extract_module(layers, image.module_path or "", total, UnpackBudget(total),
                            open_blob=store.verifying)
    return sha256_digest(module)


def push(ref: Reference, store: Store, insecure: frozenset[str] = frozenset()) -> str:
    """Push the locally stored `ref` (blobs, then the manifest under its tag); returns the
    manifest digest. Raises ImageNotFound when `ref` is not in the store."""
    local = load_local(ref, store)
    with RegistryClient(ref, insecure) as client:
        blobs = [local.manifest["config"], *local.manifest.get("layers", [])]
        for descriptor in blobs:
            digest = str(descriptor["digest"])
            client.upload_blob(ref.repository, digest, store.get(digest))
        body = store.get(local.digest)
        client.put_manifest(ref.repository, ref.tag or local.digest, body,
                            str(local.descriptor.get("mediaType") or OCI_MANIFEST))
    return local.digest
