"""`WasmImage`: what a manifest and its config say, for either layout, checked.

Reads OCI and Docker manifests and indexes, picks the wasi/wasm entry of an index,
validates the CNCF Wasm artifact's config by the rules rust-oci-wasm applies (required
fields, one `application/wasm` layer, `layerDigests` naming it), and finds the module
of a Docker+Wasm image (`Entrypoint`, else `Cmd`, `#export` suffix dropped) inside its
layers without unpacking anything to disk, as the layers applied in order leave it: OCI
whiteouts (`.wh.NAME`, opaque `.wh..wh..opq`) delete what lower layers hold, and a layer
holding the module's path twice is refused (tar, umoci and containerd keep the last copy;
which one runs must not depend on who unpacks it). So is an image where a member or
whiteout of any layer, or the module's path, passes through a symbolic link of any layer
(`a/app.wasm` over a link `a -> b`): unpackers write and delete through it, a search by
name does not, and the order of a layer's members would decide (`_Links`). Within a
layer the last member at a path wins, as GNU tar and containerd apply it; where they
would leave different things at the module's path (a parent replaced by a file after
the module, the module replacing a directory that holds something, a whiteout or a
member below the module after it, an opaque marker after it over a directory the layer
has no member for) or one of them could not write it (below a file; below a whiteout of
its directory, which overlayfs unpacks as a device), the image is refused (`_InOrder`).
So is an image whose module is written below what a lower layer leaves a file
(`_Beneath`: overlayfs hides the file under the upper directory, tar and containerd's
native unpacking cannot write there), and a member whose name GNU tar does not write as
named and containerd does (a `..` component, a trailing `/.`, a file named as a
directory: `_check_name`).

A layer is read once, one member at a time, and its members are not kept (tarfile would
keep them all: 470 bytes each, a million of them in a 2.7 MB gzipped layer); a pull
checks its `rootfs.diff_ids` entry in the same read, to the end of the stream, and a
load from the store the blob's own digest (`Store.verifying`), to the end of the file. At most
`MAX_LAYER_MEMBERS` tar headers per layer and `MAX_PULL_MEMBERS` over every layer one
search reads, extended headers included.

tarfile reads a layer, but its headers are checked as it parses each 512-byte block and
read as GNU tar and Go's archive/tar read them, or refused (`tarheaders.guarded`). No
extended header (pax, GNU long name or link) is read oversized: CPython 3.11.7's pax
parser backtracks quadratically over digits (CVE-2024-6232; a 1 MiB header, 14 KB
gzipped, took hours of CPU; `tarheaders` parses pax records itself now). Each is
charged before it is read: at most `MAX_EXTENDED_HEADER` bytes each, and their sizes
squared (that parser's worst case) at most `EXTENDED_HEADER_WORK` in all, so many
headers just under the limit cost no more.
"""

from __future__ import annotations

import bisect
import contextlib
import gzip
import hashlib
import io
import json
import posixpath
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from ..display import printable
from ..errors import ModuleError
from .errors import BlobTooLarge, IntegrityError, PlatformMismatch
from .media import (
    GZIP_LAYERS,
    INDEX_TYPES,
    MANIFEST_TYPES,
    TAR_LAYERS,
    WASM_CONFIG,
    WASM_LAYER,
    is_wasm_platform,
    platform_name,
    shown,
)
from .tarheaders import guarded

__all__ = ["WasmImage", "UnpackBudget", "parse_json", "select_platform",
           "validate_wasm_config", "describe", "extract_module", "manifest_kind", "open_layer",
           "field", "strings", "MAX_EXTENDED_HEADER", "EXTENDED_HEADER_WORK",
           "MAX_LAYER_MEMBERS", "MAX_PULL_MEMBERS", "MAX_PATH_RECORD", "BlobOpener"]

MAX_EXTENDED_HEADER = 64 * 1024  # legitimate ones hold a path, times, an xattr or two
# ~5 s of CPU for the worst 64 KiB header; 10,000 headers of 200 bytes use a tenth of it
EXTENDED_HEADER_WORK = MAX_EXTENDED_HEADER ** 2
# Tar headers read per layer and per search, ~15 µs of CPU each (2.3 s in all at most);
# CPython for WASI with its whole standard library is a few thousand files.
MAX_LAYER_MEMBERS = 50_000
MAX_PULL_MEMBERS = 150_000
# Bytes of directory and link names kept for the symbolic-link check over one search:
# a real image's directories are KBs of names; this is 34,000 distinct ones of 246 bytes.
MAX_PATH_RECORD = 8 * 1024**2
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class WasmImage:
    """A validated Wasm image: its layout, the layer holding the module, and the process
    its config asks for (`entrypoint` + `cmd`, `env`, `working_dir`; empty for artifacts)."""

    layout: str
    platform: str
    module_layer: dict[str, Any]
    module_path: str | None
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str | None = None


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object, or ModuleError naming `what` (also for nesting too deep for the
    parser, which would otherwise be a RecursionError)."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ModuleError(f"{what}: not JSON ({exc})") from None
    except RecursionError:
        raise ModuleError(f"{what}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise ModuleError(f"{what}: not a JSON object")
    return value


_JSON_NAMES: dict[type, str] = {dict: "object", list: "array", str: "string"}


def field(document: dict[str, Any], key: str, kind: type, what: str) -> Any:
    """`document[key]` when it is a `kind` (None when absent or null). Raises ModuleError
    naming the field: hostile JSON gets the module's error, not an AttributeError."""
    value = document.get(key)
    if value is not None and not isinstance(value, kind):
        raise ModuleError(f"{what}: {key!r} is not a JSON {_JSON_NAMES.get(kind, kind.__name__)}")
    return value


def strings(document: dict[str, Any], key: str, what: str) -> tuple[str, ...]:
    """`document[key]` as a list of strings (empty when absent), each valid Unicode: a
    lone surrogate (`\\udcff` in the JSON) matched a member named with the raw byte here,
    where Go's JSON makes it U+FFFD and names another. Raises ModuleError."""
    values = field(document, key, list, what) or []
    if not all(isinstance(v, str) for v in values):
        raise ModuleError(f"{what}: {key!r} is not a list of strings")
    for value in values:
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ModuleError(f"{what}: {key!r} holds a lone surrogate (not valid Unicode: "
                              "runtimes read it differently)") from None
    return tuple(values)


def manifest_kind(manifest: dict[str, Any], media_type: str | None) -> str:
    """'index' or 'manifest' from the document's own mediaType, else the HTTP one."""
    kind = manifest.get("mediaType") or media_type
    if kind in INDEX_TYPES or (kind is None and "manifests" in manifest):
        return "index"
    if kind in MANIFEST_TYPES or (kind is None and "config" in manifest):
        return "manifest"
    raise ModuleError(f"unsupported manifest media type {shown(kind)}")


def select_platform(index: dict[str, Any], ref: str) -> dict[str, Any]:
    """The wasi/wasm manifest descriptor of an index. Raises PlatformMismatch listing what
    the index offers."""
    offered = []
    for entry in field(index, "manifests", list, f"{ref}: index") or []:
        if not isinstance(entry, dict):
            continue
        platform = entry.get("platform") or {}
        if not isinstance(platform, dict):
            raise ModuleError(f"{ref}: index entry's 'platform' is not a JSON object")
        if is_wasm_platform(platform.get("os"), platform.get("architecture")):
            return entry
        offered.append(platform_name(platform.get("os"), platform.get("architecture"),
                                     platform.get("variant")))
    more = f" and {len(offered) - 8} more" if len(offered) > 8 else ""  # a 4 MiB index
    raise PlatformMismatch(f"{ref}: no wasi/wasm image in the index (it has "
                           f"{', '.join(offered[:8]) or 'nothing'}{more})")


def validate_wasm_config(config: dict[str, Any], layers: list[dict[str, Any]]) -> None:
    """Check a CNCF Wasm artifact config and its layers. Raises ModuleError naming the
    field, PlatformMismatch for another os or architecture."""
    for key in ("created", "architecture", "os", "layerDigests"):
        if key not in config:
            raise ModuleError(f"Wasm artifact config: {key!r} is required")
    try:  # a string only: str(20240101) would parse as a basic-format date
        if not isinstance(config["created"], str):
            raise ValueError("not a string")
        datetime.fromisoformat(config["created"].replace("Z", "+00:00"))
    except ValueError:
        raise ModuleError(f"Wasm artifact config: created {shown(config['created'])} is "
                          "not RFC 3339") from None
    if config.get("author") is not None and not isinstance(config["author"], str):
        raise ModuleError("Wasm artifact config: author must be a string or null")
    if not is_wasm_platform(config["os"], config["architecture"]):
        found = platform_name(config["os"], config["architecture"])
        raise PlatformMismatch(f"Wasm artifact for {found}, not wasip1/wasm")
    if config["os"] == "wasip2" or config.get("component") is not None:
        raise ModuleError("Wasm artifact holds a component (wasip2); Stockade runs core "
                          "modules (wasip1)")
    if len(layers) != 1:
        raise ModuleError(f"Wasm artifact has {len(layers)} layers; exactly one is allowed")
    if layers[0].get("mediaType") != WASM_LAYER:
        raise ModuleError(f"Wasm artifact layer is {shown(layers[0].get('mediaType'))}, "
                          f"not {WASM_LAYER}")
    if config["layerDigests"] != [layers[0].get("digest")]:
        raise ModuleError("Wasm artifact config: layerDigests does not name its layer")


def describe(manifest: dict[str, Any], config: dict[str, Any], ref: str) -> WasmImage:
    """The `WasmImage` of a manifest and its parsed config. Raises PlatformMismatch for a
    non-Wasm image, ModuleError for a malformed one."""
    layers = [layer for layer in field(manifest, "layers", list, f"{ref}: manifest") or []
              if isinstance(layer, dict)]
    config_type = (field(manifest, "config", dict, f"{ref}: manifest") or {}).get("mediaType")
    if config_type == WASM_CONFIG:
        validate_wasm_config(config, layers)
        return WasmImage("artifact", platform_name(config["os"], "wasm"), layers[0], None)
    os_name, arch = config.get("os"), config.get("architecture")
    if not is_wasm_platform(os_name, arch):
        found = platform_name(os_name, arch, config.get("variant"))
        raise PlatformMismatch(f"{ref}: image for {found}, not wasi/wasm")
    if not layers:
        raise ModuleError(f"{ref}: image has no layers")
    for layer in layers:
        if layer.get("mediaType") not in (*TAR_LAYERS, *GZIP_LAYERS):
            raise ModuleError(f"{ref}: layer media type {shown(layer.get('mediaType'))} is "
                              "not a tar or tar+gzip layer")
    what = f"{ref}: image config"
    process = field(config, "config", dict, what) or {}
    entrypoint = strings(process, "Entrypoint", what)
    cmd = strings(process, "Cmd", what)
    argv = entrypoint + cmd
    if not argv:
        raise ModuleError(f"{ref}: image config has no Entrypoint or Cmd naming its module")
    return WasmImage(
        "image", platform_name(os_name, arch), layers[-1], argv[0].split("#", 1)[0],
        entrypoint, cmd, strings(process, "Env", what),
        field(process, "WorkingDir", str, what) or None,
    )


class UnpackBudget:
    """The unpacked bytes one pull may read in all, over every layer (each read once, for
    its `diff_ids` entry and the search for the module together): a small gzip bomb
    listed many times must not buy minutes of CPU."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.header_work, self.members = limit, 0, 0, 0

    def charge(self, count: int) -> None:
        """Count `count` more unpacked bytes. Raises BlobTooLarge past the limit."""
        self.used += count
        if self.used > self.limit:
            raise BlobTooLarge(f"layers unpack to more than {self.limit} bytes in all; "
                               "refused")

    def charge_header(self, kind: str, size: int, where: str) -> None:
        """Count an extended tar header of `size` bytes before tarfile reads it. Raises
        ModuleError (a malformed image) over `MAX_EXTENDED_HEADER` or, in all,
        `EXTENDED_HEADER_WORK`."""
        if not 0 <= size <= MAX_EXTENDED_HEADER:  # base-256 sizes can be negative
            raise ModuleError(f"{where}: a {kind} extended header of {size} bytes (at most "
                              f"{MAX_EXTENDED_HEADER}); refused")
        self.header_work += size * size
        if self.header_work > EXTENDED_HEADER_WORK:
            raise ModuleError(f"{where}: extended tar headers (pax, GNU long names) too many "
                              "or too large in all; refused")

    def charge_member(self, in_layer: int, where: str) -> None:
        """Count one more tar header, the `in_layer`th of its layer. Raises BlobTooLarge
        over `MAX_LAYER_MEMBERS` in the layer or `MAX_PULL_MEMBERS` in all."""
        self.members += 1
        if in_layer > MAX_LAYER_MEMBERS:
            raise BlobTooLarge(f"{where}: more than {MAX_LAYER_MEMBERS} entries (tar "
                               "headers); refused")
        if self.members > MAX_PULL_MEMBERS:
            raise BlobTooLarge(f"{where}: layers of more than {MAX_PULL_MEMBERS} entries "
                               "(tar headers) in all; refused")


class _Bounded(io.RawIOBase):
    """A reader that refuses to yield more than `limit` bytes (a gzip bomb stops here),
    each byte also charged to `budget` and shown to `seen` (a hash's `update`)."""

    def __init__(self, inner: io.BufferedIOBase, limit: int,
                 budget: UnpackBudget | None = None,
                 seen: Callable[[bytes], object] | None = None) -> None:
        self._inner, self._left, self._budget, self._seen = inner, limit, budget, seen

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(min(len(buffer), self._left + 1))
        if len(data) > self._left:
            raise BlobTooLarge("a layer unpacks to more than the module size limit")
        if self._budget is not None:
            self._budget.charge(len(data))
        if self._seen is not None:
            self._seen(data)
        self._left -= len(data)
        buffer[:len(data)] = data
        return len(data)


# Opens a layer's blob, by its digest, for one read through (`Store.verifying`).
BlobOpener = Callable[[str], AbstractContextManager[io.BufferedReader]]


@contextlib.contextmanager
def open_layer(descriptor: dict[str, Any],
               handle: io.BufferedReader) -> Iterator[io.BufferedIOBase]:
    """The unpacked bytes of a layer file opened as `handle`: gunzipped when its media
    type or its magic says gzip. Read from `handle` as needed and once, never sought
    back (whoever opened it may be hashing it), so no layer is held in memory whole."""
    packed = descriptor.get("mediaType") in GZIP_LAYERS or handle.peek(2)[:2] == b"\x1f\x8b"
    if not packed:
        yield handle
        return
    with gzip.GzipFile(fileobj=handle, mode="rb") as unpacked:
        yield unpacked


def _normal(name: str) -> str:
    """A member name as a path below the image root: `./a//b/` and `/a/b` are `a/b`."""
    path = posixpath.normpath("/" + name).lstrip("/")
    return "" if path == "." else path


def _parents(path: str) -> list[str]:
    """The directories above `path` below the root: `a/b/c` -> `a`, `a/b`."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]


def _passes(raw: str, name: str) -> list[str]:
    """The deepest directories a path written `raw` (`name` normalized) is reached
    through, "" (the root) left out: its parent, and the one each `..` leaves (the
    kernel resolves `a/../b` through `a`; normalized, it is `b`)."""
    directory = posixpath.dirname(name)
    passed = [directory] if directory else []
    if ".." in raw and ".." in (parts := raw.split("/")):
        passed += [left for end, part in enumerate(parts)
                   if part == ".." and (left := _normal("/".join(parts[:end])))]
    return passed


class _Links:
    """The symbolic links of every layer of one search and the directories their members
    and whiteouts pass through, to refuse an image where a path passes through a link.

    A layer is a stream read once, top layer first, and a link may come after the members
    below it (later in its layer, or in a lower layer), so both are kept until every
    layer has been read: each link once, each directory a member sits in (or a `..`
    leaves) once, not the directories above it nor the members. Their names are at most
    `MAX_PATH_RECORD` bytes in all (BlobTooLarge past it); their count is at most one per
    member and `..`, within `MAX_PULL_MEMBERS` headers. Sorted once at the end, when
    there is a link, each link's directories are found by bisection."""

    def __init__(self) -> None:
        self.links: dict[str, str] = {}  # a link's path -> the layer holding it
        self.directories: dict[str, str] = {}  # a directory passed -> a layer passing it
        self._kept = 0

    def add(self, member: tarfile.TarInfo, name: str, where: str) -> None:
        """Record `member` (`name` normalized) of the layer `where`. Raises ModuleError
        for a link as the image root, BlobTooLarge past `MAX_PATH_RECORD`."""
        for directory in _passes(member.name, name):
            self._keep(self.directories, directory, where)
        if member.issym():
            if not name:
                raise ModuleError(f"{where}: the image root / is a symbolic link, which "
                                  "every path passes through; refused")
            self._keep(self.links, name, where)

    def _keep(self, table: dict[str, str], name: str, where: str) -> None:
        if name in table:
            return
        self._kept += len(name)
        if self._kept > MAX_PATH_RECORD:
            raise BlobTooLarge(f"{where}: directory and link names of more than "
                               f"{MAX_PATH_RECORD} bytes in all; refused")
        table[name] = where

    def through(self, directories: list[str]) -> tuple[str, str] | None:
        """The first link (and its layer) that one of `directories`, or a directory
        above one, is: what a path reached through them passes through."""
        for directory in directories:
            for above in (*_parents(directory), directory):
                if above in self.links:
                    return above, self.links[above]
        return None

    def crossed(self) -> tuple[str, str, str] | None:
        """A link some recorded member passes through: (the link, its layer, the
        member's layer), or None."""
        if not self.links:
            return None
        ordered = sorted(self.directories)
        for link, where in self.links.items():
            if link in self.directories:
                return link, where, self.directories[link]
            # The names below `link/` sort together, from the first at or after it.
            first = bisect.bisect_left(ordered, link + "/")
            if first < len(ordered) and ordered[first].startswith(link + "/"):
                return link, where, self.directories[ordered[first]]
        return None


@dataclass
class _Found:
    """What one layer says about the module path: its bytes, and why it hides what
    lower layers hold there ("" when it does not)."""

    data: bytes | None = None
    hides: str = ""
    # The module's parents its layer did not make directories before it: what the
    # layers below leave there decides whether it can be written (`_Beneath`).
    open_parents: tuple[str, ...] = ()


_KINDS = {tarfile.DIRTYPE: "directory", tarfile.SYMTYPE: "symbolic link",
          tarfile.LNKTYPE: "hard link", tarfile.CHRTYPE: "character device",
          tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "FIFO"}
_FILE = "regular file"


def _kind(member: tarfile.TarInfo) -> str:
    # A contiguous file (type 7) is a file to tarfile and GNU tar, one containerd cannot
    # unpack: no module comes from it.
    if member.type == tarfile.CONTTYPE:
        return "contiguous file"
    return _FILE if member.isfile() else _KINDS.get(member.type, "special file")


class _InOrder:
    """What the module's path is once one layer's members are applied in order, as GNU
    tar (`tar -x`) and containerd apply them: the last member at a path wins. Where they
    part the layer is refused: tar cannot replace a directory that is not empty nor
    write below a file (it goes on without that member), containerd replaces a whole
    tree, stops at a member below a file, and deletes for a whiteout what its own layer
    wrote (OCI: a whiteout hides lower layers only); for an opaque marker its native
    unpacking keeps the paths its layer has unpacked so far, not a directory a member
    below it only implies."""

    def __init__(self, wanted: str, path: str, where: str) -> None:
        self.wanted, self.path, self.where = wanted, path, where
        self.parents = _parents(wanted)
        self.found = _Found()
        self.last = ""  # the kind of the last member at the module's path
        self.below = ""  # a member below the module's path, making it a directory
        # Parents left as no directory, by a file or a whiteout, and why the module
        # cannot be written below them (links left out: `_Links` refuses a path through
        # one, saying so).
        self.not_directories: dict[str, tuple[str, str]] = {}
        self.listed: set[str] = set()  # parents the layer has a member for, so far
        # Parents the layer has made directories, whatever the layers below hold there:
        # last named as a directory, or below an opaque marker.
        self.made: set[str] = set()

    def add(self, member: tarfile.TarInfo, name: str, tar: tarfile.TarFile) -> None:
        """Apply `member` (`name` normalized), reading the module's bytes from `tar`.
        Raises ModuleError where unpackers would leave different things, or none."""
        base, directory = posixpath.basename(name), posixpath.dirname(name)
        if name.startswith(self.wanted + "/"):
            self._below(name)
        elif base == OPAQUE and (not directory or directory in self.parents):
            self._opaque(name, directory)
        elif base.startswith(WHITEOUT) and base != OPAQUE:
            target = posixpath.join(directory, base[len(WHITEOUT):])
            if target == self.wanted or target in self.parents:
                self._whiteout(name, target)
        elif name in self.parents:
            self._parent(member, name)
        elif name == self.wanted:
            self._module(member, tar)

    def result(self) -> _Found:
        """The layer's module, or why it hides lower layers'. Raises ModuleError when the
        path is left as anything but a regular file."""
        if self.last and self.last != _FILE:
            raise ModuleError(f"{self.path}: not a regular file in the image (the last of "
                              f"its members in {self.where} is a {self.last}); refused")
        if not self.last and self.below:
            raise ModuleError(f"{self.path}: not a regular file in the image ({self.where} "
                              f"holds /{self.below} below it); refused")
        return self.found

    def _refuse(self, what: str, why: str) -> NoReturn:
        raise ModuleError(f"{self.path}: {self.where} {what}: {why}; refused")

    def _below(self, name: str) -> None:
        if self.last == _FILE:
            self._refuse(f"holds it, then /{name} below it", "tar keeps the module and "
                         "cannot write that member, containerd stops at it")
        self.below = self.below or name

    def _whiteout(self, name: str, target: str) -> None:
        if self.last == _FILE:
            self._refuse(f"holds it, then the whiteout {name} after it", "OCI and tar keep "
                         "what the layer itself holds, containerd deletes it")
        if target != self.wanted:
            # overlayfs unpacks a whiteout as a device at its path, and stops at a member
            # below it; tar and native unpacking write the module in a directory there.
            self.not_directories[target] = (
                f"the whiteout {name} of it", "overlayfs leaves a whiteout device there and "
                "cannot write below it, tar and containerd's native unpacking write it")
            self.made.discard(target)
        self.found.hides = f"whiteout {name}"

    def _opaque(self, name: str, directory: str) -> None:
        implied = [parent for parent in self.parents if parent not in self.listed
                   and (not directory or parent.startswith(directory + "/"))]
        if self.last == _FILE and implied:
            self._refuse(f"holds it, then the opaque marker {name} after it, /{implied[0]} "
                         "having no member of its own", "OCI, tar and overlayfs keep what the "
                         "layer itself holds, containerd's native unpacking removes a "
                         "directory its layer did not list, and the module in it")
        # Nothing of the layers below is left in it: the directories below it are this
        # layer's to make.
        self.made.update(parent for parent in self.parents
                         if not directory or parent.startswith(directory + "/"))
        self.found.hides = f"{directory or '/'} made opaque ({OPAQUE})"

    def _parent(self, member: tarfile.TarInfo, name: str) -> None:
        self.listed.add(name)
        if member.isdir():
            self.not_directories.pop(name, None)
            self.made.add(name)
            return
        self.made.discard(name)
        if not member.issym():
            if self.last == _FILE:
                self._refuse(f"holds it, then /{name} replaced by a file that is not a "
                             "directory after it", "tar keeps the module (it cannot replace "
                             "a directory that is not empty), containerd removes it")
            self.not_directories[name] = ("a file that is not a directory",
                                          "neither tar nor containerd can write it there")
        self.found.hides = f"/{name} replaced by a file that is not a directory"

    def _module(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        kind = _kind(member)
        if member.type == tarfile.CONTTYPE:
            self._refuse("holds it as a contiguous file (type 7)",
                         "tar writes a file, containerd cannot unpack it")
        if self.below and not member.isdir():
            self._refuse(f"replaces a directory holding /{self.below} with a {kind}",
                         "containerd does, tar cannot (the directory is not empty)")
        if member.isfile():
            if self.found.data is not None:
                raise ModuleError(f"{self.where} holds {self.path} twice (tar keeps the last "
                                  "copy, a first match the first); refused")
            blocked = next((p for p in self.parents if p in self.not_directories), None)
            if blocked is not None:
                what, why = self.not_directories[blocked]
                self._refuse(f"writes it below /{blocked}, {what}", why)
            handle = tar.extractfile(member)
            if handle is None:
                raise ModuleError(f"{self.path}: not readable in the image")
            self.found.data = handle.read()
            self.found.open_parents = tuple(p for p in self.parents if p not in self.made)
        self.last = kind


class _Beneath:
    """The module's parents its layer left to the layers below (`_Found.open_parents`),
    as each of them, top down, leaves them: a directory there, or a deletion (a whiteout
    of it or above it, an opaque marker above it), settles a parent; a file that is not
    a directory refuses the image. The module's layer writes below it, which neither
    tar nor containerd's native unpacking can (it stops there), while overlayfs hides
    the file under the layer's directory and runs the module."""

    def __init__(self, found: _Found, path: str, where: str) -> None:
        self.open = list(found.open_parents)  # shallowest first
        self.path, self.where = path, where
        self.kinds: dict[str, str] = {}  # an open parent -> its last member's kind here
        self.deleted: set[str] = set()  # open parents this layer deletes from below

    def add(self, member: tarfile.TarInfo, name: str, tar: tarfile.TarFile) -> None:
        """Note what `member` (`name` normalized) of the layer being read leaves at an
        open parent."""
        if not self.open:
            return
        base, directory = posixpath.basename(name), posixpath.dirname(name)
        if base == OPAQUE:
            self.deleted.update(p for p in self.open
                                if not directory or p.startswith(directory + "/"))
        elif base.startswith(WHITEOUT):
            target = posixpath.join(directory, base[len(WHITEOUT):])
            self.deleted.update(p for p in self.open
                                if p == target or p.startswith(target + "/"))
        elif name in self.open and not member.issym():  # a link: `_Links` refuses it
            self.kinds[name] = _kind(member)

    def settle(self, where: str) -> None:
        """Settle the open parents by the layer `where` just read. Raises ModuleError
        where it leaves one a file that is not a directory."""
        for parent in list(self.open):
            kind = self.kinds.get(parent)
            if kind is not None and kind != "directory":
                raise ModuleError(
                    f"{self.path}: {self.where} writes it below /{parent}, which {where} "
                    f"holds as a {kind}: tar and containerd's native unpacking cannot write "
                    f"it there, overlayfs hides that {kind} under a directory; refused")
            if parent in self.deleted:  # and the parents below it
                self.open = [p for p in self.open
                             if p != parent and not p.startswith(parent + "/")]
            elif kind is not None:
                self.open.remove(parent)
        self.kinds.clear()
        self.deleted.clear()


def _check_name(member: tarfile.TarInfo, where: str) -> None:
    """Refuse (ModuleError) a member name GNU tar does not write as named where containerd
    writes it, cleaned: one with a `..` component (tar skips the member), one ending in
    `/.` (tar cannot open it), a directory's name (a trailing `/`, `.`, or none) for
    another kind of file (tar makes a directory or fails)."""
    parts = member.name.split("/")
    if ".." in parts:
        problem = ("the member {}: a '..' component (GNU tar skips it, containerd writes it "
                   "where the name leads)")
    elif member.name.endswith("/."):
        problem = ("the member {}: a name ending in /. (GNU tar cannot open it, containerd "
                   "writes it)")
    elif parts[-1] in ("", ".") and not member.isdir():
        kind = _kind(member)
        problem = (f"a {kind} named {{}}, a directory's name (GNU tar makes a directory or "
                   f"fails, containerd writes the {kind})")
    else:
        return
    raise ModuleError(f"{where}: {problem.format(printable(member.name) or repr(''))}; refused")


def _scan(tar: tarfile.TarFile, wanted: str, path: str, limit: int, where: str,
          links: _Links, beneath: _Beneath | None) -> _Found:
    """What the whole layer `tar` says about path `wanted` (`path` as the image names it),
    each member recorded in `links`. `beneath`, once an upper layer has said: its module
    is neither read nor held to the rules of one, the parents left to this layer are
    settled."""
    in_order = _InOrder(wanted, path, where) if beneath is None else beneath
    while (member := tar.next()) is not None:
        # tarfile keeps every member read: a million empty ones held 470 MB.
        tar.members.clear()  # type: ignore[attr-defined]  # (not in typeshed)
        name = _normal(member.name)
        links.add(member, name, where)
        _check_name(member, where)
        # Any member's size, before tarfile seeks past it: a read per 10 KiB of it, none
        # charged once the data has run out (2**80 bytes in a 63-byte layer spun for
        # ever). A negative one is refused with its header (`tarheaders`).
        if member.size > limit:
            raise BlobTooLarge(
                f"{path}: {member.size} bytes, over the module limit of {limit}"
                if name == wanted else f"{where}: a member of {member.size} bytes, more "
                "than a layer may unpack to; refused")
        in_order.add(member, name, tar)
    if isinstance(in_order, _Beneath):
        in_order.settle(where)
        return _Found()
    return in_order.result()


def _read_layer(descriptor: dict[str, Any], blob: Path, wanted: str, path: str, limit: int,
                budget: UnpackBudget, links: _Links, beneath: _Beneath | None,
                hashed: Callable[[bytes], object] | None,
                open_blob: BlobOpener | None) -> _Found:
    """`_scan` of one layer file, read once: every unpacked byte charged to `budget` and,
    given `hashed` (a hash's `update`), shown to it to the end of the stream, past the
    end of the tar archive where the search stops. The file is opened by `open_blob`
    when given (which may check it as it is read), else from `blob`."""
    where = f"layer {descriptor.get('digest')}"
    try:
        opened = open(blob, "rb") if open_blob is None else open_blob(str(descriptor["digest"]))
        with opened as handle, open_layer(descriptor, handle) as raw:
            unpacked = io.BufferedReader(_Bounded(raw, limit, budget, hashed))
            # Names as bytes in UTF-8, whatever this process's locale: pax paths are read
            # so, and a Latin-1 locale read the same bytes in a ustar name otherwise.
            with tarfile.open(fileobj=unpacked, mode="r|", tarinfo=guarded(budget, where),
                              encoding="utf-8", errors="surrogateescape") as tar:
                found = _scan(tar, wanted, path, limit, where, links, beneath)
            while hashed is not None and unpacked.read(1 << 20):
                pass
    # ValueError: tarfile's own, for numbers in pax headers it cannot read; zlib.error:
    # gzip's for a broken deflate block (tarfile converts it only in a header).
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise ModuleError(f"{where}: not a readable tar ({exc})") from None
    return found


def extract_module(layers: Sequence[tuple[dict[str, Any], Path]], path: str,
                   limit: int, budget: UnpackBudget | None = None,
                   diff_ids: Sequence[str] | None = None,
                   open_blob: BlobOpener | None = None) -> bytes:
    """The bytes of file `path` as the layers (tar or tar+gzip files, lowest first)
    applied in order leave it: from the topmost layer holding it, unless a layer above
    deletes it (a whiteout `.wh.NAME` of it or of a directory above it, an opaque
    `.wh..wh..opq` in a directory above it, a directory above it replaced by another
    kind of file) or makes it a directory (a member below it). A whiteout hides only
    what lower layers hold, as OCI says. Within a layer the last member at a path wins,
    as tar and containerd apply it; a layer they would leave differently is refused
    (`_InOrder`), and so is an image where the module is written below what a lower
    layer leaves a file (`_Beneath`). Every layer is read, once, for its symbolic links
    (`_Links`) and, given `diff_ids` (one per layer, `rootfs.diff_ids`), to check the
    digest of its bytes unpacked in the same read; given `open_blob`, layer files are
    opened by it (`Store.verifying`, which checks the blob's own digest in that read),
    not from their paths. At most `limit` unpacked bytes per layer, all of
    them, their headers and extended headers charged to `budget`. A layer listed again
    is not read again: its links, paths and digest are those it had. Raises ModuleError
    when no layer leaves the path a regular file, a layer holds it twice or leaves it as
    unpackers would not agree, a member, whiteout or `path` passes through a symbolic
    link, a header or member name unpackers read otherwise (`tarheaders`,
    `_check_name`), or an extended header is too large; IntegrityError for a layer unlike
    its `diff_ids` entry; BlobTooLarge over a limit."""
    if diff_ids is not None and len(diff_ids) != len(layers):
        raise ValueError(f"{len(diff_ids)} diff_ids for {len(layers)} layers")
    wanted = _normal(path)
    searched: set[object] = set()
    if budget is None:
        budget = UnpackBudget(limit * len(layers))
    links = _Links()
    decided: tuple[_Found, str] | None = None
    beneath: _Beneath | None = None
    for descriptor, blob in reversed(layers):
        digest = descriptor.get("digest")
        if digest in searched:
            continue
        searched.add(digest)
        hasher = None if diff_ids is None else hashlib.sha256()
        found = _read_layer(descriptor, blob, wanted, path, limit, budget, links, beneath,
                            None if hasher is None else hasher.update, open_blob)
        if hasher is not None and diff_ids is not None:
            _check_diff_id(digest, "sha256:" + hasher.hexdigest(), layers, diff_ids)
        if decided is None and (found.data is not None or found.hides):
            decided = found, f"layer {digest}"
            beneath = _Beneath(found, path, decided[1])
    passed = links.through(_passes(path, wanted))
    if passed is not None:
        raise ModuleError(f"{path} passes through the symbolic link /{passed[0]} "
                          f"({passed[1]}); unpackers follow it, so which file runs would "
                          "depend on the unpacker; refused")
    crossed = links.crossed()
    if crossed is not None:
        link, at, member = crossed
        raise ModuleError(f"{path}: {member} holds a path that passes through the symbolic "
                          f"link /{link} ({at}); unpackers write through it, so which file "
                          "runs would depend on the unpacker; refused")
    if decided is None:
        raise ModuleError(f"{path}: the image's Entrypoint names a file no layer holds")
    found, where = decided
    if found.data is None:
        raise ModuleError(f"{path}: deleted by an upper layer of the image ({where}: "
                          f"{found.hides}); refused")
    return found.data


def _check_diff_id(digest: object, unpacked: str,
                   layers: Sequence[tuple[dict[str, Any], Path]],
                   diff_ids: Sequence[str]) -> None:
    """Refuse (IntegrityError) layer `digest`, unpacked to `unpacked`, when a `diff_ids`
    entry for it (one for each time it is listed) says otherwise."""
    for (descriptor, _), expected in zip(layers, diff_ids, strict=True):
        if descriptor.get("digest") == digest and expected != unpacked:
            raise IntegrityError(f"layer {digest} unpacks to {unpacked}, rootfs.diff_ids "
                                 f"says {expected}; refused")
