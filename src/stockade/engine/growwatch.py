"""Refused `memory.grow`s, made known to the verdict: the rewriting (`engine.grow` is
what a run reads of it).

wasmtime's store limiter refuses a `memory.grow` past the memory limit by returning -1
to the guest, and tells the host nothing: the `ResourceLimiter` callbacks that would are
not in the C API, which wasmtime-py and the fast path both use (`wasmtime_store_limiter`
takes numbers only). A guest that then fails (malloc returned NULL: exit 1; Rust's
allocation-failure abort: a trap) was judged on its own account unless its memory was
already near the limit (`traps.memory_verdict`), so one allocation far past what was
left read as the guest's own failure.

So every `memory.grow` is rewritten, before compiling, into a call of a small function
added to the module (one per memory grown, `_grower`), which grows and, when the grow
returns -1, keeps in an added global the largest size in pages a refused grow asked
for. The global is exported as `grow.EXPORT`; after a run the host reads it
(`grow.refused_bytes`) and the verdict compares it with the limit: a size past the
limit was the limiter's refusal (its check comes before the memory's own maximum), a
smaller one the module's own maximum or the host's mapping. Nothing the module had
moves: the type, functions and global are added after every existing one.

`watch(wasm)` returns the module as given when there is nothing to watch (no
`memory.grow`) or it cannot (an instruction the decoder does not know, a custom page
size): such a module runs as before, judged by the margin. A module exporting the reserved
name itself (`exports_reserved`) is refused by compiling, before it is watched.
Every engine configuration compiles watched modules (part of the AoT cache key), so
fuel counts stay the same on every backend.
"""

from __future__ import annotations

from ..binary import (
    CODE,
    CUSTOM,
    FUNCTION,
    GLOBAL,
    IMPORT,
    MAGIC,
    MEMORY,
    PAGE,
    TYPE,
    Cursor,
    Limits,
    MalformedModule,
    Section,
    encode_leb,
    read_count,
    read_exports,
    read_imports,
    read_limits_section,
    sections,
)
from ..binary import (
    EXPORT as EXPORT_SECTION,
)
from ..wasmcode import NO_IMMEDIATE, ONE_LEB, value_type, walk
from .grow import EXPORT

__all__ = ["watch"]

# Sections in the binary's order (type 1, import 2, function 3, table 4, memory 5, tag 13,
# global 6, export 7, start 8, element 9, data count 12, code 10, data 11).
_ORDER = (TYPE, IMPORT, FUNCTION, 4, MEMORY, 13, GLOBAL, EXPORT_SECTION, 8, 9, 12, CODE, 11)
_RANK = {section: rank for rank, section in enumerate(_ORDER)}
_GROW = 0x40
_STEPPED = ONE_LEB - {_GROW}  # `walk` yields every memory.grow
# A size past any limit (2**40 pages, 64 PiB): what a refused grow of a 64-bit memory
# asking for more is kept as, so the sum cannot wrap.
_HUGE = 1 << 40


def watch(wasm: bytes) -> bytes:
    """`wasm` (valid: the caller validated it) with its `memory.grow`s watched, or as
    given when it has none or cannot be rewritten (see the module docstring)."""
    try:
        return _watch(wasm)
    except (MalformedModule, _Unwatchable):
        return wasm


class _Unwatchable(Exception):
    pass


def exports_reserved(wasm: bytes) -> bool:
    """Whether valid module `wasm` exports `grow.EXPORT` itself: the host would read that
    export as the watch's, a verdict the guest forged (`memory_limit` for any failure)."""
    try:
        return any(section.id == EXPORT_SECTION and any(
            item.name == EXPORT for item in read_exports(wasm, section))
            for section in sections(wasm))
    except MalformedModule:
        return False  # not valid: wasmtime's validation says so first


def _watch(wasm: bytes) -> bytes:
    found = list(sections(wasm))
    by_id = {section.id: section for section in found if section.id}
    code = by_id.get(CODE)
    if code is None:
        return wasm
    memories: list[bool] = []  # 64-bit, per memory index
    functions = globals_ = 0
    for item in read_imports(wasm, by_id[IMPORT]) if IMPORT in by_id else []:
        if item.kind == "memory" and item.limits is not None:
            memories.append(_index_64(item.limits))
        functions += item.kind == "func"
        globals_ += item.kind == "global"
    if MEMORY in by_id:
        memories += [_index_64(limits) for limits in read_limits_section(wasm, by_id[MEMORY])]
    if exports_reserved(wasm):  # compiling refuses it first (`compiler.checked_code`)
        raise _Unwatchable
    defined = read_count(wasm, by_id[FUNCTION]) if FUNCTION in by_id else 0
    globals_ += read_count(wasm, by_id[GLOBAL]) if GLOBAL in by_id else 0
    types = _type_count(wasm, by_id[TYPE]) if TYPE in by_id else 0

    first = functions + defined  # the growers' function indices start here
    bodies, grown = _code(wasm, code.start, code.end, first)
    if not grown:
        return wasm
    # One grower per memory grown, in the order the code first grows them; a type per
    # index width used.
    widths = sorted({memories[index] for index in grown})
    type_of = {wide: types + at for at, wide in enumerate(widths)}
    added = {
        TYPE: [_functype(wide) for wide in widths],
        FUNCTION: [encode_leb(type_of[memories[index]]) for index in grown],
        GLOBAL: [b"\x7e\x01\x42\x00\x0b"],  # (mut i64) (i64.const 0)
        EXPORT_SECTION: [_export(EXPORT, 0x03, globals_)],
        CODE: [_sized(_grower(index, memories[index], globals_)) for index in grown],
    }
    return _assemble(wasm, found, added, bodies)


def _assemble(wasm: bytes, found: list[Section], added: dict[int, list[bytes]],
              bodies: bytes) -> bytes:
    """The module with `added` entries after each section's own (a section it lacks
    made, in its place in the order) and the code section's bodies `bodies`."""
    out = bytearray(MAGIC)

    def emit(section_id: int, count: int, payload: bytes) -> None:
        contents = encode_leb(count) + payload
        out.append(section_id)
        out.extend(encode_leb(len(contents)))
        out.extend(contents)

    def missing_before(rank: int) -> None:
        for section_id in sorted(added, key=_RANK.__getitem__):
            if _RANK[section_id] < rank:
                entries = added.pop(section_id)
                emit(section_id, len(entries), b"".join(entries))

    for section in found:
        if section.id == CUSTOM:
            out += wasm[section.offset:section.end]
            continue
        missing_before(_RANK[section.id])
        entries = added.pop(section.id, None)
        if entries is None:
            out += wasm[section.offset:section.end]
            continue
        cursor = Cursor(wasm, section.start, section.end)
        count = cursor.leb()
        own = bodies if section.id == CODE else wasm[cursor.pos:section.end]
        emit(section.id, count + len(entries), own + b"".join(entries))
    missing_before(len(_ORDER))
    return bytes(out)


def _index_64(limits: Limits) -> bool:
    """Whether a memory's index is 64-bit. Raises _Unwatchable for pages of another size
    (custom page sizes) than the pages a refused size is counted in."""
    if limits.page_size != PAGE:
        raise _Unwatchable
    return limits.is64


def _type_count(wasm: bytes, section: Section) -> int:
    """Type indices the type section defines (a rec group holds several)."""
    cursor = Cursor(wasm, section.start, section.end)
    total = 0
    for _ in range(cursor.count("type")):
        if cursor.data[cursor.pos:cursor.pos + 1] == b"\x4e":
            cursor.pos += 1
            members = cursor.count("subtype")
            for _ in range(members):
                _subtype(cursor)
            total += members
        else:
            _subtype(cursor)
            total += 1
    return total


def _subtype(cursor: Cursor) -> None:
    form = cursor.byte()
    if form in (0x4F, 0x50):  # sub (final): supertypes, then the composite type
        for _ in range(cursor.count("supertype")):
            cursor.leb()
        form = cursor.byte()
    if form == 0x60:  # func: parameters, results
        for _ in range(2):
            for _ in range(cursor.count("value type")):
                value_type(cursor)
    elif form == 0x5F:  # struct: fields
        for _ in range(cursor.count("field")):
            _field(cursor)
    elif form == 0x5E:  # array: one field
        _field(cursor)
    else:
        raise MalformedModule(f"offset {cursor.pos - 1}: unknown composite type {form:#04x}")


def _field(cursor: Cursor) -> None:
    if cursor.pos < cursor.end and cursor.data[cursor.pos] in (0x77, 0x78):  # i16, i8
        cursor.pos += 1
    else:
        value_type(cursor)
    cursor.byte()  # mutability


def _code(wasm: bytes, start: int, end: int, first: int) -> tuple[bytes, list[int]]:
    """Every body, each `memory.grow` a call of its memory's grower (function `first`
    for the first memory grown, then one more per memory); and the memories grown."""
    cursor = Cursor(wasm, start, end)
    out = bytearray()
    grown: dict[int, bytes] = {}  # memory index -> the call of its grower
    for _ in range(cursor.count("function body")):
        size = cursor.leb()
        begin = cursor.pos
        body = Cursor(wasm, begin, begin + size)
        cursor.skip(size)
        for _ in range(body.count("local declaration")):
            body.leb()
            value_type(body)
        rewritten = bytearray(wasm[begin:body.pos])
        copied = body.pos
        for at, opcode, _ in walk(body, NO_IMMEDIATE, _STEPPED):
            if opcode == _GROW:
                memory = Cursor(wasm, at + 1, body.pos).leb()
                call = grown.get(memory)
                if call is None:
                    call = grown[memory] = b"\x10" + encode_leb(first + len(grown))
                rewritten += wasm[copied:at]
                rewritten += call
                copied = body.pos
        rewritten += wasm[copied:body.end]
        out += encode_leb(len(rewritten))
        out += rewritten
    return bytes(out), list(grown)


def _functype(wide: bool) -> bytes:
    """(func (param i32) (result i32)), or i64 for a 64-bit memory."""
    kind = b"\x7e" if wide else b"\x7f"
    return b"\x60\x01" + kind + b"\x01" + kind


def _grower(memory: int, wide: bool, refused: int) -> bytes:
    """The body of memory `memory`'s grower: the grow, and on -1 the size it asked for
    (pages: the current size plus the delta) kept in global `refused` when larger."""
    index, at = encode_leb(memory), encode_leb(refused)
    keep = (b"\x22\x02"  # local.tee $asked
            + b"\x23" + at + b"\x56"  # global.get $refused; i64.gt_u
            + b"\x04\x40\x20\x02\x24" + at + b"\x0b")  # if: $refused = $asked
    if wide:
        huge = b"\x42" + _sleb(_HUGE)
        return (b"\x01\x02\x7e"  # locals: $got, $asked (i64)
                + b"\x20\x00\x40" + index + b"\x22\x01"  # $got = memory.grow($delta)
                + b"\x42\x7f\x51\x04\x40"  # if $got == -1
                + b"\x3f" + index  # memory.size
                + b"\x20\x00" + huge + b"\x20\x00" + huge + b"\x54\x1b"  # min($delta, huge)
                + b"\x7c" + keep + b"\x0b"  # add; keep; end
                + b"\x20\x01\x0b")  # $got
    return (b"\x02\x01\x7f\x01\x7e"  # locals: $got (i32), $asked (i64)
            + b"\x20\x00\x40" + index + b"\x22\x01"  # $got = memory.grow($delta)
            + b"\x41\x7f\x46\x04\x40"  # if $got == -1
            + b"\x3f" + index + b"\xad"  # memory.size, as i64
            + b"\x20\x00\xad\x7c" + keep + b"\x0b"  # + $delta as i64; keep; end
            + b"\x20\x01\x0b")  # $got


def _sleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _sized(body: bytes) -> bytes:
    """A function body as the code section holds it: its size first."""
    return encode_leb(len(body)) + body


def _export(name: str, kind: int, index: int) -> bytes:
    encoded = name.encode()
    return encode_leb(len(encoded)) + encoded + bytes([kind]) + encode_leb(index)
