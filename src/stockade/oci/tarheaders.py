"""Tar headers read as GNU tar and Go's archive/tar (containerd) read them, or refused.

CPython's tarfile reads a layer's members, but reads some headers otherwise than the
unpackers that will unpack the image, so a hostile layer could name one module to
Stockade and another to them. `guarded` gives tarfile a `TarInfo` class that checks each
header as tarfile parses it and refuses (ModuleError, 126) what they would read
differently:

- a name prefix (byte 345) in a header whose magic is not ustar's (`ustar\\0`, any
  version): tarfile joins it to the name whatever the magic, GNU tar and Go only under
  that magic; a STAR trailer (`tar\\0` at byte 508), whose prefix Go reads as 131 bytes.
  A GNU header (`ustar  \\0`) holds an access and a change time there (GNU tar's
  incremental archives): read as times by GNU tar and Go, so the name is taken without
  what tarfile joined, unless they are no octal numbers (Go then joins them as a prefix);
- a negative base-256 size (GNU tar takes the block for no header and skips it, Go
  ignores it for a directory, a link or a device and refuses a file's); a GNU dump
  directory (type `D` of incremental archives: GNU tar makes a directory, containerd
  cannot unpack it);
- a numeric field tarfile reads leniently (`int(field, 8)` after the first NUL: a size
  `\\0 00002000` is 0 to it, 1024 to GNU tar and Go);
- two extended headers of a kind before one member (tarfile takes the first, GNU tar and
  Go the last), a GNU long name and a pax path for one member (GNU tar takes the pax
  path, Go the long name), a global pax header (GNU tar applies it, containerd ignores
  it), a Solaris one (containerd cannot unpack it), sparse members and `GNU.sparse.*`
  keywords (a module is no sparse file; tarfile read a sparse map into a Python int per
  number while parsing the header: a 65 KB gzipped layer took 1.7 GB and 24 s);
- a pax record that is malformed (GNU tar skips it, Go refuses the layer), names a
  keyword twice, holds a NUL in a name (GNU tar cuts the name there), an empty path, or
  a number tarfile would take and they would not (tarfile made 0 of a size of 5,000
  digits, and read the member's data as headers);
- a block that is no header where the archive has not ended: tarfile stops there
  silently, GNU tar skips it and reads on; a zero block followed by more members.

Pax records are parsed here, in one linear pass: tarfile's own parser is quadratic in a
header of digits (CVE-2024-6232). Each extended header is also charged to a budget
before it is read (`UnpackBudget.charge_header`).
"""

from __future__ import annotations

import re
import tarfile
from typing import NoReturn, Protocol, Self

from ..errors import ModuleError
from .media import shown

__all__ = ["HeaderBudget", "guarded"]

BLOCK = tarfile.BLOCKSIZE
_USTAR_MAGIC = b"ustar\0"  # GNU tar and Go join the prefix under it, whatever the version
_GNU_MAGIC = b"ustar  \0"
_GNU_TIMES = ((345, 357), (357, 369))  # a GNU header's atime and ctime, where ustar's prefix is
_DUMPDIR = b"D"
_STAR_TRAILER = b"tar\0"
_EXTENDED = {tarfile.XHDTYPE: "pax", tarfile.XGLTYPE: "pax global",
             tarfile.SOLARIS_XHDTYPE: "Solaris pax", tarfile.GNUTYPE_LONGNAME: "GNU long-name",
             tarfile.GNUTYPE_LONGLINK: "GNU long-link"}
_REFUSED_TYPES = {
    tarfile.XGLTYPE: "a pax global header (GNU tar applies it to every later member, "
                     "containerd ignores it)",
    tarfile.SOLARIS_XHDTYPE: "a Solaris pax header (tarfile and GNU tar read it as pax, "
                             "containerd cannot unpack it)",
    tarfile.GNUTYPE_SPARSE: "a sparse file (a Wasm image holds none)",
    _DUMPDIR: "a GNU dump directory (type D of an incremental archive: GNU tar makes a "
              "directory, containerd cannot unpack it)",
}
# Octal fields of a header, as GNU tar and Go agree to read them: blanks, digits, then
# NULs or blanks; no digit and a NUL (0); base-256, a first byte of 0x80 or 0xff (Go reads
# no base-256 checksum). Not a sign, an underscore, a tab or a NUL before the digits,
# which tarfile reads otherwise.
_NUMBERS = (("mode", 100, 108), ("uid", 108, 116), ("gid", 116, 124), ("size", 124, 136),
            ("mtime", 136, 148), ("chksum", 148, 156), ("devmajor", 329, 337),
            ("devminor", 337, 345))
_OCTAL = re.compile(rb" *[0-7]+[ \0]*|[ \0]*\0[ \0]*")
_BASE_256 = (0x80, 0xFF)
# Pax values tarfile converts to numbers (0 for what int() or float() refuse), as GNU tar
# and Go read them; times may be negative, with a fraction.
_INTEGER = re.compile(r"[0-9]{1,19}")
_TIME = re.compile(r"-?[0-9]{1,19}(\.[0-9]*)?")
_PAX_NUMBERS = {"size": _INTEGER, "uid": _INTEGER, "gid": _INTEGER, "mtime": _TIME,
                "atime": _TIME, "ctime": _TIME}
_PAX_NAMES = ("path", "linkpath", "uname", "gname")  # GNU tar cuts them at a NUL
_LENGTH_DIGITS = 19  # of a pax record's length, before int() reads it
# The extended headers that name a member's path or link target, and their pax keyword.
_NAMING = {tarfile.GNUTYPE_LONGNAME: "path", tarfile.GNUTYPE_LONGLINK: "linkpath"}
_GNU_NAME = {"path": "GNU long name", "linkpath": "GNU long link"}
# Raised by TarInfo.frombuf (not in typeshed); TarFile.next() takes each for the end of
# the archive, the last two only past its first header.
_ZERO_BLOCK = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_NO_HEADER = tarfile.InvalidHeaderError  # type: ignore[attr-defined]
_CUT_HEADER = tarfile.TruncatedHeaderError  # type: ignore[attr-defined]


class HeaderBudget(Protocol):
    """What one pull may spend on tar headers (`image.UnpackBudget`)."""

    def charge_member(self, in_layer: int, where: str) -> None:
        """Count one more header, the `in_layer`th of its layer; raise past a limit."""

    def charge_header(self, kind: str, size: int, where: str) -> None:
        """Count an extended header of `size` bytes before it is read; raise past a limit."""


def _blocks(size: int) -> int:
    """`size` bytes rounded up to whole tar blocks."""
    return -(-size // BLOCK) * BLOCK


class _Headers:
    """The headers of one layer as tarfile parses them, one block at a time: what the
    extended headers read since the last member said, and where the archive ends."""

    def __init__(self, budget: HeaderBudget, where: str) -> None:
        self.budget, self.where = budget, where
        self.count = 0
        self.depth = 0  # TarInfo.fromtarfile calls under way (nested for extended headers)
        self.pending: set[bytes] = set()  # extended header types since the last member
        self.named: dict[str, str] = {}  # "path" / "linkpath" -> the header naming it

    def refuse(self, what: str) -> NoReturn:
        raise ModuleError(f"{self.where}: {what}; refused")

    def block(self, buf: bytes | bytearray, info: tarfile.TarInfo, encoding: str,
              errors: str) -> None:
        """Check a header block tarfile has parsed into `info` (names decoded by
        `encoding` and `errors`), before it reads what the block announces."""
        for field, start, end in _NUMBERS:
            if _OCTAL.fullmatch(buf, start, end) is None and (buf[start] not in _BASE_256
                                                               or field == "chksum"):
                self.refuse(f"a header whose {field} field {buf[start:end]!r} is no number as "
                            "GNU tar and Go read one")
        if buf[124] == 0xFF:  # base-256 with the sign bit: negative
            self.refuse(f"a header of a negative size, {info.size} (GNU tar takes it for no "
                        "header and skips it, Go ignores a directory's and refuses a file's)")
        if buf[345] and buf[257:263] != _USTAR_MAGIC:
            self._not_a_prefix(buf, info, encoding, errors)
        if buf[508:512] == _STAR_TRAILER:
            self.refuse("a STAR header (its prefix is 131 bytes to Go, 155 to tarfile and GNU "
                        "tar)")
        kind = _EXTENDED.get(info.type)
        if kind is not None:
            self.budget.charge_header(kind, info.size, self.where)
        if info.type in _REFUSED_TYPES:
            self.refuse(_REFUSED_TYPES[info.type])
        if kind is not None:
            self._extended(info.type, kind)
        else:
            self._member(buf)

    def _not_a_prefix(self, buf: bytes | bytearray, info: tarfile.TarInfo, encoding: str,
                      errors: str) -> None:
        """Bytes at 345 of a header without ustar's magic, which tarfile joined to the name
        as a prefix (not for its GNU types): GNU tar and Go join nothing for a GNU header
        holding two octal times there, so neither does this; otherwise refused."""
        if buf[257:265] != _GNU_MAGIC:
            self.refuse("a name prefix in a header whose magic is not ustar's (tarfile joins "
                        "it to the name, GNU tar and Go do not)")
        if not all(_OCTAL.fullmatch(buf, start, end) for start, end in _GNU_TIMES):
            self.refuse(f"a GNU header whose access and change times (bytes 345-368) "
                        f"{bytes(buf[345:369])!r} are no octal numbers (Go joins them to the "
                        "name as a prefix, GNU tar does not)")
        if info.type not in tarfile.GNU_TYPES:
            joined = bytes(buf[345:500]).split(b"\0", 1)[0].decode(encoding, errors)
            info.name = info.name.removeprefix(joined + "/")

    def _extended(self, kind: bytes, shown_kind: str) -> None:
        if kind in self.pending:
            self.refuse(f"two {shown_kind} headers before one member (tarfile takes the "
                        "first, GNU tar and Go the last)")
        self.pending.add(kind)
        if kind in _NAMING:
            self.name(_NAMING[kind], _GNU_NAME[_NAMING[kind]])

    def _member(self, buf: bytes | bytearray) -> None:
        if (buf[156:157] == tarfile.AREGTYPE and buf[:100].split(b"\0", 1)[0].endswith(b"/")
                and "path" in self.named):
            self.refuse(f"a directory named by a trailing / (V7) and renamed by a "
                        f"{self.named['path']} (tarfile keeps a directory, GNU tar and Go "
                        "make a file)")
        self.pending.clear()
        self.named.clear()

    def name(self, field: str, by: str) -> None:
        """Record that an extended header (`by`) names the next member's `field`."""
        if field in self.named:
            self.refuse(f"a pax {field} and a {_GNU_NAME[field]} for one member (GNU tar "
                        f"takes the pax {field}, Go the {_GNU_NAME[field]})")
        self.named[field] = by

    def long_name(self, padded: bytes, size: int, kind: bytes) -> bytes:
        """The name a GNU long-name or long-link header's `padded` data blocks give, as
        tarfile, GNU tar and Go all read it; refused where they do not: tarfile and GNU
        tar read to the first NUL of the blocks, Go only the header's `size` bytes, and an
        empty name is used by them and ignored by Go (the member keeps its own)."""
        what = _GNU_NAME[_NAMING[kind]]
        cut = padded.find(b"\0")
        end = len(padded) if cut < 0 else cut
        if end > size:
            self.refuse(f"a {what} running past its header's size of {size} (tarfile and GNU "
                        "tar read on to a NUL, Go stops at the size)")
        if end == 0:
            self.refuse(f"an empty {what} (tarfile and GNU tar use it, Go keeps the member's "
                        "own name)")
        return padded[:end]

    def pax(self, data: bytes) -> dict[str, str]:
        """The records of a pax header's `data`, `"%d %s=%s\\n"` each, checked."""
        records: dict[str, str] = {}
        position = 0
        while position < len(data):
            space = data.find(b" ", position, position + _LENGTH_DIGITS + 1)
            digits = data[position:space]
            end = position + int(digits) if space > position and digits.isdigit() else 0
            if end <= space + 1 or end > len(data) or data[end - 1] != ord("\n"):
                self.refuse("a malformed pax record (GNU tar skips it, Go refuses the layer)")
            key, equals, value = data[space + 1:end - 1].partition(b"=")
            if not equals or not key or b"\0" in key:
                self.refuse("a malformed pax record (GNU tar skips it, Go refuses the layer)")
            keyword = key.decode("utf-8", "surrogateescape")
            if keyword in records:
                self.refuse(f"a pax header naming {shown(keyword)} twice")
            records[keyword] = value.decode("utf-8", "surrogateescape")
            position = end
        for pair in records.items():
            self._pax_record(*pair)
        return records

    def _pax_record(self, keyword: str, value: str) -> None:
        if keyword.startswith("GNU.sparse."):
            self.refuse(_REFUSED_TYPES[tarfile.GNUTYPE_SPARSE])
        number = _PAX_NUMBERS.get(keyword)
        if number is not None and not (number.fullmatch(value)
                                       and int(value.split(".")[0]) < 2**63):
            what = shown(value) if len(value) <= 40 else f"of {len(value)} characters"
            self.refuse(f"a pax {keyword} {what}, not a number (tarfile reads it otherwise "
                        "than GNU tar and Go)")
        if keyword in _PAX_NAMES and "\0" in value:
            self.refuse(f"a pax {keyword} holding a NUL (GNU tar cuts it there, Go refuses "
                        "the layer)")
        if keyword == "path" and not value:
            self.refuse("an empty pax path (GNU tar reads it as '.', containerd as the "
                        "member's own name)")
        if keyword in _GNU_NAME:
            self.name(keyword, f"pax {keyword}")

    def ended(self, error: tarfile.HeaderError, tar: tarfile.TarFile) -> None:
        """Refuse an archive that `error`, raised for the header at `tar.offset`, does
        not end as GNU tar and Go end it."""
        if isinstance(error, _ZERO_BLOCK):
            after = tar.fileobj.read(BLOCK)
            if after.strip(b"\0"):
                self.refuse(f"a lone zero block at byte {tar.offset} before more members "
                            "(tarfile and GNU tar stop there, Go refuses the layer)")
        elif isinstance(error, _NO_HEADER) and tar.offset:
            self.refuse(f"a block at byte {tar.offset} that is no tar header ({error}), "
                        "before the end of the archive (tarfile stops there, GNU tar skips "
                        "it and reads on)")
        elif isinstance(error, _CUT_HEADER) and tar.offset:
            self.refuse(f"a tar header cut short at byte {tar.offset}")


def guarded(budget: HeaderBudget, where: str) -> type[tarfile.TarInfo]:
    """A TarInfo class for `tarfile.open(tarinfo=...)` reading the layer `where`: every
    header is counted and checked by `budget` and the rules above as tarfile parses its
    block, pax records are parsed here. Raises ModuleError (126) naming the header and
    `where`, or what `budget` raises."""
    headers = _Headers(budget, where)

    class Guarded(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, tar: tarfile.TarFile) -> Self:
            outermost = headers.depth == 0
            headers.depth += 1
            try:
                return super().fromtarfile(tar)
            except tarfile.HeaderError as exc:
                if outermost:
                    headers.ended(exc, tar)
                raise
            finally:
                headers.depth -= 1

        @classmethod
        def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
            headers.count += 1
            budget.charge_member(headers.count, where)
            info = super().frombuf(buf, encoding, errors)
            headers.block(buf, info, encoding, errors)
            return info

        def _proc_gnulong(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
            padded = tar.fileobj.read(_blocks(self.size))
            if len(padded) < self.size:
                raise tarfile.ReadError("unexpected end of data")
            text = headers.long_name(padded, self.size, self.type).decode(
                tar.encoding, tar.errors)
            try:
                member = self.fromtarfile(tar)
            except tarfile.HeaderError as exc:
                raise tarfile.ReadError(f"after a GNU long name: {exc}") from None
            member.offset = self.offset
            if self.type == tarfile.GNUTYPE_LONGNAME:  # as tarfile: a directory's `/` goes
                member.name = text.removesuffix("/") if member.isdir() else text
            else:
                member.linkname = text
            return member

        def _proc_pax(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
            data = tar.fileobj.read(_blocks(self.size))[:self.size]
            if len(data) < self.size:
                raise tarfile.ReadError("unexpected end of data")
            records = headers.pax(data)
            try:
                member = self.fromtarfile(tar)
            except tarfile.HeaderError as exc:
                raise tarfile.ReadError(f"after a pax header: {exc}") from None
            _apply(member, records)
            member.offset = self.offset
            if "size" in records:  # the next header moves with the member's data
                skipped = member.isreg() or member.type not in tarfile.SUPPORTED_TYPES
                tar.offset = member.offset_data + (_blocks(member.size) if skipped else 0)
            return member

    return Guarded


def _apply(member: tarfile.TarInfo, records: dict[str, str]) -> None:
    """Give `member` what its pax `records` say, as tarfile would; a path's trailing `/`
    is dropped for a directory only, so that a file named so stays refusable."""
    for keyword, value in records.items():
        if keyword == "path":
            member.name = value.rstrip("/") if member.isdir() else value
        elif keyword == "linkpath":
            member.linkname = value
        elif keyword in ("uname", "gname"):
            setattr(member, keyword, value)
        elif keyword in ("size", "uid", "gid"):
            setattr(member, keyword, int(value))
        elif keyword == "mtime":
            member.mtime = float(value)
    member.pax_headers = records
