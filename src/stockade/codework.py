"""Code work: what a module's body bytes do not show of what compiling it costs.

The compile guard prices a function by its body bytes and locals (`compilecost`). Some
instructions compile to far more than their bytes, measured on a 2-core x86-64 machine
(wasmtime 50, Cranelift, the default profile's configuration):

- GC work, in units of one numeric field initialised (~6-8 µs of compile CPU, ~1 KB of
  host memory): `struct.new_default $t` (3 bytes) initialises every field of `$t`, up to
  10,000; a reference field initialised costs `REF_INIT` units, a reference field or
  element read or written `REF_ACCESS` (an inline barrier: 110-220 µs, ~26 KB each).
  100 `struct.new_default` of a 10,000-field struct (a 20 KB module) compiled for 8-16 s.
- Heavy sites, whose cost grows with the square of their number in one function: blocks
  and `if`s with results (30,000 in one body: 8-15 s), branches carrying values to
  their target (`BRANCH_WEIGHT`; 30,000 `br_if`s into one result block: 25 s),
  `call_indirect` (30,000: 10 s) and the table instructions, weighted by what they cost
  beside a `call_indirect` (`SITE_WEIGHTS`: 10,000 `table.copy`s, 110 KB, compiled for
  25 s; 30,000 `table.fill`s for 82 s).
- Barriers beyond struct fields: reads and writes of reference globals and of tables of
  references other than funcref (`REF_ACCESS`; 25,000 anyref `global.get`/`set` pairs:
  12.9 s and 1.4 GiB), arrays of references made (`REF_NEW`) or filled, copied and
  initialised (`REF_BULK`; 10,000 `array.fill`s: 18.6 s and 3.9 GiB).
- Found by a second review: `br_on_null`, `br_on_non_null`, `br_on_cast` and `try_table`
  catch clauses are branches (30,000-55,000 into a result block: 25-35 s); `ref.test` and
  `ref.cast` a heavy site each (60,000: 58 s, 1.6 GiB); heavy sites also cost memory with
  their square (25,000 `try_table`s with results: 2.5 GiB; 60,000 aborted the process).
  Not counted yet: the arity of calls, throws and branches (2,000 calls passing 1,000
  values: 38 s, 2 GiB) and reference locals live across calls (3.4 GiB).
- Allocation in constant expressions (global and table initialisers, element segments),
  compiled with the module: 100 globals of a 10,000-field struct each (20 KB) took 10 s
  to load.

`code_work` gives each function's (GC units, heavy sites); `compilecost` turns them into
predicted CPU and memory. Decoding every instruction of CPython for WASI takes over a
second of Python, so a body is decoded only in a module that could touch GC references
(GC types, reference globals or tables) or when the bytes that may begin a heavy site
are more than `EXACT_ABOVE`; otherwise that count (an upper bound) stands for its heavy
sites. A function this
reader cannot decode to its end (an instruction it does not know) is charged as if the
rest of its body were the costliest code, so hiding a bomb behind an unknown instruction
saves nothing.
"""

from __future__ import annotations

from .binary import (
    CODE,
    ELEMENT,
    GLOBAL,
    IMPORT,
    TABLE,
    TYPE,
    Cursor,
    MalformedModule,
    element_segments,
    sections,
)
from .wasmcode import NO_IMMEDIATE, ONE_LEB, block_type, heap_type, step, value_type, walk

__all__ = ["code_work", "REF_INIT", "REF_ACCESS", "SITE_WEIGHTS", "EXACT_ABOVE"]

REF_INIT = 6  # GC units for a reference field or element initialised
REF_ACCESS = 25  # GC units for a reference field, element, global or table slot accessed
REF_NEW = 35  # GC units for an array of references made (array.new, new_default, ...)
REF_BULK = 160  # GC units for array.fill, copy, init_data, init_elem on references
BRANCH_WEIGHT = 1.3  # heavy sites per branch carrying values to its target
# Heavy sites per instruction: call_indirect and return_call_indirect, table.grow,
# table.init, table.fill, table.copy (0xFC sub-opcodes 15, 12, 17, 14).
SITE_WEIGHTS = {(0x11, -1): 1.0, (0x13, -1): 1.0, (0xFC, 15): 1.0, (0xFC, 12): 1.9,
                (0xFC, 17): 2.2, (0xFC, 14): 3.8}
# No instruction is more than this many heavy sites per byte (table.copy: 3.8 in 4 bytes;
# a br_table target is 1.3 in at least one byte): a bound for any body of known size.
_SITES_PER_BYTE = BRANCH_WEIGHT

_REFS = frozenset([0x63, 0x64, *range(0x69, 0x75)])  # (ref ...) and the shorthands
_PACKED = (0x77, 0x78)  # i16, i8
_NEW = (0x00, 0x01)  # struct.new, struct.new_default
_FIELD = (0x02, 0x03, 0x04, 0x05)  # struct.get, get_s, get_u, set
_ELEMENT = (0x0B, 0x0C, 0x0D, 0x0E)  # array.get, get_s, get_u, set
_NEW_FIXED = 0x08
_ARRAY_NEW = (0x06, 0x07, 0x09, 0x0A)  # array.new, new_default, new_data, new_elem
_ARRAY_BULK = (0x10, 0x11, 0x12, 0x13)  # array.fill, copy, init_data, init_elem
_VALUE_TYPES = frozenset([0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x63, 0x64, *range(0x69, 0x75)])
_PLAIN = NO_IMMEDIATE - {0x0B, 0x05}
EXACT_ABOVE = 64  # heavy sites (an upper bound) past which a body is decoded
# Bytes that may begin a heavy site, each with the most it may weigh.
_SITE_BYTES = ((b"\x02", 1.0), (b"\x03", 1.0), (b"\x04", 1.0), (b"\x11", 1.0),
               (b"\x13", 1.0), (b"\xfc", max(SITE_WEIGHTS.values())),
               (b"\x0c", BRANCH_WEIGHT), (b"\x0d", BRANCH_WEIGHT), (b"\x1f", BRANCH_WEIGHT),
               (b"\xd5", BRANCH_WEIGHT), (b"\xd6", BRANCH_WEIGHT), (b"\xfb", BRANCH_WEIGHT))
# A block, loop or if of empty type is no heavy site: each such pair found is one fewer.
_EMPTY_BLOCKS = (b"\x02\x40", b"\x03\x40", b"\x04\x40")
# Read here, not skipped: branches (their targets) and global and table accesses.
_LEB = ONE_LEB - {0x0C, 0x0D, 0x23, 0x24, 0x25, 0x26, 0xD5, 0xD6}

Types = list[tuple[bool, ...] | None]


class _Module:
    """What decoding a body needs to know of the module: per type index, whether each
    field (a struct's) or the element (an array's) holds a reference (None: a function
    type); per global and per table, whether it holds GC references."""

    __slots__ = ("types", "fields", "globals", "tables")

    def __init__(self) -> None:
        self.types: Types = []
        self.fields: list[int] = []
        self.globals: list[bool] = []
        self.tables: list[bool] = []

    @property
    def references(self) -> bool:
        """Whether any code could touch GC references (every body is then decoded)."""
        return (any(kind is not None for kind in self.types) or any(self.globals)
                or any(self.tables))


def code_work(data: bytes) -> list[tuple[int, float]]:
    """(GC units, heavy sites) of each defined function, in code-section order, then one
    entry for the global initialisers when they allocate (lenient: a malformed module
    yields what could be read; validity is wasmtime's verdict)."""
    module = _Module()
    work: list[tuple[int, float]] = []
    initialisers = 0
    try:
        for section in sections(data, strict=False):
            cursor = Cursor(data, section.start, section.end)
            if section.id == TYPE:
                module.types = _types(cursor)
                module.fields = [sum(REF_INIT if ref else 1 for ref in kind)
                                 if kind is not None else 0 for kind in module.types]
            elif section.id == IMPORT:
                _imports(cursor, module)
            elif section.id == TABLE:
                for _ in range(cursor.count("table", 3)):
                    if cursor.data[cursor.pos:cursor.pos + 2] == b"\x40\x00":
                        cursor.pos += 2
                        module.tables.append(_table_type(cursor))
                        initialisers += _constant(cursor, module)
                    else:
                        module.tables.append(_table_type(cursor))
            elif section.id == GLOBAL:
                for _ in range(cursor.count("global", 3)):
                    module.globals.append(value_type(cursor) in _GC_REFS)
                    cursor.byte()  # mutability
                    initialisers += _constant(cursor, module)
            elif section.id == ELEMENT:
                initialisers += _elements(cursor, module)
            elif section.id == CODE:
                _functions(cursor, module, work)
                break
    except MalformedModule:
        pass
    if initialisers:
        work.append((initialisers, 0.0))
    return work


# Reference types that need barriers: all but funcref (0x70) and (ref null? func).
_GC_REFS = frozenset([0x63, 0x64, *range(0x69, 0x70), *range(0x71, 0x75)])


def _table_type(cursor: Cursor) -> bool:
    reference = cursor.byte()
    gc = reference != 0x70
    if reference in (0x63, 0x64):
        gc = heap_type(cursor) != 0x70  # (ref null? func) is funcref
    flags = cursor.byte()
    cursor.leb(64 if flags & 4 else 32)
    if flags & 1:
        cursor.leb(64 if flags & 4 else 32)
    return gc


def _imports(cursor: Cursor, module: _Module) -> None:
    for _ in range(cursor.count("import", 4)):
        cursor.skip(cursor.leb())  # module name
        cursor.skip(cursor.leb())  # field name
        kind = cursor.byte()
        if kind == 0:
            cursor.leb()
        elif kind == 1:
            module.tables.append(_table_type(cursor))
        elif kind == 2:
            flags = cursor.byte()
            cursor.leb(64 if flags & 4 else 32)
            if flags & 1:
                cursor.leb(64 if flags & 4 else 32)
            if flags & 8:
                cursor.leb()
        elif kind == 3:
            module.globals.append(value_type(cursor) in _GC_REFS)
            cursor.byte()
        elif kind == 4:
            cursor.byte()
            cursor.leb()
        else:
            raise MalformedModule(f"offset {cursor.pos - 1}: unknown import kind {kind}")


def _constant(cursor: Cursor, module: _Module) -> int:
    """GC units of a constant expression (evaluated at instantiation), past its end."""
    units = 0
    while True:
        at = cursor.pos
        opcode, sub = step(cursor)
        if opcode == 0x0B:
            return units
        if opcode == 0xFB:
            units += _gc_units(Cursor(cursor.data, at + 1, cursor.pos), sub, module)


def _elements(cursor: Cursor, module: _Module) -> int:
    """GC units of the element segments' offsets and expressions."""
    units = [0]

    def expression(at: Cursor) -> None:
        units[0] += _constant(at, module)

    element_segments(cursor, expression)
    return units[0]


def _types(cursor: Cursor) -> Types:
    """For each type index: whether each field (a struct's) or the element (an array's)
    holds a reference; None for a function type."""
    found: Types = []
    for _ in range(cursor.count("type")):
        if cursor.data[cursor.pos:cursor.pos + 1] == b"\x4e":  # rec group
            cursor.pos += 1
            for _ in range(cursor.count("subtype")):
                found.append(_subtype(cursor))
        else:
            found.append(_subtype(cursor))
    return found


def _subtype(cursor: Cursor) -> tuple[bool, ...] | None:
    form = cursor.byte()
    if form in (0x4F, 0x50):  # sub final, sub: supertypes, then the composite type
        for _ in range(cursor.count("supertype")):
            cursor.leb()
        form = cursor.byte()
    if form == 0x60:  # func
        for _ in range(2):
            for _ in range(cursor.count("value type")):
                value_type(cursor)
        return None
    if form == 0x5F:  # struct
        return tuple(_field(cursor) for _ in range(cursor.count("field", 2)))
    if form == 0x5E:  # array
        return (_field(cursor),)
    raise MalformedModule(f"offset {cursor.pos - 1}: unknown composite type {form:#04x}")


def _field(cursor: Cursor) -> bool:
    first = cursor.data[cursor.pos] if cursor.pos < cursor.end else None
    if first in _PACKED:
        cursor.pos += 1
        is_ref = False
    else:
        is_ref = value_type(cursor) in _REFS
    cursor.byte()  # mutability
    return is_ref


def _functions(cursor: Cursor, module: _Module, work: list[tuple[int, float]]) -> None:
    decode_all = module.references
    # A byte of undecodable code is charged as a share of the costliest instruction.
    worst_units = max([REF_BULK, *module.fields]) // 3 + 1
    data = cursor.data
    for _ in range(cursor.count("function body", 2)):
        size = cursor.leb()
        start, end = cursor.pos, min(cursor.pos + size, cursor.end)
        # Every byte that could begin a heavy site, counted as one: an upper bound that
        # costs no decoding, exact enough below EXACT_ABOVE (its square is milliseconds).
        # A br_table's targets are not bytes of their own: with one, the size bounds.
        most = (end - start) * _SITES_PER_BYTE
        if data.find(b"\x0e", start, end) < 0:
            bound = sum(data.count(byte, start, end) * weight for byte, weight in _SITE_BYTES)
            bound -= sum(data.count(empty, start, end) for empty in _EMPTY_BLOCKS)
            most = min(most, bound)
        if decode_all or most > EXACT_ABOVE:
            work.append(_decoded(Cursor(data, start, end), module, worst_units))
        else:
            work.append((0, most))
        if cursor.pos + size > cursor.end:
            return
        cursor.pos = end


def _decoded(body: Cursor, module: _Module, worst_units: int) -> tuple[int, float]:
    found = [0, 0.0]
    try:
        for _ in range(body.count("local declaration")):
            body.leb()
            value_type(body)
        _body(body, module, found)
    except MalformedModule:
        left = body.end - body.pos
        found[0] += left * worst_units
        found[1] += left * _SITES_PER_BYTE
    return int(found[0]), found[1]


def _body(body: Cursor, module: _Module, found: list[float]) -> None:
    """Add this body's GC units and heavy sites to `found` as it goes (what was counted
    stays counted when an unknown instruction ends the walk)."""
    data, end = body.data, body.end
    weights = SITE_WEIGHTS
    carries = [True]  # per open block: whether a branch to it carries values
    for at, opcode, sub in walk(body, _PLAIN, _LEB):
        if opcode == 0x0B:  # end
            if len(carries) > 1:
                carries.pop()
            continue
        if opcode == 0x05:  # else
            continue
        if opcode in (0x02, 0x03, 0x04, 0x06, 0x1F):  # block, loop, if, try, try_table
            kind = data[at + 1] if at + 1 < end else 0x40
            valued = kind != 0x40 and (opcode != 0x03 or kind not in _VALUE_TYPES)
            carries.append(valued)  # a loop's branches carry its parameters only
            if valued and opcode != 0x03:
                found[1] += 1
        weight = weights.get((opcode, sub))
        if weight is not None:
            found[1] += weight
        elif opcode in (0x0C, 0x0D, 0xD5, 0xD6):  # br, br_if, br_on_null, br_on_non_null
            found[1] += _branch(Cursor(data, at + 1, body.pos).leb(), carries)
        elif opcode == 0x1F:  # try_table: each catch clause is a branch to its label
            clauses = Cursor(data, at + 1, body.pos)
            block_type(clauses)
            for _ in range(clauses.count("catch clause")):
                if clauses.byte() in (0x00, 0x01):  # catch, catch_ref: a tag index
                    clauses.leb()
                found[1] += _branch(clauses.leb() + 1, carries)  # from outside the try
        elif opcode == 0x0E:  # br_table
            targets = Cursor(data, at + 1, body.pos)
            for _ in range(targets.count("br_table label") + 1):
                found[1] += _branch(targets.leb(), carries)
        elif opcode in (0x23, 0x24):  # global.get, global.set
            index = Cursor(data, at + 1, body.pos).leb()
            if index < len(module.globals) and module.globals[index]:
                found[0] += REF_ACCESS
        elif opcode in (0x25, 0x26):  # table.get, table.set
            index = Cursor(data, at + 1, body.pos).leb()
            if index < len(module.tables) and module.tables[index]:
                found[0] += REF_ACCESS
        elif opcode == 0xFB:
            if sub in (24, 25):  # br_on_cast, br_on_cast_fail: flags, then the label
                found[1] += _branch(Cursor(data, at + 3, body.pos).leb(), carries)
            elif 20 <= sub <= 23:  # ref.test, ref.cast: a subtype check each
                found[1] += 1.0
            elif module.types:
                found[0] += _gc_units(Cursor(data, at + 1, body.pos), sub, module)


def _branch(label: int, carries: list[bool]) -> float:
    return BRANCH_WEIGHT if label < len(carries) and carries[-1 - label] else 0.0


def _gc_units(immediates: Cursor, sub: int, module: _Module) -> int:
    immediates.leb()  # the sub-opcode
    if not (sub in _NEW or sub in _FIELD or sub in _ELEMENT or sub == _NEW_FIXED
            or sub in _ARRAY_NEW or sub in _ARRAY_BULK):
        return 0
    index = immediates.leb()
    kind = module.types[index] if index < len(module.types) else None
    if not kind:
        return 0  # a function type or an empty struct where wasmtime wants more: invalid
    if sub in _NEW:
        return module.fields[index]
    if sub == _NEW_FIXED:
        return immediates.leb() * (REF_INIT if kind[0] else 1)
    if sub in _FIELD:
        field = immediates.leb()
        return REF_ACCESS if field < len(kind) and kind[field] else 0
    if sub in _ARRAY_NEW:
        return REF_NEW if kind[0] else 0
    if sub in _ARRAY_BULK:
        return REF_BULK if kind[0] else 0
    return REF_ACCESS if kind[0] else 0
