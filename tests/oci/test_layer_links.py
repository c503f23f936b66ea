"""Paths through symbolic links in a Docker+Wasm image's layers: tar and containerd follow
a link that is a member's parent directory (a member `a/app.wasm` over a link `a -> b` is
written to `b/app.wasm`; a whiteout `a/.wh.app.wasm` deletes `b/app.wasm`), a search by
name does not, so which file runs would depend on who unpacks the image. An image where
any member, whiteout or the Entrypoint passes through a link is refused; a link nothing
passes through is kept."""

from __future__ import annotations

import gzip
import io
import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from stockade.errors import ModuleError
from stockade.oci.errors import BlobTooLarge
from stockade.oci.image import UnpackBudget, extract_module

from .test_hostile_pull import WASM, Server, image, sha
from .test_layers import pulled, serve

__all__ = ["serve"]  # the registry fixture

X = WASM + b"module X"
Y = WASM + b"module Y"
TGZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def layer(*entries: tuple[str, bytes | str | None]) -> bytes:
    """A tar layer of (name, bytes) regular files, (name, None) directories and
    (name, "target") symbolic links, in this order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
            elif content is None:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if isinstance(content, bytes) else None)
    return out.getvalue()


def refused(registry: Server, tmp_path: Path, layers: list[bytes], entry: str) -> str:
    """The one-line message of the ModuleError pulling `layers` raises."""
    with pytest.raises(ModuleError) as caught:
        pulled(registry, "links", layers, tmp_path, entry)
    assert type(caught.value) is ModuleError and "\n" not in caught.value.message
    return caught.value.message


def found(tmp_path: Path, layers: list[bytes], entry: str) -> bytes:
    """What `extract_module` finds at `entry` in `layers` (lowest first)."""
    paths = []
    for number, blob in enumerate(layers):
        path = tmp_path / f"layer{number}"
        path.write_bytes(blob)
        paths.append(({"digest": sha(blob)}, path))
    return extract_module(paths, entry, 1 << 20)


# -- an upper layer writing or deleting through a lower layer's link -----------------------


@pytest.mark.parametrize("upper", [
    layer(("a/app.wasm", Y)),
    layer(("a/.wh.app.wasm", b"")),
    layer(("a/.wh..wh..opq", b"")),
], ids=["file", "whiteout", "opaque"])
def test_an_upper_layer_through_a_lower_link_is_refused(serve: Callable[[], Server],
                                                        tmp_path: Path, upper: bytes) -> None:
    # tar writes a/app.wasm (Y) to b/app.wasm and the whiteouts delete it there; X ran
    registry = serve()
    lower = layer(("b/app.wasm", X), ("a", "b"))
    message = refused(registry, tmp_path, [lower, upper], "/b/app.wasm")
    assert f"layer {sha(upper)}" in message and f"layer {sha(lower)}" in message
    assert "passes through the symbolic link /a " in message


def test_a_link_in_a_layer_below_the_module_counts(serve: Callable[[], Server],
                                                   tmp_path: Path) -> None:
    """The module's own layer puts it through a link a lower one holds: tar writes X to
    c/app.wasm, where the layer above holds Y, and /b/app.wasm is Y."""
    registry = serve()
    layers = [layer(("b", "c")), layer(("b/app.wasm", X)), layer(("c/app.wasm", Y))]
    assert "passes through the symbolic link /b " in refused(registry, tmp_path, layers,
                                                             "/b/app.wasm")


@pytest.mark.parametrize("order", ["file-first", "link-first"])
def test_a_link_and_a_path_through_it_in_one_layer_are_refused(
        serve: Callable[[], Server], tmp_path: Path, order: str) -> None:
    # file first: tar writes a/app.wasm into a directory, then fails to replace it with
    # the link or removes it; link first: the file lands in b. Either way not by name.
    registry = serve()
    entries: list[tuple[str, bytes | str | None]] = [("a/app.wasm", Y), ("a", "b")]
    upper = layer(*(entries if order == "file-first" else reversed(entries)))
    message = refused(registry, tmp_path, [layer(("b/app.wasm", X)), upper], "/b/app.wasm")
    assert "passes through the symbolic link /a " in message


def test_a_dotdot_through_a_link_is_refused(tmp_path: Path) -> None:
    """`a/../app.wasm` is `app.wasm` by name, `c/app.wasm` to the kernel when `a -> c/d`:
    refused as any member named with a `..` is (GNU tar skips it, containerd writes it)."""
    with pytest.raises(ModuleError, match="a/../app.wasm: a '..' component"):
        found(tmp_path, [layer(("a", "c/d"), ("app.wasm", X)), layer(("a/../app.wasm", Y))],
              "/app.wasm")


def test_a_link_in_an_upper_layer_over_a_lower_directory_is_refused(tmp_path: Path) -> None:
    # containerd removes the directory a for the link; tar cannot remove it, not empty
    with pytest.raises(ModuleError, match="passes through the symbolic link /a "):
        found(tmp_path, [layer(("a/x", b"x"), ("app.wasm", X)), layer(("a", "b"))],
              "/app.wasm")


# -- the Entrypoint through a link -----------------------------------------------------------


def test_an_entrypoint_through_a_link_says_so(serve: Callable[[], Server],
                                              tmp_path: Path) -> None:
    """One layer, no upper one: the message said 'deleted by an upper layer'."""
    registry = serve()
    lower = layer(("b/app.wasm", X), ("a", "b"))
    message = refused(registry, tmp_path, [lower], "/a/app.wasm")
    assert message.startswith("/a/app.wasm passes through the symbolic link /a ")
    assert f"layer {sha(lower)}" in message and "upper layer" not in message


@pytest.mark.parametrize("entry", ["/a/b/app.wasm", "/a/../app.wasm"])
def test_an_entrypoint_through_a_nested_or_dotdot_link_is_refused(tmp_path: Path,
                                                                  entry: str) -> None:
    layers = [layer(("app.wasm", X), ("c/b/app.wasm", X), ("a", "c"))]
    with pytest.raises(ModuleError, match=f"^{entry} passes through the symbolic link /a "):
        found(tmp_path, layers, entry)


def test_a_symbolic_link_as_the_image_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModuleError, match="image root / is a symbolic link"):
        found(tmp_path, [layer(("./", "elsewhere"), ("app.wasm", X))], "/app.wasm")


def test_the_cli_refuses_it_in_one_line(serve: Callable[[], Server], tmp_path: Path) -> None:
    from .fixtures import cli, stockade_env

    registry = serve()
    image(registry, "through", [layer(("b/app.wasm", X), ("a", "b")), layer(("a/app.wasm", Y))],
          config={"config": {"Entrypoint": ["/b/app.wasm"]}})
    env = stockade_env(tmp_path / "cache", tmp_path / "state")
    env.update(HOME=str(tmp_path), STOCKADE_INSECURE_REGISTRIES=registry.host)
    done = cli(env, "oci", "pull", f"{registry.host}/through:1")
    assert done.returncode == ModuleError.exit_code == 126, done.stderr
    assert "passes through the symbolic link /a " in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


# -- links nothing passes through ------------------------------------------------------------


@pytest.mark.parametrize(("layers", "entry"), [
    ([layer(("app.wasm", X), ("lib", "/usr/lib"))], "/app.wasm"),
    ([layer(("ab/app.wasm", X), ("a", "ab"))], "/ab/app.wasm"),
    ([layer(("b/app.wasm", X), ("a", "b")), layer((".wh.a", b""))], "/b/app.wasm"),
    ([layer(("b/app.wasm", X), ("a", "b")), layer(("b/a", "../b"))], "/b/app.wasm"),
    ([layer(("b/app.wasm", X)), layer(("a", "b/app.wasm"), ("c", "/b"))], "/b/app.wasm"),
], ids=["sibling", "name-prefix", "whiteout-of-the-link", "link-in-a-directory",
        "links-to-the-module"])
def test_links_no_path_passes_through_are_kept(serve: Callable[[], Server], tmp_path: Path,
                                                layers: list[bytes], entry: str) -> None:
    registry = serve()
    assert pulled(registry, "kept", layers, tmp_path, entry).module_digest == sha(X)


# -- bounds ----------------------------------------------------------------------------------


def test_the_record_of_paths_is_bounded(tmp_path: Path) -> None:
    """Members deep in a directory each of their own, and a link last that none of them
    passes through: each member's directory is kept, not every directory above it (70
    each here, 170 MB)."""
    count = 20_000
    members = b"".join(
        tarfile.TarInfo(f"{number:05d}" + "/a" * 70 + "/f").tobuf(format=tarfile.USTAR_FORMAT)
        for number in range(count))
    blob = tmp_path / "layer"
    blob.write_bytes(gzip.compress(members + layer(("app.wasm", X), ("zz", "y")), 6, mtime=0))
    tracemalloc.start()
    try:
        module = extract_module([({"digest": "sha256:1", "mediaType": TGZ}, blob)],
                                "/app.wasm", 1 << 30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert module == X
    assert peak < 4 * count * 145 + 2 * 1024**2, f"{peak} bytes traced"


def test_names_past_the_record_limit_are_refused(tmp_path: Path) -> None:
    """Distinct directories of 246-byte names, past `MAX_PATH_RECORD` bytes in all."""
    from stockade.oci.image import MAX_PATH_RECORD

    count = MAX_PATH_RECORD // 246 + 1
    members = b"".join(
        tarfile.TarInfo(f"{number:0150d}/" + "q" * 95 + "/f").tobuf(format=tarfile.USTAR_FORMAT)
        for number in range(count))
    blob = tmp_path / "layer"
    blob.write_bytes(gzip.compress(members + layer(("app.wasm", X)), 6, mtime=0))
    with pytest.raises(BlobTooLarge, match="names") as caught:
        extract_module([({"digest": "sha256:1", "mediaType": TGZ}, blob)], "/app.wasm",
                       1 << 30, UnpackBudget(1 << 40))
    assert "\n" not in caught.value.message
