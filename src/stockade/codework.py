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
  and `if`s with results (30,000 in one body: 8-15 s), `call_indirect` (30,000: 10 s) and
  the table instructions, weighted by what they cost beside a `call_indirect`
  (`SITE_WEIGHTS`: 10,000 `table.copy`s, 110 KB, compiled for 25 s; 30,000 `table.fill`s
  for 82 s).

`code_work` gives each function's (GC units, heavy sites); `compilecost` turns them into
predicted CPU and memory. Decoding every instruction of CPython for WASI takes over a
second of Python, so a body is decoded only in a module with GC types or when the bytes
that may begin a heavy site are more than `EXACT_ABOVE`; otherwise that count (an upper
bound) stands for its heavy sites. A function this reader cannot decode to its end (an
instruction it does not know) is charged as if the rest of its body were the costliest
code, so hiding a bomb behind an unknown instruction saves nothing.
"""

from __future__ import annotations

from .binary import CODE, TYPE, Cursor, MalformedModule, sections
from .wasmcode import NO_IMMEDIATE, ONE_LEB, step, value_type

__all__ = ["code_work", "REF_INIT", "REF_ACCESS", "SITE_WEIGHTS", "EXACT_ABOVE"]

REF_INIT = 6  # GC units for a reference field or element initialised
REF_ACCESS = 25  # GC units for a reference field or element read or written
# Heavy sites per instruction: call_indirect and return_call_indirect, table.grow,
# table.init, table.fill, table.copy (0xFC sub-opcodes 15, 12, 17, 14).
SITE_WEIGHTS = {(0x11, -1): 1.0, (0x13, -1): 1.0, (0xFC, 15): 1.0, (0xFC, 12): 1.9,
                (0xFC, 17): 2.2, (0xFC, 14): 3.8}

_REFS = frozenset([0x63, 0x64, *range(0x69, 0x75)])  # (ref ...) and the shorthands
_PACKED = (0x77, 0x78)  # i16, i8
_NEW = (0x00, 0x01)  # struct.new, struct.new_default
_FIELD = (0x02, 0x03, 0x04, 0x05)  # struct.get, get_s, get_u, set
_ELEMENT = (0x0B, 0x0C, 0x0D, 0x0E)  # array.get, get_s, get_u, set
_NEW_FIXED = 0x08
_WITH_RESULTS = (0x02, 0x03, 0x04)  # block, loop, if: heavy when their type is not empty
_EMPTY = 0x40
_PLAIN = NO_IMMEDIATE - {0x0B}
EXACT_ABOVE = 64  # heavy sites (an upper bound) past which a body is decoded
# Bytes that may begin a heavy site, each with the most it may weigh.
_SITE_BYTES = ((b"\x02", 1.0), (b"\x03", 1.0), (b"\x04", 1.0), (b"\x11", 1.0),
               (b"\x13", 1.0), (b"\xfc", max(SITE_WEIGHTS.values())))
# A block, loop or if of empty type is no heavy site: each such pair found is one fewer.
_EMPTY_BLOCKS = (b"\x02\x40", b"\x03\x40", b"\x04\x40")
_LEB = ONE_LEB

Types = list[tuple[bool, ...] | None]


def code_work(data: bytes) -> list[tuple[int, float]]:
    """(GC units, heavy sites) of each defined function, in code-section order (lenient:
    a malformed module yields what could be read; validity is wasmtime's verdict)."""
    types: Types = []
    work: list[tuple[int, float]] = []
    try:
        for section in sections(data, strict=False):
            if section.id == TYPE:
                types = _types(Cursor(data, section.start, section.end))
            elif section.id == CODE:
                _functions(Cursor(data, section.start, section.end), types, work)
                break
    except MalformedModule:
        pass
    return work


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


def _functions(cursor: Cursor, types: Types, work: list[tuple[int, float]]) -> None:
    fields = [sum(REF_INIT if ref else 1 for ref in kind) if kind is not None else 0
              for kind in types]
    gc = any(kind is not None for kind in types)
    # A byte of undecodable code is charged as a share of the costliest instruction.
    worst_units = max(REF_ACCESS, *fields) // 3 + 1
    worst_sites = max(SITE_WEIGHTS.values()) / 2
    data = cursor.data
    for _ in range(cursor.count("function body", 2)):
        size = cursor.leb()
        end = min(cursor.pos + size, cursor.end)
        # Every byte that could begin a heavy site, counted as one: an upper bound that
        # costs no decoding, exact enough below EXACT_ABOVE (its square is milliseconds).
        bound = sum(data.count(byte, cursor.pos, end) * weight
                    for byte, weight in _SITE_BYTES)
        bound -= sum(data.count(empty, cursor.pos, end) for empty in _EMPTY_BLOCKS)
        if gc or bound > EXACT_ABOVE:
            work.append(_decoded(Cursor(data, cursor.pos, end), types, fields,
                                 worst_units, worst_sites))
        else:
            work.append((0, bound))
        if cursor.pos + size > cursor.end:
            return
        cursor.pos = end


def _decoded(body: Cursor, types: Types, fields: list[int], worst_units: int,
             worst_sites: float) -> tuple[int, float]:
    found = [0, 0.0]
    try:
        for _ in range(body.count("local declaration")):
            body.leb()
            value_type(body)
        _body(body, types, fields, found)
    except MalformedModule:
        left = body.end - body.pos
        found[0] += left * worst_units
        found[1] += left * worst_sites
    return int(found[0]), found[1]


def _body(body: Cursor, types: Types, fields: list[int], found: list[float]) -> None:
    """Add this body's GC units and heavy sites to `found` as it goes (what was counted
    stays counted when an unknown instruction ends the walk)."""
    data, end = body.data, body.end
    plain, leb, weights = _PLAIN, _LEB, SITE_WEIGHTS
    while body.pos < end:
        at = body.pos
        opcode = data[at]
        if opcode in plain:
            body.pos += 1
            continue
        if opcode in leb:
            body.pos += 1
            body.leb(64)
            continue
        if opcode in _WITH_RESULTS and at + 1 < end and data[at + 1] != _EMPTY:
            found[1] += 1
        opcode, sub = step(body)
        weight = weights.get((opcode, sub))
        if weight is not None:
            found[1] += weight
        elif opcode == 0xFB and types:
            found[0] += _gc_units(Cursor(data, at + 1, body.pos), sub, types, fields)


def _gc_units(immediates: Cursor, sub: int, types: Types, fields: list[int]) -> int:
    immediates.leb()  # the sub-opcode
    if not (sub in _NEW or sub in _FIELD or sub in _ELEMENT or sub == _NEW_FIXED):
        return 0
    index = immediates.leb()
    kind = types[index] if index < len(types) else None
    if kind is None:
        return 0  # not a struct or array: wasmtime refuses the module
    if sub in _NEW:
        return fields[index]
    if sub == _NEW_FIXED:
        return immediates.leb() * (REF_INIT if kind[0] else 1)
    if sub in _FIELD:
        field = immediates.leb()
        return REF_ACCESS if field < len(kind) and kind[field] else 0
    return REF_ACCESS if kind[0] else 0
