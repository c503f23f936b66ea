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

import ctypes
import mmap
import os
import threading

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

__all__ = ["EXPORT", "START", "VERSION", "Tripwire", "Unsupported", "instrument"]

EXPORT = "__stockade_tripwire"  # the page's export: the host looks its address up by it
# The module's start function, exported instead of run by instantiation: it runs once
# the tripwire is armed, so a start function that loops is stopped like any code.
START = "__stockade_start"
VERSION = 4  # of the rewriting (part of the AoT cache key)

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


_PROT_NONE, _PROT_READ_WRITE = 0, 3
_mprotect = None


def _protect(address: int, protection: int) -> None:
    global _mprotect
    if _mprotect is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        libc.mprotect.restype = ctypes.c_int
        _mprotect = libc.mprotect
    if _mprotect(address, mmap.PAGESIZE, protection) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mprotect of the tripwire page: {os.strerror(errno)}")


class Tripwire:
    """One run's tripwire. `fire()` (from the ticker's thread at the deadline, or from a
    cancellation) revokes the page as soon as the run has `arm`ed it with the page's
    address; `disarm()` (on the run's thread, before its store is dropped) gives the page
    back. One lock orders the three, so a page is never revoked after it was given back
    (the memory may then belong to another run). `fired` tells the run's verdict that a
    trap after it was the deadline's."""

    __slots__ = ("_lock", "_address", "_revoked", "fired")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._address = 0
        self._revoked = False
        self.fired = False

    def fire(self) -> None:
        """Trip the guest: its next loop iteration or call traps."""
        with self._lock:
            self.fired = True
            if self._address and not self._revoked:
                self._revoke()

    def arm(self, address: int) -> None:
        """The run's page is at `address` (its instance exists): a deadline already past
        trips it now, before the guest's first instruction."""
        with self._lock:
            self._address = address
            if self.fired and not self._revoked:
                self._revoke()

    def disarm(self) -> None:
        """The run is over: restore the page if it was revoked, and forget it."""
        with self._lock:
            if self._revoked:
                _protect(self._address, _PROT_READ_WRITE)
                self._revoked = False
            self._address = 0

    def _revoke(self) -> None:
        try:
            _protect(self._address, _PROT_NONE)
        except OSError:
            # A guest this host can no longer stop: end the process rather than let it
            # run past every limit (mprotect of a page this process mapped cannot fail
            # short of the kernel refusing memory for the split mapping).
            import logging

            logging.getLogger(__name__).critical("cannot stop a guest at its deadline: "
                                                 "the tripwire page cannot be revoked")
            os.abort()
        self._revoked = True


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


def _heap_type(cursor: Cursor) -> None:
    cursor.leb(33)  # an abstract heap type (one byte) or a type index


def _value_type(cursor: Cursor) -> None:
    if cursor.byte() in (0x63, 0x64):  # (ref null ht), (ref ht)
        _heap_type(cursor)


def _block_type(cursor: Cursor) -> None:
    if cursor.pos < cursor.end and cursor.data[cursor.pos] in (0x63, 0x64):
        cursor.pos += 1
        _heap_type(cursor)
    else:
        cursor.leb(33)  # 0x40, a one-byte value type, or a type index (s33)


def _memarg(cursor: Cursor) -> None:
    if cursor.leb() & 0x40:  # multi-memory: a memory index follows the alignment
        cursor.leb()
    cursor.leb(64)


def _skip_fc(cursor: Cursor) -> int:
    sub = cursor.leb()
    if sub <= 7:  # saturating truncations
        return sub
    if sub in (8, 10, 12, 14):  # memory.init, memory.copy, table.init, table.copy
        cursor.leb()
        cursor.leb()
    elif sub in (9, 11, 13, 15, 16, 17):  # data.drop, memory.fill, elem.drop, table.*
        cursor.leb()
    else:
        raise Unsupported(f"unknown instruction 0xfc {sub}")
    return sub


def _skip_fd(cursor: Cursor) -> int:
    sub = cursor.leb()
    if sub <= 11 or sub in (92, 93):  # v128 loads and stores
        _memarg(cursor)
    elif sub in (12, 13):  # v128.const, i8x16.shuffle
        cursor.skip(16)
    elif 21 <= sub <= 34:  # extract_lane, replace_lane
        cursor.skip(1)
    elif 84 <= sub <= 91:  # load_lane, store_lane
        _memarg(cursor)
        cursor.skip(1)
    elif sub > 0x113:  # past relaxed SIMD
        raise Unsupported(f"unknown instruction 0xfd {sub}")
    return sub


def _skip_fe(cursor: Cursor) -> int:
    sub = cursor.leb()
    if sub == 3:  # atomic.fence
        cursor.skip(1)
    elif sub <= 2 or 0x10 <= sub <= 0x4E:
        _memarg(cursor)
    else:
        raise Unsupported(f"unknown instruction 0xfe {sub}")
    return sub


def _skip_fb(cursor: Cursor) -> int:
    sub = cursor.leb()
    if sub in (0, 1, 6, 7, 11, 12, 13, 14, 16):  # one type index
        cursor.leb()
    elif sub in (2, 3, 4, 5, 8, 9, 10, 17, 18, 19):  # type index and a second index
        cursor.leb()
        cursor.leb()
    elif sub in (15, 26, 27, 28, 29, 30):  # array.len, conversions, i31
        pass
    elif 20 <= sub <= 23:  # ref.test, ref.cast (null)
        _heap_type(cursor)
    elif sub in (24, 25):  # br_on_cast(_fail): flags, label, two heap types
        cursor.skip(1)
        cursor.leb()
        _heap_type(cursor)
        _heap_type(cursor)
    else:
        raise Unsupported(f"unknown instruction 0xfb {sub}")
    return sub


# Opcodes with nothing after them, and those with one LEB128 immediate (at most 64 bits).
_BARE = frozenset([0x00, 0x01, 0x05, 0x0A, 0x0B, 0x0F, 0x19, 0x1A, 0x1B, 0xD1, 0xD3, 0xD4,
                   *range(0x45, 0xC5)])
_ONE_LEB = frozenset([0x07, 0x08, 0x09, 0x0C, 0x0D, 0x10, 0x12, 0x14, 0x15, 0x18,
                      0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x3F, 0x40, 0x41, 0x42,
                      0xD2, 0xD5, 0xD6])
_PREFIXED = {0xFC: _skip_fc, 0xFD: _skip_fd, 0xFE: _skip_fe, 0xFB: _skip_fb}
# After these the probe comes again. Calls: a guest that recursed deep before its deadline
# runs every frame's rest as the calls return, passing no entry. Bulk instructions: one
# does as much work as a loop (memory.init, copy, fill; table.init, copy, grow, fill; the
# GC's array.new*, array.fill, copy, init_*), and a body may hold thousands in a row.
_CALLS = frozenset([0x10, 0x11, 0x14])
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
        _value_type(cursor)
    out = bytearray(wasm[start:cursor.pos])
    out += probe
    copied = cursor.pos
    bare, one_leb, prefixed, calls, bulk = _BARE, _ONE_LEB, _PREFIXED, _CALLS, _BULK
    while cursor.pos < end:
        opcode = wasm[cursor.pos]
        cursor.pos += 1
        if opcode in bare:
            if not (after_ends and opcode == 0x0B and cursor.pos < end):
                continue
            again = True
        elif opcode in one_leb:
            cursor.leb(64)
            again = opcode in calls
        elif opcode == 0x03:  # loop: the probe goes after its block type
            _block_type(cursor)
            again = True
        elif opcode in (0x02, 0x04, 0x06):  # block, if, try
            _block_type(cursor)
            continue
        elif 0x28 <= opcode <= 0x3E:
            _memarg(cursor)
            continue
        elif opcode == 0x0E:  # br_table
            for _ in range(cursor.count("br_table label") + 1):
                cursor.leb()
            continue
        elif opcode in (0x11, 0x13):  # call_indirect, return_call_indirect
            cursor.leb()
            cursor.leb()
            again = opcode in calls
        elif opcode == 0x1C:  # select with types
            for _ in range(cursor.count("select type")):
                _value_type(cursor)
            continue
        elif opcode == 0x43:
            cursor.skip(4)
            continue
        elif opcode == 0x44:
            cursor.skip(8)
            continue
        elif opcode == 0xD0:  # ref.null
            _heap_type(cursor)
            continue
        elif opcode == 0x1F:  # try_table: block type, catch clauses
            catches = True
            _block_type(cursor)
            for _ in range(cursor.count("catch clause")):
                if cursor.byte() in (0x00, 0x01):  # catch, catch_ref: a tag index
                    cursor.leb()
                cursor.leb()
            continue
        elif opcode in prefixed:
            again = (opcode, prefixed[opcode](cursor)) in bulk
        else:
            raise Unsupported(f"unknown instruction 0x{opcode:02x}")
        if again:  # the probe is stack-neutral: valid after any instruction
            out += wasm[copied:cursor.pos]
            out += probe
            copied = cursor.pos
    out += wasm[copied:end]
    return out, catches
