"""Finding the module across a Docker+Wasm image's layers as a container runtime would:
OCI whiteouts (`.wh.NAME`, the opaque `.wh..wh..opq`) delete what lower layers hold, a
parent path replaced by a file hides what was below it, a layer holding the module path
twice is refused (tar takes the last copy, a first-match search the first), and a layer of
a million empty members is refused at a bounded count without keeping them all."""

from __future__ import annotations

import gzip
import io
import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from stockade.errors import ModuleError
from stockade.oci.errors import BlobTooLarge, StoreCorrupt
from stockade.oci.image import extract_module
from stockade.oci.reference import parse_reference
from stockade.oci.store import Store
from stockade.oci.transfer import PulledImage, load_local, pull

from .test_hostile_pull import (  # noqa: F401
    WASM,
    Server,
    _gzip_image,
    count_layer_opens,
    image,
    serve,
    sha,
)

__all__ = ["serve"]

LOWER = WASM + b"lower"
UPPER = WASM + b"upper"
Entry = tuple[str, bytes | None] | tuple[str, bytes | None, bytes]


def layer(*entries: Entry) -> bytes:
    """A tar layer of (name, data) regular files, (name, None) directories, or
    (name, b"", type) members of another type."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, *kind in entries:
            info = tarfile.TarInfo(name)
            if kind:
                info.type = kind[0]
                if info.type == tarfile.SYMTYPE:
                    info.linkname = "/elsewhere"
            elif data is None:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def pulled(server: Server, repo: str, layers: list[bytes], tmp_path: Path,
           entry: str = "/app.wasm") -> PulledImage:
    image(server, repo, layers, config={"config": {"Entrypoint": [entry]}})
    return pull(parse_reference(f"{server.host}/{repo}:1"), Store(tmp_path / repo),
                frozenset({server.host}))


# -- duplicates ----------------------------------------------------------------------------


@pytest.mark.parametrize("second", ["app.wasm", "./app.wasm", "/app.wasm"])
def test_a_layer_holding_the_module_twice_is_refused(serve: Callable[[], Server],
                                                     tmp_path: Path, second: str) -> None:
    # tar, umoci and containerd keep the last copy; the first was run (found by review)
    registry = serve()
    with pytest.raises(ModuleError, match="holds /app.wasm twice") as caught:
        pulled(registry, "dup", [layer(("app.wasm", LOWER), (second, UPPER))], tmp_path)
    assert type(caught.value) is ModuleError and "\n" not in caught.value.message


def test_the_same_path_in_two_layers_is_the_upper_one(serve: Callable[[], Server],
                                                      tmp_path: Path) -> None:
    registry = serve()
    done = pulled(registry, "two", [layer(("app.wasm", LOWER)), layer(("app.wasm", UPPER))],
                  tmp_path)
    assert done.module_digest == sha(UPPER)


# -- whiteouts -------------------------------------------------------------------------------


@pytest.mark.parametrize(("upper", "entry"), [
    (layer((".wh.app.wasm", b"")), "/app.wasm"),
    (layer(("bin/.wh.app.wasm", b"")), "/bin/app.wasm"),
    (layer((".wh.bin", b"")), "/bin/app.wasm"),
    (layer(("bin/.wh..wh..opq", b"")), "/bin/app.wasm"),
    (layer((".wh..wh..opq", b"")), "/bin/app.wasm"),
    (layer(("bin", b"not a directory")), "/bin/app.wasm"),
    (layer(("bin", b"", tarfile.SYMTYPE)), "/bin/app.wasm"),
], ids=["whiteout", "whiteout-in-dir", "parent-whiteout", "opaque-dir", "opaque-root",
        "parent-a-file", "parent-a-symlink"])
def test_a_module_an_upper_layer_deletes_is_not_run(serve: Callable[[], Server],
                                                    tmp_path: Path, upper: bytes,
                                                    entry: str) -> None:
    # the lower layer's module was found and run as if no upper layer deleted it; a
    # symbolic link is one the module's path passes through (test_layer_links.py)
    registry = serve()
    lower = layer((entry.lstrip("/"), LOWER))
    with pytest.raises(ModuleError, match="deleted|replaced|passes through the symbolic "
                                          "link /bin ") as caught:
        pulled(registry, "gone", [lower, upper, layer(("other", b"x"))], tmp_path, entry)
    assert type(caught.value) is ModuleError and "\n" not in caught.value.message
    assert entry in caught.value.message


@pytest.mark.parametrize("upper", [
    layer((".wh.other.wasm", b"")),
    layer(("bin/.wh.app.wasm", b"")),
    layer(("lib/.wh..wh..opq", b"")),
    layer(("app.wasm.d", b"")),
], ids=["other-file", "other-dir", "opaque-other-dir", "prefix-not-parent"])
def test_whiteouts_of_other_paths_leave_the_module(serve: Callable[[], Server], tmp_path: Path,
                                                   upper: bytes) -> None:
    registry = serve()
    done = pulled(registry, "kept", [layer(("app.wasm", LOWER)), upper], tmp_path)
    assert done.module_digest == sha(LOWER)


def test_a_whiteout_hides_only_lower_layers(serve: Callable[[], Server], tmp_path: Path) -> None:
    """In its own layer a whiteout (or opaque directory) hides nothing; a layer above it
    may add the path again."""
    registry = serve()
    same = pulled(registry, "same", [layer(("bin/app.wasm", LOWER)),
                                     layer(("bin/.wh..wh..opq", b""), ("bin/app.wasm", UPPER))],
                  tmp_path, "/bin/app.wasm")
    assert same.module_digest == sha(UPPER)
    again = pulled(registry, "again", [layer(("app.wasm", LOWER)), layer((".wh.app.wasm", b"")),
                                       layer(("app.wasm", UPPER))], tmp_path)
    assert again.module_digest == sha(UPPER)


# -- member counts ---------------------------------------------------------------------------


def _many_members(count: int) -> bytes:
    """A tar+gzip layer: `count` empty members, then the module (a few KB gzipped)."""
    empty = tarfile.TarInfo("f").tobuf(format=tarfile.USTAR_FORMAT)
    return gzip.compress(empty * count + layer(("app.wasm", WASM)), 6, mtime=0)


def test_a_layer_of_too_many_members_is_one_line_from_the_cli(
        serve: Callable[[], Server], tmp_path: Path) -> None:
    # 1,000,000 empty headers (2.7 MB gzipped) cost 16 s of CPU and 470 MB to pull
    from stockade.oci.image import MAX_LAYER_MEMBERS

    from .fixtures import cli, stockade_env

    registry = serve()
    _gzip_image(registry, "many", _many_members(MAX_LAYER_MEMBERS + 1))
    env = stockade_env(tmp_path / "cache", tmp_path / "state")
    env.update(HOME=str(tmp_path), STOCKADE_INSECURE_REGISTRIES=registry.host)
    done = cli(env, "oci", "pull", f"{registry.host}/many:1", timeout=120)
    assert done.returncode == BlobTooLarge.exit_code, done.stderr
    assert f"more than {MAX_LAYER_MEMBERS} entries" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_the_members_of_a_layer_are_not_kept(tmp_path: Path) -> None:
    """tarfile keeps every member it has read in `TarFile.members`: 470 bytes each."""
    count = 20_000
    blob = tmp_path / "layer"
    blob.write_bytes(_many_members(count))
    descriptor = {"digest": sha(blob.read_bytes()),
                  "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}
    tracemalloc.start()
    try:
        found = extract_module([(descriptor, blob)], "/app.wasm", 1 << 30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found == WASM
    assert peak < 2 * 1024**2, f"{peak} bytes traced for {count} members"


def test_members_are_counted_over_the_layers_of_a_pull(tmp_path: Path) -> None:
    """Each layer just under the cap, searched top down in vain but the lowest."""
    from stockade.oci.image import MAX_LAYER_MEMBERS, MAX_PULL_MEMBERS, UnpackBudget

    per_layer = MAX_LAYER_MEMBERS - 10
    empty = tarfile.TarInfo("f").tobuf(format=tarfile.USTAR_FORMAT)
    upper = gzip.compress(empty * per_layer + b"\0" * 1024, 6, mtime=0)
    layers = []
    for number in range(MAX_PULL_MEMBERS // per_layer + 1):
        blob = tmp_path / f"layer{number}"
        blob.write_bytes(upper if number else _many_members(per_layer))
        layers.append(({"digest": f"sha256:{number:064x}"}, blob))
    with pytest.raises(BlobTooLarge, match=r"entries \(tar headers\) in all") as caught:
        extract_module(layers, "/app.wasm", 1 << 30, UnpackBudget(1 << 40))
    assert "\n" not in caught.value.message


# -- one read per layer ----------------------------------------------------------------------


def _gzipped(server: Server, repo: str, tars: list[bytes], *,
             packed: list[bytes] | None = None, diff_ids: list[str] | None = None) -> None:
    """A Docker+Wasm image under `repo:1` of tar+gzip layers: `tars` gzipped (or the
    blobs `packed`), `diff_ids` the digests of `tars` unless given."""
    import json

    from .test_hostile_pull import TGZ, document

    blobs = packed or [gzip.compress(tar, 1, mtime=0) for tar in tars]
    image(server, repo, tars, config={
        "rootfs": {"type": "layers", "diff_ids": diff_ids or [sha(tar) for tar in tars]}})
    manifest = json.loads(server.routes[f"/v2/{repo}/manifests/1"][2])  # type: ignore[index]
    manifest["layers"] = [{"mediaType": TGZ, "digest": sha(blob), "size": len(blob)}
                          for blob in blobs]
    for blob in blobs:
        server.routes[f"/v2/{repo}/blobs/{sha(blob)}"] = (200, {}, blob)
    server.routes[f"/v2/{repo}/manifests/1"] = document(json.dumps(manifest).encode())


def _padding(number: int, size: int) -> bytes:
    """A tar layer of one file of `size` zero bytes (a few KiB gzipped)."""
    return layer((f"pad{number}", bytes(size)))


def test_a_pull_reads_each_layer_once(serve: Callable[[], Server], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Its diff_id is checked in the read that searches it: a pull read every layer
    twice, once for `rootfs.diff_ids`, once for the module and its links."""
    registry = serve()
    tars = [_padding(0, 1 << 20), _padding(1, 1 << 20), layer(("app.wasm", UPPER))]
    _gzipped(registry, "once", tars)
    opened = count_layer_opens(monkeypatch)
    done = pull(parse_reference(f"{registry.host}/once:1"), Store(tmp_path / "store"),
                frozenset({registry.host}))
    assert done.module_digest == sha(UPPER)
    assert len(opened) == len(tars) == len(set(opened)), opened


def _bytes_read() -> int:
    """What this process has read so far through read(2) and its kin, in bytes."""
    io_file = Path("/proc/self/io")
    if not io_file.exists():
        pytest.skip("no /proc/self/io to count the bytes read")
    return next(int(line.split()[1]) for line in io_file.read_text().splitlines()
                if line.startswith("rchar:"))


def test_a_run_from_the_store_reads_each_layer_once(serve: Callable[[], Server],
                                                    tmp_path: Path) -> None:
    """`load_local` (every `run oci://` of a stored image) hashed each layer file through,
    then read it again to search it: 2x the image's bytes. Now the hash is taken in the
    read that searches it, and a changed layer is still caught."""
    registry = serve()
    tars = [_padding(0, 24 << 20), layer(("app.wasm", UPPER))]
    image(registry, "stored", tars)
    ref = parse_reference(f"{registry.host}/stored:1")
    store = Store(tmp_path / "store")
    pull(ref, store, frozenset({registry.host}))
    before = _bytes_read()
    assert load_local(ref, store).module_digest == sha(UPPER)
    read = _bytes_read() - before
    assert sum(map(len, tars)) <= read < 1.25 * sum(map(len, tars)), read
    blob = store.blob_path(sha(tars[0]))
    blob.write_bytes(blob.read_bytes()[:-1] + b"!")  # in the archive's end, past the search
    with pytest.raises(StoreCorrupt, match="does not match its digest"):
        load_local(ref, store)
    assert not blob.exists()


def test_a_stored_layer_changed_into_no_tar_is_reported_as_corrupt(
        serve: Callable[[], Server], tmp_path: Path) -> None:
    """The search fails on the changed bytes before the hash is complete: the blob's own
    digest, not what its bytes made of the search, is the error."""
    registry = serve()
    tars = [layer(("app.wasm", UPPER))]
    image(registry, "garbled", tars)
    ref = parse_reference(f"{registry.host}/garbled:1")
    store = Store(tmp_path / "store")
    pull(ref, store, frozenset({registry.host}))
    blob = store.blob_path(sha(tars[0]))
    blob.write_bytes(b"no tar header" + bytes(len(tars[0])))
    with pytest.raises(StoreCorrupt):
        load_local(ref, store)
    assert not blob.exists()


def test_unpacked_bytes_are_charged_once(serve: Callable[[], Server], tmp_path: Path) -> None:
    """12 MiB unpacked under a 20 MiB budget: charged twice (24 MiB) it was refused, so a
    default pull (2 GiB) refused images of more than 1 GiB."""
    registry = serve()
    mib = 1 << 20
    tars = [_padding(0, 6 * mib), _padding(1, 6 * mib), layer(("app.wasm", UPPER))]
    _gzipped(registry, "budget", tars)
    ref = parse_reference(f"{registry.host}/budget:1")
    done = pull(ref, Store(tmp_path / "store"), frozenset({registry.host}), max_total=20 * mib)
    assert done.module_digest == sha(UPPER)
    with pytest.raises(BlobTooLarge, match="unpack to more than"):
        pull(ref, Store(tmp_path / "under"), frozenset({registry.host}), max_total=10 * mib)


def test_a_layer_unlike_its_diff_id_is_still_refused(serve: Callable[[], Server],
                                                      tmp_path: Path) -> None:
    """The one read checks every byte of the layer as unpacked, past the end of its tar
    archive too (there the search stops reading)."""
    from stockade.oci.errors import IntegrityError

    registry = serve()
    module = layer(("app.wasm", UPPER))
    trailing = module + b"bytes after the archive's end" + bytes(4096)
    _gzipped(registry, "trailing", [trailing])
    store = Store(tmp_path / "store")
    assert pull(parse_reference(f"{registry.host}/trailing:1"), store,
                frozenset({registry.host})).module_digest == sha(UPPER)
    _gzipped(registry, "unlike", [trailing], diff_ids=[sha(module)])
    with pytest.raises(IntegrityError, match="rootfs.diff_ids says") as caught:
        pull(parse_reference(f"{registry.host}/unlike:1"), store, frozenset({registry.host}))
    assert sha(module) in caught.value.message and "\n" not in caught.value.message


def test_a_gzip_stream_broken_after_the_archive_is_refused(serve: Callable[[], Server],
                                                           tmp_path: Path) -> None:
    """A gzip checksum is read at the stream's end, which the search alone never reaches."""
    registry = serve()
    module = layer(("app.wasm", UPPER))
    packed = bytearray(gzip.compress(module, 6, mtime=0))
    packed[-8] ^= 0xFF  # the CRC-32 of the unpacked bytes
    _gzipped(registry, "crc", [module], packed=[bytes(packed)])
    with pytest.raises(ModuleError, match="CRC") as caught:
        pull(parse_reference(f"{registry.host}/crc:1"), Store(tmp_path / "store"),
             frozenset({registry.host}))
    assert caught.value.exit_code == 126 and "\n" not in caught.value.message


def test_a_layer_of_corrupt_deflate_data_is_the_modules_error(serve: Callable[[], Server],
                                                               tmp_path: Path) -> None:
    """gzip raises zlib.error, no OSError, for a broken deflate block: it left the pull
    as a traceback."""
    registry = serve()
    module = layer(("app.wasm", WASM + bytes(range(256)) * 400))
    packed = bytearray(gzip.compress(module, 6, mtime=0))
    packed[10] ^= 0x55  # the first block's header
    _gzipped(registry, "deflate", [module], packed=[bytes(packed)])
    with pytest.raises(ModuleError, match="not a readable") as caught:
        pull(parse_reference(f"{registry.host}/deflate:1"), Store(tmp_path / "store"),
             frozenset({registry.host}))
    assert caught.value.exit_code == 126 and "\n" not in caught.value.message


def test_a_stored_layer_that_is_no_gzip_is_the_images_fault_not_the_stores(
        tmp_path: Path) -> None:
    """A blob that matches its digest but is no gzip made gzip raise BadGzipFile (an
    OSError) inside the store's read: it was reported as a store that cannot be read."""
    store = Store(tmp_path / "store")
    digest = store.put(b"\x1f\x8bnot really gzip" + bytes(600))
    layer_ = {"digest": digest, "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}
    with pytest.raises(ModuleError, match="not a readable tar") as raised:
        extract_module([(layer_, store.blob_path(digest))], "/app.wasm", 1 << 20,
                       open_blob=store.verifying)
    assert not isinstance(raised.value, StoreCorrupt)
    assert store.blob_path(digest).exists()  # its bytes are what was pulled
