"""Instructions, decoded boundedly: one decoder for every reader of function bodies.

`step` moves a `Cursor` past one instruction and its immediates and says which it was;
the tripwire's rewriting (`engine.tripwire`) and the compile guard's count of GC work
(`codework`) both walk code with it. An opcode this decoder does not know raises
MalformedModule: a reader cannot know where the next instruction starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .binary import Cursor, MalformedModule

__all__ = ["step", "walk", "value_type", "block_type", "heap_type", "NONE", "NO_IMMEDIATE",
           "ONE_LEB", "NO_EFFECTS"]

NONE = -1  # the `sub` of an instruction without a prefix


def heap_type(cursor: Cursor) -> int:
    """An abstract heap type (one byte, negative as s33) or a type index."""
    return cursor.leb(33)


def value_type(cursor: Cursor) -> int:
    """A value type's first byte; (ref null ht) and (ref ht) carry a heap type after it."""
    first = cursor.byte()
    if first in (0x63, 0x64):
        heap_type(cursor)
    return first


def block_type(cursor: Cursor) -> None:
    if cursor.pos < cursor.end and cursor.data[cursor.pos] in (0x63, 0x64):
        cursor.pos += 1
        heap_type(cursor)
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
        raise MalformedModule(f"unknown instruction 0xfc {sub}")
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
        raise MalformedModule(f"unknown instruction 0xfd {sub}")
    return sub


def _skip_fe(cursor: Cursor) -> int:
    sub = cursor.leb()
    if sub == 3:  # atomic.fence
        cursor.skip(1)
    elif sub <= 2 or 0x10 <= sub <= 0x4E:
        _memarg(cursor)
    else:
        raise MalformedModule(f"unknown instruction 0xfe {sub}")
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
        heap_type(cursor)
    elif sub in (24, 25):  # br_on_cast(_fail): flags, label, two heap types
        cursor.skip(1)
        cursor.leb()
        heap_type(cursor)
        heap_type(cursor)
    else:
        raise MalformedModule(f"unknown instruction 0xfb {sub}")
    return sub


# Opcodes with nothing after them, and those with one LEB128 immediate (at most 64 bits).
_BARE = frozenset([0x00, 0x01, 0x05, 0x0A, 0x0B, 0x0F, 0x19, 0x1A, 0x1B, 0xD1, 0xD3, 0xD4,
                   *range(0x45, 0xC5)])
_ONE_LEB = frozenset([0x07, 0x08, 0x09, 0x0C, 0x0D, 0x10, 0x12, 0x14, 0x15, 0x18,
                      0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x3F, 0x40, 0x41, 0x42,
                      0xD2, 0xD5, 0xD6])
_PREFIXED = {0xFC: _skip_fc, 0xFD: _skip_fd, 0xFE: _skip_fe, 0xFB: _skip_fb}
# What `walk` may step past itself: one byte; one byte and a LEB128.
NO_IMMEDIATE, ONE_LEB = _BARE, _ONE_LEB
NO_EFFECTS = (0,) * 256  # `walk`'s stack effects when the height is of no interest


def step(cursor: Cursor) -> tuple[int, int]:
    """Move past one instruction: its (opcode, sub-opcode or NONE). The immediates of a
    prefixed instruction follow its sub-opcode: a caller wanting them reads them from
    where it was before the step."""
    data = cursor.data
    opcode = data[cursor.pos] if cursor.pos < cursor.end else cursor.byte()
    cursor.pos += 1
    if opcode in _BARE:
        return opcode, NONE
    if opcode in _ONE_LEB:
        cursor.leb(64)
    elif opcode in (0x02, 0x03, 0x04, 0x06):  # block, loop, if, try
        block_type(cursor)
    elif 0x28 <= opcode <= 0x3E:
        _memarg(cursor)
    elif opcode == 0x0E:  # br_table
        for _ in range(cursor.count("br_table label") + 1):
            cursor.leb()
    elif opcode in (0x11, 0x13):  # call_indirect, return_call_indirect
        cursor.leb()
        cursor.leb()
    elif opcode == 0x1C:  # select with types
        for _ in range(cursor.count("select type")):
            value_type(cursor)
    elif opcode == 0x43:
        cursor.skip(4)
    elif opcode == 0x44:
        cursor.skip(8)
    elif opcode == 0xD0:  # ref.null
        heap_type(cursor)
    elif opcode == 0x1F:  # try_table: block type, catch clauses
        block_type(cursor)
        for _ in range(cursor.count("catch clause")):
            if cursor.byte() in (0x00, 0x01):  # catch, catch_ref: a tag index
                cursor.leb()
            cursor.leb()
    elif opcode in _PREFIXED:
        return opcode, _PREFIXED[opcode](cursor)
    else:
        raise MalformedModule(f"unknown instruction 0x{opcode:02x}")
    return opcode, NONE


def walk(cursor: Cursor, bare: frozenset[int], one_leb: frozenset[int],
         effects: Sequence[int] = NO_EFFECTS, height: list[int] | None = None
         ) -> Iterator[tuple[int, int, int]]:
    """(offset, opcode, sub-opcode or NONE) of each instruction to the cursor's end, the
    cursor past it when yielded, but for those whose opcode is in `bare` (a subset of
    NO_IMMEDIATE) or `one_leb` (of ONE_LEB) and memory loads and stores (whose
    immediates no reader wants): most of a body, stepped past here without a call each
    (a call per instruction cost the rewriting of CPython 40 %). With `effects` (per
    opcode, what it does to the operand stack's height), `height[0]` is kept as the
    height before each yielded instruction, moved by those stepped past; the caller may
    set it before going on."""
    data, end = cursor.data, cursor.end
    if height is None:
        height = [0]
    level = height[0]
    while cursor.pos < end:
        at = cursor.pos
        opcode = data[at]
        if opcode in bare:
            cursor.pos = at + 1
            level += effects[opcode]
            continue
        if opcode in one_leb:
            if at + 1 < end and data[at + 1] < 0x80:  # most immediates: one byte
                cursor.pos = at + 2
            else:
                cursor.pos = at + 1
                cursor.leb(64)
            level += effects[opcode]
            continue
        if 0x28 <= opcode <= 0x3E:  # loads and stores: alignment and offset
            if at + 1 < end and data[at + 1] < 0x40:  # one byte, memory 0
                cursor.pos = at + 2
                if at + 2 < end and data[at + 2] < 0x80:
                    cursor.pos = at + 3
                else:
                    cursor.leb(64)
            else:
                cursor.pos = at + 1
                _memarg(cursor)
            level += effects[opcode]
            continue
        opcode, sub = step(cursor)
        height[0] = level
        yield at, opcode, sub
        level = height[0]
