"""The tripwire: a deadline that costs a load, not an epoch check.

Epoch interruption compiles a compare and a call into every loop header; the call's slow
path makes everything live across the loop sit in the registers a call preserves, which
is what makes the default profile's compute 1.3x native (sieve 2.2x). A tripwire
deadline instead adds one extra memory of one page to the module and a load from it,
value dropped, at every function entry and loop header and after every call and bulk
instruction. At the deadline the host revokes access to that page (`mprotect`); the
guest's next probe faults, and wasmtime turns the fault at a load into an ordinary
out-of-bounds trap, unwinding the guest as any trap does. Nothing is live across a load,
so the loop keeps its registers.

Every backward jump in WebAssembly is a `loop`, every unbounded recursion passes a
function entry, and every frame a deep recursion left behind resumes after a call: past
the deadline a guest runs at most one stretch of straight-line code and one bulk
instruction (which epochs do not interrupt either). Host calls are not interrupted by
either mechanism; the owned ones keep their own deadline.

`instrument(wasm)` rewrites a module and names the page's export; it raises `Unsupported`
for a module it cannot serve (an opcode from a proposal it does not know, a reserved export
name), and the caller then keeps epochs for that module: a module is never run unrewritten
on an engine without epochs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..binary import (
    CODE,
    MAGIC,
    MEMORY,
    Cursor,
    MalformedModule,
    encode_leb,
    read_count,
    read_exports,
    read_imports,
    read_start,
    sections,
)
from ..binary import (
    EXPORT as EXPORT_SECTION,
)
from ..binary import (
    IMPORT as IMPORT_SECTION,
)
from ..binary import (
    START as START_SECTION,
)
from ..errors import ModuleError
from ..wasmcode import NO_IMMEDIATE, ONE_LEB, value_type, walk
from .trip import EXPORT, START, VERSION

if TYPE_CHECKING:
    from ..codework import Work
    from .guard import CompileGuard

__all__ = ["EXPORT", "START", "VERSION", "Unsupported", "instrument", "rewrite"]


# Sections that come after memory, and after export, in the binary's order (type 1,
# import 2, function 3, table 4, memory 5, tag 13, global 6, export 7, start 8, element 9,
# data count 12, code 10, data 11): a new section goes before the first of them.
_AFTER_MEMORY = frozenset({13, 6, 7, 8, 9, 12, 10, 11})
_AFTER_EXPORT = frozenset({8, 9, 12, 10, 11})
_ONE_PAGE = b"\x01\x01\x01"  # memory limits with a maximum: 1 page, at most 1


class Unsupported(ValueError):
    """The rewriting cannot serve this module (an instruction it does not know, a reserved
    export name, precompiled code, rewritten code past wasmtime's or the guard's limits):
    it compiles as given, with epochs."""


def rewrite(data: bytes, validate: Callable[[bytes], object], invalid: type[Exception],
            guard: CompileGuard | None, name: str,
            work: list[Work] | None = None) -> bytes:
    """`data`, which the caller has validated, with its tripwire (`validate` raises
    `invalid` for a module that is not valid): the rewriting adds a memory, which must
    not make valid a module whose code names one it lacks. Raises
    Unsupported also when the rewritten code is past what the engine or `guard` accept
    (a body of calls grows up to 5x): the module then compiles as given, with epochs.
    `work`: the code work of `data` (`CompileGuard.check_code`), which probes leave as
    it is."""
    rewritten = instrument(data)
    try:
        validate(rewritten)
        if guard is not None:
            guard.check_code(rewritten, name, work)
    except (invalid, ModuleError) as exc:
        raise Unsupported(f"the rewritten module is refused: {exc}") from None
    return rewritten


def instrument(wasm: bytes) -> bytes:
    """The module with a tripwire page (exported as `EXPORT`) read at every function entry
    and loop header, and its start function exported as `START`. Raises Unsupported."""
    try:
        return _instrument(wasm)
    except MalformedModule as exc:
        raise Unsupported(str(exc)) from None


def _instrument(wasm: bytes) -> bytes:
    found = list(sections(wasm))
    memories = 0
    exports = []
    for section in found:
        if section.id == IMPORT_SECTION:
            memories += sum(item.kind == "memory" for item in read_imports(wasm, section))
        elif section.id == MEMORY:
            memories += read_count(wasm, section)
        elif section.id == EXPORT_SECTION:
            reserved = {EXPORT, START} & {item.name for item in read_exports(wasm, section)}
            if reserved:
                raise Unsupported(f"the module exports the reserved name {reserved.pop()!r}")
        elif section.id == START_SECTION:
            exports.append(_export(START, 0x00, read_start(wasm, section)))
    index = memories  # the new memory comes after every imported and defined one
    exports.append(_export(EXPORT, 0x02, index))
    # i32.const 0; i32.atomic.load8_u (memory index) offset 0; drop. Atomic: a plain load
    # of an address no code stores to is redundant after the first, and Cranelift
    # removes it (a bare `(loop br 0)` then never looks at the page again).
    probe = b"\x41\x00\xfe\x12\x40" + encode_leb(index) + b"\x00\x1a"

    out = bytearray(MAGIC)

    def emit(section_id: int, contents: bytes | bytearray) -> None:
        out.append(section_id)
        out.extend(encode_leb(len(contents)))
        out.extend(contents)

    def vector(section_id: int, section_end: int, start: int, added: list[bytes]) -> None:
        """A vector section with `added` entries after its own (from `start`)."""
        cursor = Cursor(wasm, start, section_end)
        count = cursor.leb()
        emit(section_id, encode_leb(count + len(added)) + wasm[cursor.pos:section_end]
             + b"".join(added))

    placed_memory = placed_export = False
    for section in found:
        if not placed_memory and section.id in _AFTER_MEMORY:
            emit(MEMORY, b"\x01" + _ONE_PAGE)
            placed_memory = True
        if not placed_export and section.id in _AFTER_EXPORT:
            emit(EXPORT_SECTION, encode_leb(len(exports)) + b"".join(exports))
            placed_export = True
        if section.id == START_SECTION:
            continue  # exported instead (START)
        if section.id == MEMORY:
            vector(MEMORY, section.end, section.start, [_ONE_PAGE])
            placed_memory = True
        elif section.id == EXPORT_SECTION:
            vector(EXPORT_SECTION, section.end, section.start, exports)
            placed_export = True
        elif section.id == CODE:
            emit(CODE, _code(wasm, section.start, section.end, probe))
        else:
            out.extend(wasm[section.offset:section.end])
    if not placed_memory:
        emit(MEMORY, b"\x01" + _ONE_PAGE)
    if not placed_export:
        emit(EXPORT_SECTION, encode_leb(len(exports)) + b"".join(exports))
    return bytes(out)


def _export(name: str, kind: int, index: int) -> bytes:
    """One export section entry: name, kind (0 function, 2 memory), index."""
    encoded = name.encode()
    return encode_leb(len(encoded)) + encoded + bytes([kind]) + encode_leb(index)


def _code(wasm: bytes, start: int, end: int, probe: bytes) -> bytearray:
    cursor = Cursor(wasm, start, end)
    count = cursor.count("function body")
    out = bytearray(encode_leb(count))
    for _ in range(count):
        size = cursor.leb()
        body_end = cursor.pos + size
        if body_end > end:
            raise Unsupported("function body past the code section")
        body = _function(Cursor(wasm, cursor.pos, body_end), probe)
        out += encode_leb(len(body))
        out += body
        cursor.pos = body_end
    return out


# After these the probe comes again. Calls: a guest that recursed deep before its deadline
# runs every frame's rest as the calls return, passing no entry. Bulk instructions: one
# does as much work as a loop (memory.init, copy, fill; table.init, copy, grow, fill; the
# GC's array.new*, array.fill, copy, init_*), and a body may hold thousands in a row.
_CALLS = frozenset([0x10, 0x11, 0x14])
_PLAIN = NO_IMMEDIATE - {0x0B}
_LEB_NO_CALL = ONE_LEB - _CALLS
_BULK = frozenset([(0xFC, sub) for sub in (8, 10, 11, 12, 14, 15, 17)]
                  + [(0xFB, sub) for sub in (6, 7, 8, 9, 10, 16, 17, 18, 19)])


def _function(cursor: Cursor, probe: bytes) -> bytearray:
    """One function body with `probe` at its entry, after each loop's block type, and after
    each call and bulk instruction; in a body that catches exceptions, also after each
    `end` but the body's own: a frame an exception unwinds to resumes at its catch
    label's block end, not after its call."""
    start = cursor.pos
    body, catches = _probed(cursor, probe, after_ends=False)
    if catches:
        cursor.pos = start
        body, _ = _probed(cursor, probe, after_ends=True)
    return body


def _probed(cursor: Cursor, probe: bytes, after_ends: bool) -> tuple[bytearray, bool]:
    """The body with its probes, and whether it holds a `try_table`."""
    catches = False
    wasm, start, end = cursor.data, cursor.pos, cursor.end
    for _ in range(cursor.count("local declaration")):  # count and type of each
        cursor.leb()
        value_type(cursor)
    out = bytearray(wasm[start:cursor.pos])
    out += probe
    copied = cursor.pos
    calls, bulk = _CALLS, _BULK
    # Most instructions are stepped past by `walk`: no probe goes after them.
    for _, opcode, sub in walk(cursor, _PLAIN, _LEB_NO_CALL):
        if opcode == 0x0B:  # end
            if not (after_ends and cursor.pos < end):
                continue
        elif opcode == 0x1F:  # try_table
            catches = True
            continue
        elif not (opcode == 0x03 or opcode in calls or (opcode, sub) in bulk):
            continue
        # The probe is stack-neutral: valid after any instruction (after a loop's block
        # type, it runs at every iteration).
        out += wasm[copied:cursor.pos]
        out += probe
        copied = cursor.pos
    out += wasm[copied:end]
    return out, catches
