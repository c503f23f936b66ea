"""The binary module format, read boundedly: one reader for the compile guard, `inspect`,
`advise` and signatures.

Hostile files are the input here: every count and length is checked against the bytes
that remain, and against the limit wasmtime's validator enforces (`MAX_IMPORTS`, ...),
before anything is allocated for it, so a module claiming 2**32 imports costs no more
than its own size to read, a file of millions of tiny entries no more than a module
wasmtime loads, and a malformed one fails with the offset of the first byte that does
not fit. Nothing is compiled and no guest code runs.

`sections` walks the section headers; the `read_*` functions decode one section's
payload. `code_shape` and `data_size` are lenient (a truncated module yields what its
headers allow: validity is wasmtime's verdict); everything else is strict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = [
    "MAGIC", "MalformedModule", "Cursor", "Section", "Import", "Export", "Limits",
    "DataSegment", "sections", "read_imports", "read_exports", "read_limits_section",
    "read_table_section", "read_data", "read_element_counts", "element_segments",
    "read_count", "read_start",
    "read_producers", "read_name_section", "read_bodies", "code_shape", "data_size",
    "skip_const_expr", "encode_leb",
    "SECTION_NAMES", "PAGE", "MAX_SECTIONS", "MAX_NAME",
]

MAGIC = b"\0asm\x01\0\0\0"
PAGE = 65536
# Sections any reader here reads, custom ones included: 16 MiB of empty custom sections
# (5.6M) cost the signature check 16 s and 1.1 GB, `stockade inspect` 47 s and 2.2 GB.
# wasmtime has no such bound; a module has a dozen standard sections.
MAX_SECTIONS = 10_000
# wasmparser's limits, which wasmtime 50 enforces at each count before its entries: a
# module past one is refused, so no reader here builds more entries than a loadable module
# holds (8 MiB of 2-byte data segments cost `inspect` 490 MB before). Imports and exports
# are 1,000,000 (100,000 in older wasmparsers): lower would refuse modules wasmtime loads.
MAX_NAME = 100_000  # bytes of any name, custom section names included
MAX_IMPORTS = MAX_EXPORTS = MAX_FUNCTIONS = MAX_TYPES = MAX_GLOBALS = MAX_TAGS = 1_000_000
MAX_DATA_SEGMENTS = MAX_ELEMENT_SEGMENTS = 100_000
MAX_ELEMENTS = 10_000_000  # entries of one element segment
MAX_TABLES = MAX_MEMORIES = 100
# No engine validates these custom sections: bounds of our own, far above what
# toolchains write (three producers fields, a few tools each).
MAX_PRODUCER_FIELDS = 100
MAX_PRODUCERS = 1_000  # values of one field
CUSTOM, TYPE, IMPORT, FUNCTION, TABLE, MEMORY, GLOBAL, EXPORT, START, ELEMENT, CODE, DATA, \
    DATA_COUNT, TAG = range(14)
SECTION_NAMES = ("custom", "type", "import", "function", "table", "memory", "global",
                 "export", "start", "element", "code", "data", "datacount", "tag")
_KINDS = ("func", "table", "memory", "global", "tag")


def encode_leb(value: int) -> bytes:
    """`value` as a minimal unsigned LEB128 (how every length and index is written)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class MalformedModule(ValueError):
    """The bytes are not a well-formed binary module; the message names the offset."""


class Cursor:
    """A read position over `data[pos:end]` that never reads past `end`."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    @property
    def left(self) -> int:
        """Bytes that remain before `end`."""
        return self.end - self.pos

    def byte(self) -> int:
        """One byte. Raises MalformedModule at the end."""
        if self.pos >= self.end:
            raise MalformedModule(f"unexpected end at offset {self.pos}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def leb(self, bits: int = 32) -> int:
        """An unsigned LEB128 of at most `bits` bits."""
        data, pos, end = self.data, self.pos, self.end
        result = shift = 0
        while True:
            if pos >= end:
                raise MalformedModule(f"unexpected end at offset {pos}")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos
                return result
            shift += 7
            if shift >= bits + 7:
                raise MalformedModule(f"integer too long at offset {self.pos}")

    def bytes(self, length: int) -> bytes:
        """`length` bytes, checked against what remains."""
        if length > self.end - self.pos:
            raise MalformedModule(f"{length} bytes at offset {self.pos} overrun their section")
        start = self.pos
        self.pos += length
        return self.data[start:self.pos]

    def skip(self, length: int) -> None:
        """Step over `length` bytes, checked against what remains, without copying them
        (a 48 MiB data segment must not cost 48 MiB to walk past)."""
        if length > self.end - self.pos:
            raise MalformedModule(f"{length} bytes at offset {self.pos} overrun their section")
        self.pos += length

    def name(self) -> str:
        """A length-prefixed UTF-8 name (invalid UTF-8 replaced, for display only) of at
        most `MAX_NAME` bytes."""
        start = self.pos
        length = self.leb()
        if length > MAX_NAME:
            raise MalformedModule(f"name of {length} bytes at offset {start} exceeds the "
                                  f"limit of {MAX_NAME:,}")
        return self.bytes(length).decode("utf-8", "replace")

    def count(self, what: str, least: int = 1, limit: int | None = None) -> int:
        """A vector length, refused when `least` bytes per item cannot fit or when it
        exceeds `limit`."""
        start = self.pos
        count = self.leb()
        if limit is not None and count > limit:
            raise MalformedModule(f"{what} count {count} at offset {start} exceeds the limit "
                                  f"of {limit:,}")
        if count * least > self.end - self.pos:
            raise MalformedModule(f"{what} count {count} at offset {start} exceeds its section")
        return count


@dataclass(frozen=True)
class Section:
    """One section: `id`, its `name` when custom, where it starts (`offset`, the id byte)
    and its payload (`start`..`end`, after a custom section's name)."""

    id: int
    offset: int
    start: int
    end: int
    name: str = ""

    @property
    def kind(self) -> str:
        """`type`, `import`, ..., or `custom:NAME`."""
        if self.id == CUSTOM:
            return f"custom:{self.name}"
        return SECTION_NAMES[self.id] if self.id < len(SECTION_NAMES) else f"unknown:{self.id}"

    @property
    def size(self) -> int:
        """Payload bytes (a custom section's name excluded)."""
        return self.end - self.start


@dataclass(frozen=True)
class Import:
    """One import: `module.name` and its kind (func, table, memory, global, tag)."""

    module: str
    name: str
    kind: str
    limits: Limits | None = None  # memories and tables

    @property
    def qualified(self) -> str:
        """`module.name`."""
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class Export:
    """One export: its name, kind and index in its index space."""

    name: str
    kind: str
    index: int


@dataclass(frozen=True)
class Limits:
    """Limits of a memory (in pages of `page_size` bytes) or a table (in elements)."""

    minimum: int
    maximum: int | None
    shared: bool = False
    is64: bool = False
    page_size: int = PAGE


@dataclass(frozen=True)
class DataSegment:
    """A data segment's size and whether it is active (copied into memory at start)."""

    size: int
    active: bool


def _check_header(data: bytes) -> None:
    if not data.startswith(MAGIC):
        if data.startswith(b"\0asm"):
            raise MalformedModule("offset 4: not a core module of version 1 (a component?)")
        raise MalformedModule("offset 0: not a binary WebAssembly module (no \\0asm header)")


def sections(data: bytes, strict: bool = True) -> Iterator[Section]:
    """Every section in order. Strict: raises MalformedModule for a bad header or a
    section overrunning the file; lenient: the last section is cut at the end of file.
    Either raises MalformedModule past `MAX_SECTIONS`."""
    if strict:
        _check_header(data)
    pos, size = len(MAGIC), len(data)
    count = 0
    while pos < size:
        count += 1
        if count > MAX_SECTIONS:
            raise MalformedModule(f"offset {pos}: more than {MAX_SECTIONS:,} sections "
                                  "(custom sections included)")
        cursor = Cursor(data, pos + 1, size)
        section = data[pos]
        length = cursor.leb()
        end = cursor.pos + length
        if end > size:
            if strict:
                raise MalformedModule(
                    f"offset {pos}: section {section} of {length} bytes overruns the file")
            end = size
        name = ""
        start = cursor.pos
        if section == CUSTOM:
            inner = Cursor(data, start, end)
            name = inner.name()
            start = inner.pos
        elif strict and section >= len(SECTION_NAMES):
            raise MalformedModule(f"offset {pos}: unknown section id {section}")
        yield Section(section, pos, start, end, name)
        pos = end


def _limits(cursor: Cursor) -> Limits:
    flags = cursor.byte()
    if flags > 0x0F:
        raise MalformedModule(f"offset {cursor.pos - 1}: unknown limits flags {flags:#x}")
    bits = 64 if flags & 4 else 32
    minimum = cursor.leb(bits)
    maximum = cursor.leb(bits) if flags & 1 else None
    page = PAGE
    if flags & 8:
        # The custom-page-sizes proposal allows pages of 1 and 65536 bytes only; shifting
        # by an unchecked LEB (up to 2**35 - 1) built a 4 GiB int from an 18-byte module.
        start = cursor.pos
        log2 = cursor.leb()
        if log2 not in (0, 16):
            raise MalformedModule(f"offset {start}: page size 2**{log2} (only 2**0 and 2**16 "
                                  "are allowed)")
        page = 1 << log2
    return Limits(minimum, maximum, bool(flags & 2), bool(flags & 4), page)


def _table_type(cursor: Cursor) -> Limits:
    reftype = cursor.byte()
    if reftype in (0x63, 0x64):  # (ref null? heaptype): a heap type follows
        cursor.leb(33)
    return _limits(cursor)


def read_imports(data: bytes, section: Section | None = None) -> list[Import]:
    """Every import of a binary module, in order (`section`: the import section when the
    caller walked them already). Raises MalformedModule with the offset."""
    if section is None:
        section = next((s for s in sections(data) if s.id == IMPORT), None)
        if section is None:
            return []
    cursor = Cursor(data, section.start, section.end)
    count = cursor.count("import", 4, MAX_IMPORTS)
    found: list[Import] = []
    append = found.append
    for _ in range(count):
        module, name = cursor.name(), cursor.name()
        kind = cursor.byte()
        limits = None
        if kind == 0:
            cursor.leb()  # type index
        elif kind == 1:
            limits = _table_type(cursor)
        elif kind == 2:
            limits = _limits(cursor)
        elif kind == 3:
            _value_type(cursor)
            cursor.byte()  # mutability
        elif kind == 4:
            cursor.byte()
            cursor.leb()
        else:
            raise MalformedModule(f"offset {cursor.pos - 1}: unknown import kind {kind}")
        append(Import(module, name, _KINDS[kind], limits))
    return found


def _value_type(cursor: Cursor) -> None:
    if cursor.byte() in (0x63, 0x64):
        cursor.leb(33)


def read_exports(data: bytes, section: Section) -> list[Export]:
    """The export section's entries."""
    cursor = Cursor(data, section.start, section.end)
    found: list[Export] = []
    for _ in range(cursor.count("export", 3, MAX_EXPORTS)):
        name = cursor.name()
        kind = cursor.byte()
        if kind >= len(_KINDS):
            raise MalformedModule(f"offset {cursor.pos - 1}: unknown export kind {kind}")
        found.append(Export(name, _KINDS[kind], cursor.leb()))
    return found


def read_limits_section(data: bytes, section: Section) -> list[Limits]:
    """The memory section's limits."""
    cursor = Cursor(data, section.start, section.end)
    return [_limits(cursor) for _ in range(cursor.count("memory", 2, MAX_MEMORIES))]


def read_table_section(data: bytes, section: Section) -> list[Limits]:
    """The table section's limits (an initialiser expression, when present, skipped)."""
    cursor = Cursor(data, section.start, section.end)
    tables = []
    for _ in range(cursor.count("table", 3, MAX_TABLES)):
        if cursor.data[cursor.pos:cursor.pos + 2] == b"\x40\x00":
            cursor.pos += 2
            limits = _table_type(cursor)
            skip_const_expr(cursor)
        else:
            limits = _table_type(cursor)
        tables.append(limits)
    return tables


_COUNT_LIMITS = {FUNCTION: MAX_FUNCTIONS, GLOBAL: MAX_GLOBALS, TYPE: MAX_TYPES, TAG: MAX_TAGS,
                 MEMORY: MAX_MEMORIES, TABLE: MAX_TABLES}


def read_count(data: bytes, section: Section) -> int:
    """The leading count of a vector section (functions, globals, types, tags)."""
    cursor = Cursor(data, section.start, section.end)
    return cursor.count(section.kind, 1, _COUNT_LIMITS.get(section.id))


def read_start(data: bytes, section: Section) -> int:
    """The start function's index."""
    return Cursor(data, section.start, section.end).leb()


_WITH_LEB = {0x41: 32, 0x42: 64, 0x23: 32, 0xD2: 32}  # i32/i64.const, global.get, ref.func
_FIXED = {0x43: 4, 0x44: 8}  # f32.const, f64.const
_NO_IMMEDIATE = {0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E}  # extended-const add, sub, mul


def skip_const_expr(cursor: Cursor) -> None:
    """Move past a constant expression and its `end`. Raises MalformedModule for an
    instruction that is not allowed in one."""
    while True:
        opcode = cursor.byte()
        if opcode == 0x0B:
            return
        if opcode in _WITH_LEB:
            cursor.leb(_WITH_LEB[opcode] + 1)  # signed constants take one more bit
        elif opcode in _FIXED:
            cursor.skip(_FIXED[opcode])
        elif opcode == 0xD0:  # ref.null heaptype
            cursor.leb(33)
        elif opcode == 0xFD and cursor.leb() == 12:  # v128.const
            cursor.skip(16)
        elif opcode == 0xFB:  # the GC proposal's constant instructions
            sub = cursor.leb()
            if sub in (0, 1, 6, 7):  # struct.new(_default), array.new(_default): a type
                cursor.leb()
            elif sub == 8:  # array.new_fixed: a type and a length
                cursor.leb()
                cursor.leb()
            elif sub not in (26, 27, 28):  # any/extern conversions, ref.i31
                raise MalformedModule(
                    f"offset {cursor.pos - 1}: 0xfb {sub} in a constant expression")
        elif opcode not in _NO_IMMEDIATE:
            raise MalformedModule(
                f"offset {cursor.pos - 1}: opcode {opcode:#04x} in a constant expression")


def _data_segments(cursor: Cursor, found: list[DataSegment]) -> None:
    for _ in range(cursor.count("data segment", 2, MAX_DATA_SEGMENTS)):
        flags = cursor.leb()
        if flags == 2:
            cursor.leb()  # memory index
        if flags in (0, 2):
            skip_const_expr(cursor)  # the offset
        elif flags != 1:
            raise MalformedModule(f"offset {cursor.pos - 1}: unknown data segment flags {flags}")
        length = cursor.leb()
        found.append(DataSegment(length, flags != 1))  # counted even when cut short
        cursor.skip(length)


def read_data(data: bytes, section: Section) -> list[DataSegment]:
    """The data section's segments (sizes, active or passive)."""
    found: list[DataSegment] = []
    _data_segments(Cursor(data, section.start, section.end), found)
    return found


def read_element_counts(data: bytes, section: Section) -> list[int]:
    """How many entries each element segment holds."""
    return element_segments(Cursor(data, section.start, section.end), skip_const_expr)


def element_segments(cursor: Cursor, expression: Callable[[Cursor], object],
                     function: Callable[[int], object] | None = None) -> list[int]:
    """Walk the element section at `cursor`: `expression(cursor)` moves past each constant
    expression (offsets and entries), `function(index)` is told each entry given as a
    function index; returns each segment's entry count."""
    counts = []
    for _ in range(cursor.count("element segment", 2, MAX_ELEMENT_SEGMENTS)):
        flags = cursor.leb()
        if flags > 7:
            raise MalformedModule(f"offset {cursor.pos - 1}: unknown element flags {flags}")
        if flags & 2 and not flags & 1:
            cursor.leb()  # table index
        if not flags & 1:
            expression(cursor)  # the offset
        if flags & 3:
            if flags & 4:
                _value_type(cursor)  # a reference type: (ref null $t) has a heap type
            else:
                cursor.byte()  # the element kind
        entries = cursor.count("element", 1, MAX_ELEMENTS)
        for _ in range(entries):
            if flags & 4:
                expression(cursor)
            elif function is None:
                cursor.leb()
            else:
                function(cursor.leb())
        counts.append(entries)
    return counts


def read_producers(data: bytes, section: Section) -> dict[str, list[tuple[str, str]]]:
    """The `producers` custom section: field (language, processed-by, sdk) to (name,
    version) pairs; at most `MAX_PRODUCER_FIELDS` fields of `MAX_PRODUCERS` values."""
    cursor = Cursor(data, section.start, section.end)
    fields: dict[str, list[tuple[str, str]]] = {}
    for _ in range(cursor.count("producers field", 2, MAX_PRODUCER_FIELDS)):
        field_name = cursor.name()
        values = fields.setdefault(field_name, [])
        for _ in range(cursor.count("producer", 2, MAX_PRODUCERS - len(values))):
            values.append((cursor.name(), cursor.name()))
    return fields


def read_name_section(data: bytes, section: Section) -> tuple[str | None, int]:
    """The `name` custom section: the module's name and how many functions are named."""
    cursor = Cursor(data, section.start, section.end)
    module_name, functions = None, 0
    previous = -1
    while cursor.left:
        kind = cursor.byte()
        # Each subsection comes once, in order of id: at most 256 of them to walk, not
        # one per 2 bytes (32M empty subsections took 31 s).
        if kind <= previous:
            raise MalformedModule(f"offset {cursor.pos - 1}: name subsection {kind} after "
                                  f"{previous} (out of order or repeated)")
        previous = kind
        size = cursor.leb()
        sub = Cursor(data, cursor.pos, cursor.pos + size)
        if sub.end > cursor.end:
            raise MalformedModule(f"offset {cursor.pos}: name subsection overruns its section")
        if kind == 0:
            module_name = sub.name()
        elif kind == 1:
            functions = sub.count("function name", 2)
        cursor.pos = sub.end
    return module_name, functions


def code_shape(data: bytes) -> list[tuple[int, int]]:
    """(body size, declared locals) of every function in the code section, as far as its
    headers can be read (lenient: a malformed module is wasmtime's to reject)."""
    shape: list[tuple[int, int]] = []
    try:
        for section in sections(data, strict=False):
            if section.id == CODE:
                _bodies(Cursor(data, section.start, section.end), shape)
                break
    except MalformedModule:
        pass
    return shape


def read_bodies(data: bytes, section: Section) -> list[tuple[int, int]]:
    """(body size, declared locals) of every function body (strict)."""
    cursor = Cursor(data, section.start, section.end)
    shape = []
    for _ in range(cursor.count("function body", 2, MAX_FUNCTIONS)):
        size = cursor.leb()
        body = Cursor(data, cursor.pos, cursor.pos + size)
        cursor.skip(size)
        locals_count = 0
        for _ in range(body.count("local group", 2)):
            locals_count += body.leb()
            _value_type(body)
        shape.append((size, locals_count))
    return shape


def _bodies(cursor: Cursor, shape: list[tuple[int, int]]) -> None:
    append = shape.append
    for _ in range(cursor.leb()):
        body_size = cursor.leb()
        body_end = cursor.pos + body_size
        groups = cursor.leb()
        locals_count = 0
        for _ in range(groups):
            locals_count += cursor.leb()
            if cursor.byte() in (0x63, 0x64):
                cursor.leb(33)
        append((body_size, locals_count))
        if body_end > cursor.end:
            break
        cursor.pos = body_end


def data_size(data: bytes) -> int:
    """Bytes of all data segments, as far as their headers can be read (lenient)."""
    found: list[DataSegment] = []
    try:
        for section in sections(data, strict=False):
            if section.id == DATA:
                _data_segments(Cursor(data, section.start, section.end), found)
                break
    except MalformedModule:
        pass
    return sum(segment.size for segment in found)
