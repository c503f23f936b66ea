"""A bounded reader of a binary module's import section.

Hostile files are the input here: every count and length is checked against the bytes
that remain before anything is allocated for it, so a module claiming 2**32 imports costs
no more than its own size to read. Nothing is compiled and no guest code runs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Import", "MalformedModule", "read_imports"]

MAGIC = b"\0asm\x01\0\0\0"
IMPORT_SECTION = 2
_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


class MalformedModule(ValueError):
    """The bytes are not a binary module; the message names the offset."""


@dataclass(frozen=True)
class Import:
    """One import: `module.name` and its kind (func, table, memory, global, tag)."""

    module: str
    name: str
    kind: str

    @property
    def qualified(self) -> str:
        """`module.name`."""
        return f"{self.module}.{self.name}"


class _Cursor:
    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise MalformedModule(f"unexpected end of section at offset {self.pos}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def leb(self) -> int:
        result = shift = 0
        start = self.pos
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift > 35:
                raise MalformedModule(f"integer too long at offset {start}")

    def name(self) -> str:
        length = self.leb()
        if length > self.end - self.pos:
            raise MalformedModule(f"name of {length} bytes overruns its section at {self.pos}")
        raw = self.data[self.pos:self.pos + length]
        self.pos += length
        return raw.decode("utf-8", "replace")

    def skip_limits(self) -> None:
        flags = self.byte()
        self.leb()
        if flags & 1:
            self.leb()


def read_imports(data: bytes) -> list[Import]:
    """Every import of a binary module, in order. Raises MalformedModule (with the offset)
    for anything that is not a well-formed module header or import section."""
    if not data.startswith(MAGIC):
        raise MalformedModule("not a binary WebAssembly module (no \\0asm version 1 header)")
    pos = len(MAGIC)
    while pos < len(data):
        header = _Cursor(data, pos, len(data))
        section = header.byte()
        size = header.leb()
        if size > len(data) - header.pos:
            raise MalformedModule(f"section {section} at offset {pos} overruns the file")
        if section == IMPORT_SECTION:
            return _imports(_Cursor(data, header.pos, header.pos + size))
        pos = header.pos + size
    return []


def _imports(cursor: _Cursor) -> list[Import]:
    count = cursor.leb()
    if count > cursor.end - cursor.pos:  # every import takes at least one byte
        raise MalformedModule(f"import count {count} exceeds its section at {cursor.pos}")
    found = []
    for _ in range(count):
        module, name = cursor.name(), cursor.name()
        kind = cursor.byte()
        if kind == 0:
            cursor.leb()  # type index
        elif kind == 1:
            cursor.byte()  # reference type
            cursor.skip_limits()
        elif kind == 2:
            cursor.skip_limits()
        elif kind == 3:
            cursor.byte()
            cursor.byte()  # value type, mutability
        elif kind == 4:
            cursor.byte()
            cursor.leb()
        else:
            raise MalformedModule(f"unknown import kind {kind} at offset {cursor.pos - 1}")
        found.append(Import(module, name, _KINDS[kind]))
    return found
