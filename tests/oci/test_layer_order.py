"""The order of a layer's members, as unpackers apply it: a path named first as a file and
later as a directory (or the reverse), the module's path both ways, a whiteout or a
member below the module after it, an opaque marker after it over a directory the layer
holds no member for. The module is found where GNU tar (`tar -x`, the last member wins)
and containerd's unpacking both leave it, and refused (126) where they leave different
things or fail.

Each case is unpacked by the real GNU tar here; what containerd 1.6 left (overlayfs and
native snapshotters alike, each case pulled and mounted with `ctr images mount`) is
written beside it: "X" the module, "fails" an unpack that stops with an error."""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from stockade.errors import ModuleError

from .fixtures import cli, require, stockade_env
from .test_hostile_pull import WASM, Server, image, sha
from .test_layers import pulled, serve

__all__ = ["serve"]  # the registry fixture

X = WASM + b"module X"
ENTRY = "/bin/app.wasm"
Member = tuple[str, bytes | None]


def layer(*entries: Member) -> bytes:
    """A tar layer of (name, bytes) regular files and (name, None) directories, in order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            else:
                info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return out.getvalue()


def gnu_tar(layers: list[bytes], root: Path, entry: str = ENTRY) -> tuple[bytes | str, bool]:
    """What `tar -x` of each layer in turn leaves at `entry` under `root` (its bytes, or
    "directory" / "nothing" / "not a directory above it"), and whether every tar
    exited 0."""
    root.mkdir()
    clean = True
    for blob in layers:
        done = subprocess.run([require("tar"), "-x", "-C", str(root)], input=blob,
                              capture_output=True, timeout=60, check=False)
        clean = clean and done.returncode == 0
    target = root / entry.lstrip("/")
    if target.parent.exists() and not target.parent.is_dir():
        return "not a directory above it", clean
    if target.is_dir():
        return "directory", clean
    return (target.read_bytes() if target.exists() else "nothing"), clean


# (layers lowest first, what containerd left at /bin/app.wasm)
CASES: dict[str, tuple[list[bytes], str]] = {
    # a parent named as a file and as a directory
    "module-then-parent-a-file": (
        [layer(("bin", None), ("bin/app.wasm", X), ("bin", b"F"))], "a file at /bin"),
    "parent-a-file-then-module": ([layer(("bin", b"F"), ("bin/app.wasm", X))], "fails"),
    "parent-a-file-then-a-directory": (
        [layer(("bin", b"F"), ("bin", None), ("bin/app.wasm", X))], "X"),
    "module-then-parent-a-directory": ([layer(("bin/app.wasm", X), ("bin", None))], "X"),
    # the module's path named as a file and as a directory
    "module-then-a-directory": (
        [layer(("bin", None), ("bin/app.wasm", X), ("bin/app.wasm", None))], "directory"),
    "a-directory-then-module": (
        [layer(("bin", None), ("bin/app.wasm", None), ("bin/app.wasm", X))], "X"),
    "a-directory-with-a-file-then-module": (
        [layer(("bin", None), ("bin/app.wasm", None), ("bin/app.wasm/x", b"c"),
               ("bin/app.wasm", X))], "X"),
    "module-then-a-member-below-it": (
        [layer(("bin", None), ("bin/app.wasm", X), ("bin/app.wasm/x", b"c"))], "fails"),
    "a-member-below-a-lower-module": (
        [layer(("bin", None), ("bin/app.wasm", X)), layer(("bin/app.wasm/x", b"c"))],
        "fails (native), a directory (overlayfs)"),
    # whiteouts after the module: OCI says they hide lower layers only; containerd
    # removes what its layer already wrote
    "module-then-its-whiteout": (
        [layer(("bin", None), ("bin/app.wasm", X), ("bin/.wh.app.wasm", b""))], "nothing"),
    "module-then-a-parents-whiteout": (
        [layer(("bin", None), ("bin/app.wasm", X), (".wh.bin", b""))], "fails"),
    "whiteout-then-module": (
        [layer(("bin/app.wasm", b"lower")),
         layer(("bin/.wh.app.wasm", b""), ("bin/app.wasm", X))], "X"),
    "module-then-opaque": (
        [layer(("bin/app.wasm", b"lower")),
         layer(("bin", None), ("bin/app.wasm", X), ("bin/.wh..wh..opq", b""))], "X"),
    # containerd's native unpacking keeps, for an opaque marker, the paths its layer has
    # unpacked so far: not a directory only implied by a member below it
    "module-then-opaque-over-its-implied-parent": (
        [layer(("bin/app.wasm", b"lower")),
         layer(("bin/app.wasm", X), (".wh..wh..opq", b""))], "nothing (native), X (overlayfs)"),
    "module-then-opaque-over-its-listed-parent": (
        [layer(("bin/app.wasm", b"lower")),
         layer(("bin", None), ("bin/app.wasm", X), (".wh..wh..opq", b""))], "X"),
    "module-then-opaque-then-its-parent": (
        [layer(("bin/app.wasm", b"lower")),
         layer(("bin/app.wasm", X), (".wh..wh..opq", b""), ("bin", None))],
        "nothing (native), X (overlayfs)"),
    "module-then-opaque-in-its-implied-parent": (
        [layer(("bin/app.wasm", b"lower")),
         layer(("bin/app.wasm", X), ("bin/.wh..wh..opq", b""))], "X"),
    # across layers: the module written below what a lower layer leaves a file (overlayfs
    # hides the file under the upper layer's directory, native unpacking stops at it)
    "module-over-a-lower-file": (
        [layer(("bin", b"F")), layer(("bin/app.wasm", X))],
        "fails (native), X (overlayfs)"),
    "module-over-a-lower-file-replaced-by-a-directory": (
        [layer(("bin", b"F")), layer(("bin", None), ("bin/app.wasm", X))], "X"),
    "module-over-a-lower-file-a-middle-layer-replaced": (
        [layer(("bin", b"F")), layer(("bin", None)), layer(("bin/app.wasm", X))], "X"),
    "module-over-a-lower-file-below-a-middle-directory": (
        [layer(("bin", b"F")), layer(("bin/other", b"c")), layer(("bin/app.wasm", X))],
        "fails (native), X (overlayfs)"),
    # a whiteout of the module's parent, then the module, in one layer: overlayfs makes the
    # whiteout a device at /bin and stops at the module below it
    "parent-whiteout-then-module": (
        [layer(("bin", None), ("bin/app.wasm", b"lower")),
         layer((".wh.bin", b""), ("bin/app.wasm", X))], "X (native), fails (overlayfs)"),
    "parent-whiteout-then-the-parent-then-module": (
        [layer(("bin", None), ("bin/app.wasm", b"lower")),
         layer((".wh.bin", b""), ("bin", None), ("bin/app.wasm", X))], "X"),
}


def judged(registry: Server, tmp_path: Path, layers: list[bytes], containerd: str,
           entry: str = ENTRY) -> ModuleError | None:
    """Pull `layers`, Entrypoint `entry`: None when GNU tar (run here, exiting 0) and
    containerd (`containerd`, what it left) both leave X there and the pull runs X;
    else the refusal, checked to be a ModuleError of 126 in one line."""
    left, clean = gnu_tar(layers, tmp_path / "tar", entry)
    if left == X and clean and containerd == "X":
        assert pulled(registry, "order", layers, tmp_path, entry).module_digest == sha(X)
        return None
    with pytest.raises(ModuleError) as caught:
        pulled(registry, "order", layers, tmp_path, entry)
    assert type(caught.value) is ModuleError and caught.value.exit_code == 126
    assert "\n" not in caught.value.message
    return caught.value


@pytest.mark.parametrize("case", list(CASES))
def test_the_module_is_what_every_unpacker_leaves(serve: Callable[[], Server], tmp_path: Path,
                                                   case: str) -> None:
    refusal = judged(serve(), tmp_path, *CASES[case])
    assert refusal is None or ENTRY in refusal.message


@pytest.mark.parametrize(("case", "says"), [
    ("module-then-parent-a-file", "/bin replaced by a file that is not a directory after"),
    ("parent-a-file-then-module", "below /bin, a file that is not a directory"),
    ("module-then-a-directory", "not a regular file in the image (the last of its "),
    ("a-directory-with-a-file-then-module", "replaces a directory holding /bin/app.wasm/x"),
    ("module-then-a-member-below-it", "/bin/app.wasm/x below it"),
    ("a-member-below-a-lower-module", "/bin/app.wasm/x below it"),
    ("module-then-its-whiteout", "whiteout bin/.wh.app.wasm after it"),
    ("module-then-a-parents-whiteout", "whiteout .wh.bin after it"),
    ("module-then-opaque-over-its-implied-parent",
     "opaque marker .wh..wh..opq after it, /bin having no member of its own"),
    ("module-then-opaque-then-its-parent",
     "opaque marker .wh..wh..opq after it, /bin having no member of its own"),
    ("module-over-a-lower-file", "writes it below /bin, which layer sha256:"),
    ("module-over-a-lower-file-below-a-middle-directory",
     "writes it below /bin, which layer sha256:"),
    ("parent-whiteout-then-module", "writes it below /bin, the whiteout .wh.bin of it"),
])
def test_the_refusal_says_which_members_disagree(serve: Callable[[], Server], tmp_path: Path,
                                                 case: str, says: str) -> None:
    with pytest.raises(ModuleError) as caught:
        pulled(serve(), "order", CASES[case][0], tmp_path, ENTRY)
    assert says in caught.value.message, caught.value.message


def test_a_lower_file_is_named_with_its_layer(serve: Callable[[], Server],
                                             tmp_path: Path) -> None:
    layers = CASES["module-over-a-lower-file"][0]
    with pytest.raises(ModuleError) as caught:
        pulled(serve(), "order", layers, tmp_path, ENTRY)
    assert caught.value.message.startswith(
        f"{ENTRY}: layer {sha(layers[1])} writes it below /bin, which layer {sha(layers[0])} "
        "holds as a regular file"), caught.value.message


def test_a_lower_whiteout_settles_the_parent(serve: Callable[[], Server],
                                             tmp_path: Path) -> None:
    """A middle layer deleting the lower file (OCI: a whiteout hides the layers below)
    leaves nothing the module is written below: every unpacker writes it."""
    layers = [layer(("bin", b"F")), layer((".wh.bin", b"")), layer(("bin/app.wasm", X))]
    assert pulled(serve(), "order", layers, tmp_path, ENTRY).module_digest == sha(X)


@pytest.mark.parametrize("case", ["module-over-a-lower-file", "parent-whiteout-then-module"])
def test_the_cli_refuses_an_image_across_layers_in_one_line(
        serve: Callable[[], Server], tmp_path: Path, case: str) -> None:
    registry = serve()
    layers = CASES[case][0]
    image(registry, "across", layers, config={"config": {"Entrypoint": [ENTRY]}})
    env = stockade_env(tmp_path / "cache", tmp_path / "state")
    env.update(HOME=str(tmp_path), STOCKADE_INSECURE_REGISTRIES=registry.host)
    done = cli(env, "oci", "pull", f"{registry.host}/across:1")
    assert done.returncode == 126, done.stderr
    assert "writes it below /bin" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_the_cli_refuses_it_in_one_line(serve: Callable[[], Server], tmp_path: Path) -> None:
    registry = serve()
    layers = CASES["module-then-parent-a-file"][0]
    image(registry, "order", layers, config={"config": {"Entrypoint": [ENTRY]}})
    env = stockade_env(tmp_path / "cache", tmp_path / "state")
    env.update(HOME=str(tmp_path), STOCKADE_INSECURE_REGISTRIES=registry.host)
    done = cli(env, "oci", "pull", f"{registry.host}/order:1")
    assert done.returncode == 126, done.stderr
    assert f"layer {sha(layers[0])}" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
