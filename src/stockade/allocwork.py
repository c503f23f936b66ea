"""GC work: what a module's body bytes do not show of what compiling it costs.

With the GC proposal a few bytes of code can stand for much compiled code:
`struct.new_default $t` (3 bytes) initialises every field of `$t`, and a struct type may
have 10,000 fields; every read or write of a reference-typed field or element compiles to
an inline barrier (wasmtime's collector counts references). Measured on a 2-core x86-64
machine (wasmtime 50, Cranelift, the default profile's configuration), per instruction:
a numeric field initialised ~6-8 µs of compile CPU and ~1 KB of host memory, a
reference field initialised ~30-45 µs and ~10 KB, a reference `struct.get`/`set` or
`array.get`/`set` 110-220 µs and ~26 KB, each growing slowly with the function's size.
100 `struct.new_default` of a 10,000-field struct (a 20 KB module) compiled for 8-16 s.

`gc_work` weighs each function's GC instructions in units of one numeric field
initialised (`REF_INIT`, `REF_ACCESS` units for the others); `compilecost` turns units
into predicted CPU and memory. A module without struct or array types does no GC work:
its scan stops at the type section. A function this reader cannot decode to its end (an
instruction it does not know) is charged as if the rest of its body were the costliest
GC code, so hiding a bomb behind an unknown instruction saves nothing.
"""

from __future__ import annotations

from .binary import CODE, TYPE, Cursor, MalformedModule, sections
from .wasmcode import step, value_type

__all__ = ["gc_work", "REF_INIT", "REF_ACCESS"]

REF_INIT = 6  # units for a reference field or element initialised
REF_ACCESS = 25  # units for a reference field or element read or written

_REFS = frozenset([0x63, 0x64, *range(0x69, 0x75)])  # (ref ...) and the shorthands
_PACKED = (0x77, 0x78)  # i16, i8
_NEW = (0x00, 0x01)  # struct.new, struct.new_default
_FIELD = (0x02, 0x03, 0x04, 0x05)  # struct.get, get_s, get_u, set
_ELEMENT = (0x0B, 0x0C, 0x0D, 0x0E)  # array.get, get_s, get_u, set
_NEW_FIXED = 0x08


def gc_work(data: bytes) -> list[int]:
    """Units of GC work of each defined function, in code-section order; [] when the
    module declares no struct or array type (lenient: a malformed module yields what
    could be read; validity is wasmtime's verdict)."""
    types: list[tuple[bool, ...] | None] = []
    work: list[int] = []
    try:
        for section in sections(data, strict=False):
            if section.id == TYPE:
                types = _types(Cursor(data, section.start, section.end))
                if not any(kind is not None for kind in types):
                    return []
            elif section.id == CODE and types:
                _functions(Cursor(data, section.start, section.end), types, work)
                break
    except MalformedModule:
        pass
    return work


def _types(cursor: Cursor) -> list[tuple[bool, ...] | None]:
    """For each type index: whether each field (a struct's) or the element (an array's)
    holds a reference; None for a function type."""
    found: list[tuple[bool, ...] | None] = []
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


def _functions(cursor: Cursor, types: list[tuple[bool, ...] | None], work: list[int]
               ) -> None:
    fields = [sum(REF_INIT if ref else 1 for ref in kind) if kind is not None else 0
              for kind in types]
    # A byte of undecodable code is charged as a third of the costliest 3-byte instruction.
    worst = max(REF_ACCESS, *fields) // 3 + 1
    for _ in range(cursor.count("function body", 2)):
        size = cursor.leb()
        end = cursor.pos + size
        body = Cursor(cursor.data, cursor.pos, min(end, cursor.end))
        units = 0
        try:
            for _ in range(body.count("local declaration")):
                body.leb()
                value_type(body)
            units = _body(body, types, fields)
        except MalformedModule:
            units += (body.end - body.pos) * worst
        work.append(units)
        if end > cursor.end:
            return
        cursor.pos = end


def _body(body: Cursor, types: list[tuple[bool, ...] | None], fields: list[int]) -> int:
    units = 0
    data = body.data
    while body.pos < body.end:
        at = body.pos
        opcode, sub = step(body)
        if opcode != 0xFB:
            continue
        immediates = Cursor(data, at + 1, body.pos)
        immediates.leb()  # the sub-opcode
        if sub in _NEW or sub in _FIELD or sub in _ELEMENT or sub == _NEW_FIXED:
            index = immediates.leb()
            kind = types[index] if index < len(types) else None
            if kind is None:
                continue  # not a struct or array: wasmtime refuses the module
            if sub in _NEW:
                units += fields[index]
            elif sub == _NEW_FIXED:
                units += immediates.leb() * (REF_INIT if kind[0] else 1)
            elif sub in _FIELD:
                field = immediates.leb()
                units += REF_ACCESS if field < len(kind) and kind[field] else 0
            elif kind[0]:
                units += REF_ACCESS
    return units
