"""Tar headers CPython's tarfile reads otherwise than GNU tar and Go's archive/tar
(containerd): a name prefix outside POSIX ustar, extended headers stacked on one member,
global and sparse pax keywords, numbers tarfile reads leniently (a pax `size` of 5,000
digits it took for 0, a ustar size after a NUL), names GNU tar refuses or rewrites, and
blocks that are no header in the middle of a layer. With each, a hostile upper layer
could make Stockade run another module than the one unpackers leave, or one they cannot
unpack; now the module is pulled where both unpackers leave it, and the layer refused
(126) where they part or fail.

Each case is unpacked by the real GNU tar here; what containerd 1.6 left at the module's
path (native and overlayfs snapshotters, each case imported with `ctr images import` and
its snapshot mounted) is written beside it: "X" the upper layer's module, "OTHER" the
lower layer's, "fails" an unpack that stops with an error."""

from __future__ import annotations

import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from stockade.errors import ModuleError

from .fixtures import cli, require, stockade_env
from .test_hostile_pull import WASM, Server, image, sha
from .test_layer_order import ENTRY, X, gnu_tar, judged, layer
from .test_layers import pulled, serve

__all__ = ["serve"]  # the registry fixture

OTHER = WASM + b"module the lower layer holds"
LOWER = layer(("bin", None), ("bin/app.wasm", OTHER))
END = bytes(1024)
# Byte offsets of the header fields the cases write themselves.
FIELDS = {"size": 124, "chksum": 148, "magic": 257, "prefix": 345, "trailer": 508}


def header(name: str, length: int = 0, kind: bytes = tarfile.REGTYPE, **raw: bytes) -> bytes:
    """A 512-byte ustar header of a member of `length` bytes; `raw` overwrites FIELDS
    (the checksum is then recomputed unless `chksum` is one of them)."""
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode = length, kind, 0o755 if kind == tarfile.DIRTYPE else 0o644
    block = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))
    for field, value in raw.items():
        block[FIELDS[field]:FIELDS[field] + len(value)] = value
    if "chksum" not in raw:
        block[148:156] = b" " * 8
        block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **raw: bytes) -> bytes:
    """`header` and its data, padded to whole blocks."""
    return header(name, len(data), kind, **raw) + data + bytes(-len(data) % 512)


def record(keyword: str, value: str) -> bytes:
    """One pax record, `"%d %s=%s\\n"` with its own length first."""
    body = f" {keyword}={value}\n".encode()
    length = len(body) + 1
    while length != len(body) + len(str(length)):
        length += 1
    return str(length).encode() + body


def pax(*records: tuple[str, str], kind: bytes = tarfile.XHDTYPE) -> bytes:
    """A pax extended header (or, `kind`, a global or Solaris one) of `records`."""
    return member("././@PaxHeader", b"".join(record(*pair) for pair in records), kind)


def long_name(name: str, kind: bytes = tarfile.GNUTYPE_LONGNAME) -> bytes:
    """A GNU long-name header (or, `kind`, a long-link one) holding `name`."""
    return member("././@LongLink", name.encode() + b"\0", kind)


# The module's path in a member's data, read as a header where tarfile misreads the size.
HIDDEN = member("bin/app.wasm", X)
SIZE = b"%011o\0" % len(HIDDEN)
TIMES = b"15305524154\0" * 2  # as GNU tar --incremental writes them at byte 345

# (the upper layer over LOWER, what containerd left at /bin/app.wasm)
CASES: dict[str, tuple[bytes, str]] = {
    # a name prefix: POSIX ustar's alone (`ustar\0` `00`); tarfile joins it to any header
    "ustar-prefix": (member("app.wasm", X, prefix=b"bin\0") + END, "X"),
    "prefix-without-magic": (
        member("app.wasm", X, magic=bytes(8), prefix=b"bin\0") + END, "OTHER"),
    "prefix-with-gnu-magic": (
        member("app.wasm", X, magic=b"ustar  \0", prefix=b"bin\0") + END, "X"),
    # (the next three read from Go's archive/tar and containerd's apply code) ustar's
    # magic whatever its version: GNU tar and Go join the prefix, as tarfile does
    "ustar-prefix-of-another-version": (
        member("app.wasm", X, magic=b"ustar\0xx", prefix=b"bin\0") + END, "X"),
    # a GNU header's access and change times (GNU tar's incremental archives), where
    # ustar has its prefix: read as times by GNU tar and Go, joined to the name by tarfile
    "gnu-header-with-times": (
        member("bin/app.wasm", X, magic=b"ustar  \0", prefix=TIMES) + END, "X"),
    # GNU tar takes a negative size for no header (exit 2, and makes /bin for the
    # member below it), Go ignores a directory's size
    "directory-of-a-negative-size": (
        member("bin", kind=tarfile.DIRTYPE, size=b"\xff" * 12) + member("bin/app.wasm", X)
        + END, "X"),
    # extended headers: tarfile keeps the first of a kind, GNU tar and Go the last; GNU
    # tar lets a pax path win over a long name, Go the long name
    "one-pax-header": (
        pax(("path", "bin/app.wasm"), ("mtime", "1700000000.25")) + member("short", X) + END,
        "X"),
    "one-long-name": (long_name("bin/app.wasm") + member("short", X) + END, "X"),
    "two-pax-headers": (
        pax(("path", "bin/app.wasm")) + pax(("mtime", "1")) + member("other", X) + END,
        "OTHER"),
    "two-long-names": (
        long_name("bin/app.wasm") + long_name("other") + member("short", X) + END, "OTHER"),
    "pax-path-then-long-name": (
        pax(("path", "bin/app.wasm")) + long_name("other") + member("short", X) + END,
        "OTHER"),
    "long-name-then-pax-path": (
        long_name("bin/app.wasm") + pax(("path", "other")) + member("short", X) + END, "X"),
    "global-pax-header": (
        pax(("path", "bin/app.wasm"), kind=tarfile.XGLTYPE) + member("other", X) + END,
        "nothing (native), OTHER (overlayfs)"),
    "solaris-pax-header": (
        pax(("path", "bin/app.wasm"), kind=tarfile.SOLARIS_XHDTYPE) + member("other", X) + END,
        "fails"),
    "gnu-sparse-keyword": (
        pax(("GNU.sparse.name", "bin/app.wasm")) + member("other", X) + END, "OTHER"),
    # numbers: tarfile took what int() and float() take, and 0 for what they do not
    "pax-size-of-5000-digits": (
        pax(("size", "0" * 5000 + str(len(HIDDEN)))) + member("pad", HIDDEN) + END, "OTHER"),
    "pax-size-not-a-number": (pax(("size", "abc")) + member("pad", HIDDEN) + END, "fails"),
    "pax-size-with-a-sign": (
        pax(("size", f"+{len(HIDDEN)}")) + member("pad", HIDDEN) + END, "OTHER"),
    "pax-mtime-not-a-number": (pax(("mtime", "1e9")) + member("bin/app.wasm", X) + END,
                               "fails"),
    "pax-uid-not-a-number": (pax(("uid", "x")) + member("bin/app.wasm", X) + END, "fails"),
    "ustar-size-after-a-nul": (member("pad", HIDDEN, size=b"\0" + SIZE[1:]) + END, "OTHER"),
    "ustar-size-with-an-underscore": (
        member("pad", HIDDEN, size=SIZE[:4] + b"_" + SIZE[5:11]) + END, "fails"),
    "ustar-size-after-a-tab": (member("pad", HIDDEN, size=b"\t" + SIZE[1:]) + END, "fails"),
    # pax records: GNU tar skips a malformed one, Go refuses the layer
    "pax-record-without-its-newline": (
        member("././@PaxHeader", b"21 path=bin/app.wasm!", tarfile.XHDTYPE)
        + member("other", X) + END, "fails"),
    "pax-path-with-a-nul": (pax(("path", "bin/app.wasm\0.x")) + member("other", X) + END,
                            "fails"),
    "pax-path-twice": (
        pax(("path", "a\0b"), ("path", "bin/app.wasm")) + member("other", X) + END, "fails"),
    "empty-pax-path": (pax(("path", "")) + member("bin/app.wasm", X) + END, "X"),
    # names GNU tar refuses or rewrites, containerd cleans and writes
    "dotdot-component": (member("bin/x/../app.wasm", X) + END, "X"),
    "file-named-with-a-trailing-slash": (member("bin/app.wasm/", X) + END, "X"),
    "file-named-with-a-trailing-dot": (member("bin/app.wasm/.", X) + END, "X"),
    "pax-path-of-a-file-with-a-trailing-slash": (
        pax(("path", "bin/app.wasm/")) + member("other", X) + END, "X"),
    "long-name-of-a-file-with-a-trailing-slash": (
        long_name("bin/app.wasm/") + member("short", X) + END, "X"),
    "v7-directory-renamed-by-a-pax-path": (
        pax(("path", "bin")) + member("zz/", kind=tarfile.AREGTYPE) + END, "nothing"),
    # the end of the archive: tarfile stopped at the first block that is no header
    "invalid-header-then-members": (
        member("bin/app.wasm", X) + header("zz", chksum=b"0000000\0")
        + member("bin/app.wasm", OTHER) + END, "fails"),
    "lone-zero-block-then-members": (
        member("bin/app.wasm", X) + bytes(512) + member("bin/app.wasm", OTHER) + END, "fails"),
    # GNU long names: tarfile and GNU tar read the blocks to a NUL, Go the header's size;
    # an empty one Go ignores (the member keeps its own name)
    "long-name-past-its-size": (
        header("././@LongLink", 5, tarfile.GNUTYPE_LONGNAME) + b"bin/app.wasm"
        + bytes(500) + member("zz", X) + END, "OTHER"),
    "empty-long-name-on-a-directory": (
        member("././@LongLink", b"\0x", tarfile.GNUTYPE_LONGNAME)
        + member("bin/app.wasm", kind=tarfile.DIRTYPE) + END, "a directory"),
    # a contiguous file: a file to tarfile and GNU tar, none to containerd
    "contiguous-file": (member("bin/app.wasm", X, tarfile.CONTTYPE) + END, "fails"),
    "no-end-of-archive": (member("bin/app.wasm", X), "X"),
    "one-zero-block-at-the-end": (member("bin/app.wasm", X) + bytes(512), "X"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_module_is_what_both_unpackers_read(serve: Callable[[], Server], tmp_path: Path,
                                                case: str) -> None:
    upper, containerd = CASES[case]
    refusal = judged(serve(), tmp_path, [LOWER, upper], containerd)
    assert refusal is None or f"layer {sha(upper)}" in refusal.message


@pytest.mark.parametrize(("case", "says"), [
    ("prefix-without-magic", "a name prefix in a header whose magic is not ustar's"),
    ("prefix-with-gnu-magic", "a GNU header whose access and change times (bytes 345-368) "
                              "b'bin\\x00"),
    ("directory-of-a-negative-size", "a header of a negative size, -1 (GNU tar takes it for "
                                     "no header"),
    ("two-pax-headers", "two pax headers before one member"),
    ("two-long-names", "two GNU long-name headers before one member"),
    ("pax-path-then-long-name", "a pax path and a GNU long name for one member"),
    ("long-name-then-pax-path", "a pax path and a GNU long name for one member"),
    ("global-pax-header", "a pax global header"),
    ("solaris-pax-header", "a Solaris pax header"),
    ("gnu-sparse-keyword", "a sparse file"),
    ("pax-size-of-5000-digits", "a pax size of 5004 characters, not a number"),
    ("pax-size-with-a-sign", "a pax size '+1024', not a number"),
    ("pax-mtime-not-a-number", "a pax mtime '1e9', not a number"),
    ("ustar-size-after-a-nul", "a header whose size field"),
    ("pax-record-without-its-newline", "a malformed pax record"),
    ("pax-path-with-a-nul", "a pax path holding a NUL"),
    ("pax-path-twice", "a pax header naming 'path' twice"),
    ("empty-pax-path", "an empty pax path"),
    ("dotdot-component", "the member bin/x/../app.wasm: a '..' component"),
    ("file-named-with-a-trailing-slash", "a regular file named bin/app.wasm/"),
    ("file-named-with-a-trailing-dot", "the member bin/app.wasm/.: a name ending in /."),
    ("pax-path-of-a-file-with-a-trailing-slash", "a regular file named bin/app.wasm/"),
    ("v7-directory-renamed-by-a-pax-path", "a directory named by a trailing /"),
    ("invalid-header-then-members", "a block at byte 1024 that is no tar header"),
    ("lone-zero-block-then-members", "a lone zero block at byte 1024 before more"),
    ("long-name-past-its-size", "a GNU long name running past its header's size of 5"),
    ("empty-long-name-on-a-directory", "an empty GNU long name"),
])
def test_the_refusal_names_the_header(serve: Callable[[], Server], tmp_path: Path, case: str,
                                      says: str) -> None:
    upper = CASES[case][0]
    with pytest.raises(ModuleError) as caught:
        pulled(serve(), "headers", [LOWER, upper], tmp_path, ENTRY)
    assert says in caught.value.message, caught.value.message
    assert caught.value.message.startswith(f"layer {sha(upper)}: ")


@pytest.mark.parametrize("upper", [
    long_name("a", tarfile.GNUTYPE_LONGLINK) + long_name("b", tarfile.GNUTYPE_LONGLINK)
    + member("link", kind=tarfile.SYMTYPE) + END,
    long_name("a", tarfile.GNUTYPE_LONGLINK) + pax(("linkpath", "b"))
    + member("link", kind=tarfile.SYMTYPE) + END,
    pax(("linkpath", "b")) + long_name("a", tarfile.GNUTYPE_LONGLINK)
    + member("link", kind=tarfile.SYMTYPE) + END,
], ids=["two-long-links", "long-link-then-pax-linkpath", "pax-linkpath-then-long-link"])
def test_link_targets_named_twice_are_refused(serve: Callable[[], Server], tmp_path: Path,
                                              upper: bytes) -> None:
    """A link elsewhere than the module: tarfile, GNU tar and Go each take another name
    for its target."""
    with pytest.raises(ModuleError, match="long-link|linkpath") as caught:
        pulled(serve(), "links", [LOWER, upper], tmp_path, ENTRY)
    assert caught.value.exit_code == 126 and "\n" not in caught.value.message


def test_a_star_prefix_is_refused(serve: Callable[[], Server], tmp_path: Path) -> None:
    """STAR's header (`tar\\0` at byte 508) holds a prefix of 131 bytes and two times:
    Go reads the prefix so, GNU tar and tarfile as 155 bytes of ustar prefix."""
    directory = "A" * 131 + "0" * 11
    entry = f"/{directory}/app.wasm"
    lower = layer((f"{directory}/app.wasm", OTHER))
    upper = member("app.wasm", X, prefix=directory.encode() + b"\0" + b"0" * 11 + b"\0",
                   trailer=b"tar\0") + END
    assert gnu_tar([lower, upper], tmp_path / "star", entry) == (X, True)  # Go: OTHER
    with pytest.raises(ModuleError, match="a STAR header") as caught:
        pulled(serve(), "star", [lower, upper], tmp_path, entry)
    assert caught.value.message.startswith(f"layer {sha(upper)}: ")


@pytest.mark.parametrize("fmt", ["posix", "gnu", "ustar"])
def test_layers_gnu_tar_writes_are_read(serve: Callable[[], Server], tmp_path: Path,
                                        fmt: str) -> None:
    """Long names as GNU tar writes them: a pax header per member (path, mtime, atime,
    ctime), a GNU long name, a ustar prefix."""
    tree = tmp_path / "tree"
    module = tree / ("d" * 90) / ("e" * 40) / "app.wasm"
    module.parent.mkdir(parents=True)
    module.write_bytes(X)
    (tree / "link").symlink_to("d" * 90)
    made = subprocess.run([require("tar"), f"--format={fmt}", "-C", str(tree), "-cf", "-", "."],
                          capture_output=True, timeout=60, check=True)
    entry = "/" + str(module.relative_to(tree))
    done = pulled(serve(), "gnu", [made.stdout], tmp_path, entry)
    assert done.module_digest == sha(X)


def incremental(tmp_path: Path, *names: str) -> bytes:
    """A layer GNU tar writes as an incremental archive (`-G`) of a tree holding X at
    bin/app.wasm: `names` as given, a dump directory (type D) for each directory."""
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "app.wasm").write_bytes(X)
    made = subprocess.run([require("tar"), "--format=gnu", "-G", "-C", str(tree), "-cf", "-",
                           *names],
                          capture_output=True, timeout=60, check=True)
    return made.stdout


def test_an_incremental_archive_is_read_by_its_names(serve: Callable[[], Server],
                                                     tmp_path: Path) -> None:
    """Its headers hold times at byte 345, which tarfile joined to every name."""
    upper = incremental(tmp_path, "bin/app.wasm")
    assert upper[345:357].rstrip(b"\0").isdigit()
    assert gnu_tar([LOWER, upper], tmp_path / "tar") == (X, True)
    assert pulled(serve(), "incremental", [LOWER, upper], tmp_path, ENTRY).module_digest == \
        sha(X)


def test_a_dump_directory_is_refused(serve: Callable[[], Server], tmp_path: Path) -> None:
    upper = incremental(tmp_path, ".")
    with pytest.raises(ModuleError) as caught:
        pulled(serve(), "incremental", [LOWER, upper], tmp_path, ENTRY)
    assert caught.value.message.startswith(f"layer {sha(upper)}: a GNU dump directory (type D"), \
        caught.value.message


def test_the_cli_refuses_it_in_one_line(serve: Callable[[], Server], tmp_path: Path) -> None:
    registry = serve()
    upper = CASES["two-pax-headers"][0]
    image(registry, "stacked", [LOWER, upper], config={"config": {"Entrypoint": [ENTRY]}})
    env = stockade_env(tmp_path / "cache", tmp_path / "state")
    env.update(HOME=str(tmp_path), STOCKADE_INSECURE_REGISTRIES=registry.host)
    done = cli(env, "oci", "pull", f"{registry.host}/stacked:1")
    assert done.returncode == 126, done.stderr
    assert f"layer {sha(upper)}: two pax headers before one member" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_an_entrypoint_that_is_not_unicode_is_refused(serve: Callable[[], Server],
                                                      tmp_path: Path) -> None:
    # A lone surrogate (`\\udcff` in the config's JSON) matched a member named with the
    # raw byte 0xff here, where Go's JSON reads U+FFFD and names another member.
    upper = layer(("bin/\udcff.wasm", X), ("bin/\ufffd.wasm", OTHER))
    with pytest.raises(ModuleError, match="lone surrogate") as caught:
        pulled(serve(), "surrogate", [LOWER, upper], tmp_path, "/bin/\udcff.wasm")
    assert caught.value.exit_code == 126 and "\n" not in caught.value.message
