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
- Values moved: a call, throw, branch or typed block moves as many values as its type
  says, in two or three bytes (a function may have a thousand results, and the next
  call take them all as its parameters); compiling costs with the values moved in one
  body and their square. 400 call pairs moving 1,000 values each (a 4 KB body)
  compiled for 5.8 s and 460 MB, 800 for 18.6 s and 800 MB; 20,000 pairs of 16 values
  (80 KB) for 3.3 s and 350 MB. Reported but not reproduced here: reference locals live
  across calls (1,000 externref or anyref locals live across 2,000 calls compiled in
  0.07 s and 42 MB).
- Allocation in constant expressions (global and table initialisers, element segments),
  compiled with the module: 100 globals of a 10,000-field struct each (20 KB) took 10 s
  to load.
- Found by a third review: a call or throw inside `try_table`s is an edge to each of
  their tag-specific catch clauses up to the first catch-all (`HANDLER_WEIGHT` heavy
  sites each: 100 clauses around 2,000 calls, 5 KB, compiled for 57 s); wasmtime
  compiles a trampoline for each function the host may call and each function type,
  costing with its parameters and results (`TRAMPOLINE_*`: 1,000 escaping functions of
  1,000 parameters and results, 16 KB, 35 s; 1,000 such types and no code, 2 MB, 38 s);
  values left on the operand stack under a block live across it (`LIVE_VALUE`: 2,000
  loads under 20,000 `if`s, 214 KB and no locals, compiled for 23 s), so the walk
  follows the stack's height.

`code_work` gives each function's `Work` (GC units, heavy sites, values moved);
`compilecost` turns them into predicted CPU and memory. Every body is decoded (about
two seconds of Python for CPython for WASI, paid only when a module is not in the AoT
cache): no count of bytes bounds the values a body moves. A function this reader
cannot decode to its end (an instruction it does not know) is charged as if the
rest of its body were the costliest code, so hiding a bomb behind an unknown instruction
saves nothing.
"""

from __future__ import annotations

from .binary import (
    CODE,
    ELEMENT,
    EXPORT,
    FUNCTION,
    GLOBAL,
    IMPORT,
    TABLE,
    TAG,
    TYPE,
    Cursor,
    MalformedModule,
    element_segments,
    sections,
)
from .wasmcode import NO_IMMEDIATE, ONE_LEB, block_type, heap_type, step, value_type, walk

__all__ = ["code_work", "Work", "REF_INIT", "REF_ACCESS", "SITE_WEIGHTS", "HANDLER_WEIGHT",
           "TRAMPOLINE_BASE", "TRAMPOLINE_PARAM", "TRAMPOLINE_RESULT", "LIVE_VALUE"]

REF_INIT = 6  # GC units for a reference field or element initialised
REF_ACCESS = 25  # GC units for a reference field, element, global or table slot accessed
REF_NEW = 35  # GC units for an array of references made (array.new, new_default, ...)
REF_BULK = 160  # GC units for array.fill, copy, init_data, init_elem on references
BRANCH_WEIGHT = 1.3  # heavy sites per branch carrying values to its target
# Heavy sites per instruction: call_indirect and return_call_indirect, table.grow,
# table.init, table.fill, table.copy (0xFC sub-opcodes 15, 12, 17, 14).
SITE_WEIGHTS = {(0x11, -1): 1.0, (0x13, -1): 1.0, (0xFC, 15): 1.0, (0xFC, 12): 1.9,
                (0xFC, 17): 2.2, (0xFC, 14): 3.8}
# Heavy sites per handler edge: a call or throw inside `try_table`s is an edge to each of
# their tag-specific catch clauses up to the first catch-all (100 clauses around 2,000
# calls, a 5 KB body: 57 s; 1.4e-9 s per edge squared, fitted at 50-200k edges).
HANDLER_WEIGHT = 0.29
# Values charged per trampoline, and per parameter and result of its type: wasmtime
# compiles one from the host's calling convention for each function that escapes
# (exported, in an element segment, a `ref.func` constant) and one to it per function
# type, whether any function has it or not (1,000 types of 1,000 parameters and results,
# no function, 2 MB: 38 s). 1,000 escaping functions of 1,000 parameters and 1,000
# results (16 KB) compiled for 35 s; 300 imported types of the same shape, 11 s; 20,000
# exported functions of no parameters, 2.4 s (0.5 s not exported); ~20 µs per
# parameter, ~6 per result, ~100 µs per escaping function.
TRAMPOLINE_BASE = 17
TRAMPOLINE_PARAM = 8
TRAMPOLINE_RESULT = 3
# Values charged per value on the operand stack under a block, `if` or loop: they live
# across all its code (2,000 values under 20,000 `if`s, 214 KB, compiled for 23 s; 6,000
# for 58 s: ~0.5 µs per value and block; declared locals do not cost so).
LIVE_VALUE = 1 / 6
# wasmtime's validator refuses more types, functions, imports, globals or tags than this:
# the scan stops there (the guard's own CPU, on a module wasmtime refuses anyway).
_MOST_ITEMS = 1_000_000
# No instruction is more than this many heavy sites per byte (table.copy: 3.8 in 4 bytes;
# a br_table target is 1.3 in at least one byte), but for calls and throws reaching catch
# clauses (charged by the clauses in scope): a bound for any body of known size.
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
# Read here: end, else, and what leaves the rest of a block unreachable (throw_ref,
# unreachable, return).
_PLAIN = NO_IMMEDIATE - {0x0B, 0x05, 0x0A, 0x00, 0x0F}
# Read here, not skipped: branches (their targets), calls and throws (their types), and
# global and table accesses.
_LEB = ONE_LEB - {0x08, 0x0C, 0x0D, 0x10, 0x12, 0x14, 0x15, 0x23, 0x24, 0x25, 0x26, 0xD5,
                  0xD6}


def _stack_effects() -> list[int]:
    """What each instruction but calls, blocks, branches and prefixed ones does to the
    operand stack's height (unknown: 0)."""
    effects = [0] * 256  # unary operators, conversions, nop, local.tee, memory.grow
    for first, last in ((0x46, 0x4F), (0x51, 0x66), (0x6A, 0x78), (0x7C, 0x8A), (0x92, 0x98),
                        (0xA0, 0xA6)):  # comparisons, binary operators
        for opcode in range(first, last + 1):
            effects[opcode] = -1
    effects[0x1A] = effects[0x21] = effects[0xD3] = -1  # drop, local.set, ref.eq
    effects[0x1B] = -2  # select
    for opcode in range(0x36, 0x3F):  # stores (loads: 0)
        effects[opcode] = -2
    # local.get, memory.size, constants, ref.func, global.get, ref.null
    for opcode in (0x20, 0x3F, 0x41, 0x42, 0x43, 0x44, 0xD2, 0x23, 0xD0):
        effects[opcode] = 1
    # br_if, br_on_non_null, global.set; typed select, table.set
    effects[0x0D] = effects[0xD6] = effects[0x24] = -1
    effects[0x1C] = effects[0x26] = -2
    return effects


_EFFECTS = _stack_effects()
_PREFIXED_EFFECTS = {
    0xFC: {8: -3, 10: -3, 11: -3, 12: -3, 14: -3, 15: -1, 16: 1, 17: -3},
    0xFD: {11: -2, 12: 1, 13: -1, 14: -1, 23: -1, 26: -1, 28: -1, 30: -1, 32: -1, 34: -1,
           82: -2, **{sub: -1 for sub in (*range(35, 77), *range(78, 82), *range(84, 88))},
           **{sub: -2 for sub in range(88, 92)}},
    0xFE: {0: -1, 1: -2, 2: -2, **{sub: -2 for sub in (*range(0x17, 0x1E), *range(0x48, 0x4F))},
           **{sub: -1 for sub in range(0x1E, 0x48)}},
    0xFB: {1: 1, 5: -2, 6: -1, 9: -1, 10: -1, 11: -1, 12: -1, 13: -1, 14: -3, 16: -4, 17: -5,
           18: -4, 19: -4},
}
# After these the rest of the block is unreachable: its stack is what the block began with.
_ENDINGS = frozenset([0x00, 0x08, 0x0A, 0x0C, 0x0E, 0x0F, 0x12, 0x13, 0x15])

Types = list[tuple[bool, ...] | None]
# What a function's code does that its bytes do not show: GC units, heavy sites, values
# moved.
Work = tuple[int, float, int]


class _Module:
    """What decoding a body needs to know of the module: per type index, whether each
    field (a struct's) or the element (an array's) holds a reference (None: a function
    type); per global and per table, whether it holds GC references."""

    __slots__ = ("types", "fields", "globals", "tables", "signatures", "functions", "tags",
                 "imported", "escaping")

    def __init__(self) -> None:
        self.types: Types = []
        self.fields: list[int] = []
        self.globals: list[bool] = []
        self.tables: list[bool] = []
        self.signatures: list[tuple[int, int]] = []  # per type: (params, results); (0, 0)
        self.functions: list[int] = []  # per function index: its type index
        self.tags: list[int] = []  # per tag index: its type index
        self.imported = 0  # functions imported (the first indices)
        self.escaping: set[int] = set()  # functions the host may call: exported, referenced

    @property
    def widest(self) -> int:
        """The most values one instruction could move (a type's parameters and results)."""
        return max([params + results for params, results in self.signatures], default=0)

    def signature(self, index: int) -> tuple[int, int]:
        """(parameters, results) of type `index`; (0, 0) for one that is none (invalid)."""
        return self.signatures[index] if index < len(self.signatures) else (0, 0)

    def trampolines(self) -> list[Work]:
        """The `Work` of each trampoline wasmtime compiles beside the functions (values
        only): one per function type, used or not, one per defined function that
        escapes."""
        kinds = [index for index, kind in enumerate(self.types) if kind is None] + [
            self.functions[index] for index in sorted(self.escaping)
            if self.imported <= index < len(self.functions)]
        work: list[Work] = []
        for kind in kinds:
            params, results = self.signature(kind)
            work.append((0, 0.0, TRAMPOLINE_BASE + TRAMPOLINE_PARAM * params
                         + TRAMPOLINE_RESULT * results))
        return work


def code_work(data: bytes) -> list[Work]:
    """The `Work` (GC units, heavy sites, values moved) of each defined function, in
    code-section order, then one entry for the global initialisers when they allocate
    (lenient: a malformed module yields what could be read; validity is wasmtime's
    verdict), then one per trampoline moving values (`_Module.trampolines`)."""
    module = _Module()
    work: list[Work] = []
    initialisers = 0
    try:
        for section in sections(data, strict=False):
            cursor = Cursor(data, section.start, section.end)
            if section.id == TYPE:
                _types(cursor, module)
                module.fields = [sum(REF_INIT if ref else 1 for ref in kind)
                                 if kind is not None else 0 for kind in module.types]
            elif section.id == FUNCTION:
                module.functions += [cursor.leb() for _ in range(_count(cursor, "function"))]
            elif section.id == TAG:
                for _ in range(_count(cursor, "tag", 2)):
                    cursor.byte()  # attribute: an exception
                    module.tags.append(cursor.leb())
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
                for _ in range(_count(cursor, "global", 3)):
                    module.globals.append(value_type(cursor) in _GC_REFS)
                    cursor.byte()  # mutability
                    initialisers += _constant(cursor, module)
            elif section.id == EXPORT:
                for _ in range(_count(cursor, "export", 3)):
                    cursor.skip(cursor.leb())  # name
                    kind, index = cursor.byte(), cursor.leb()
                    if kind == 0:
                        module.escaping.add(index)
            elif section.id == ELEMENT:
                initialisers += _elements(cursor, module)
            elif section.id == CODE:
                _functions(cursor, module, work)
                break
    except MalformedModule:
        pass
    if initialisers:
        work.append((initialisers, 0.0, 0))
    return work + module.trampolines()


def _count(cursor: Cursor, what: str, least: int = 1) -> int:
    """A vector length within wasmtime's limits (MalformedModule past them: the scan
    stops)."""
    count = cursor.count(what, least)
    if count > _MOST_ITEMS:
        raise MalformedModule(f"more than {_MOST_ITEMS:,} {what}s")
    return count


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
    for _ in range(_count(cursor, "import", 4)):
        cursor.skip(cursor.leb())  # module name
        cursor.skip(cursor.leb())  # field name
        kind = cursor.byte()
        if kind == 0:
            module.functions.append(cursor.leb())
            module.imported += 1
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
            module.tags.append(cursor.leb())
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
        if opcode == 0xD2:  # ref.func: the function escapes
            module.escaping.add(_index(cursor.data, at + 1))
        elif opcode == 0xFB:
            units += _gc_units(Cursor(cursor.data, at + 1, cursor.pos), sub, module)


def _elements(cursor: Cursor, module: _Module) -> int:
    """GC units of the element segments' offsets and expressions; their functions escape."""
    units = [0]

    def expression(at: Cursor) -> None:
        units[0] += _constant(at, module)

    element_segments(cursor, expression, module.escaping.add)
    return units[0]


def _types(cursor: Cursor, module: _Module) -> None:
    """For each type index: whether each field (a struct's) or the element (an array's)
    holds a reference, None for a function type (`types`); its (parameters, results)
    (`signatures`)."""
    for _ in range(_count(cursor, "type")):
        if cursor.data[cursor.pos:cursor.pos + 1] == b"\x4e":  # rec group
            cursor.pos += 1
            for _ in range(_count(cursor, "subtype")):
                _subtype(cursor, module)
        else:
            _subtype(cursor, module)


def _subtype(cursor: Cursor, module: _Module) -> None:
    form = cursor.byte()
    if form in (0x4F, 0x50):  # sub final, sub: supertypes, then the composite type
        for _ in range(cursor.count("supertype")):
            cursor.leb()
        form = cursor.byte()
    if form == 0x60:  # func
        params = _value_types(cursor)
        module.types.append(None)
        module.signatures.append((params, _value_types(cursor)))
        return
    if form == 0x5F:  # struct
        module.types.append(tuple(_field(cursor) for _ in range(cursor.count("field", 2))))
    elif form == 0x5E:  # array
        module.types.append((_field(cursor),))
    else:
        raise MalformedModule(f"offset {cursor.pos - 1}: unknown composite type {form:#04x}")
    module.signatures.append((0, 0))


def _value_types(cursor: Cursor) -> int:
    """Past a vector of value types: how many. Without a typed reference (a heap type
    follows 0x63 and 0x64), each is one byte, skipped at once: read one by one, a type
    section cost ~130 ns of Python a byte (100 MB of function types: 19 s)."""
    count = cursor.count("value type")  # within the section: one byte each at least
    types = cursor.data[cursor.pos:cursor.pos + count]
    if b"\x63" not in types and b"\x64" not in types:
        cursor.pos += count
        return count
    for _ in range(count):
        value_type(cursor)
    return count


def _field(cursor: Cursor) -> bool:
    first = cursor.data[cursor.pos] if cursor.pos < cursor.end else None
    if first in _PACKED:
        cursor.pos += 1
        is_ref = False
    else:
        is_ref = value_type(cursor) in _REFS
    cursor.byte()  # mutability
    return is_ref


def _functions(cursor: Cursor, module: _Module, work: list[Work]) -> None:
    # A byte of undecodable code is charged as a share of the costliest instruction (a
    # call moving the widest type's values is two bytes).
    worst = (max([REF_BULK, *module.fields]) // 3 + 1, module.widest // 2 + 1)
    data = cursor.data
    bodies = cursor.count("function body", 2)
    # Defined functions follow the imported ones in the index space.
    first = len(module.functions) - bodies
    for index in range(first, first + bodies):
        size = cursor.leb()
        start, end = cursor.pos, min(cursor.pos + size, cursor.end)
        results = module.signature(module.functions[index])[1] if index >= 0 else 1
        work.append(_decoded(Cursor(data, start, end), module, results, worst))
        if cursor.pos + size > cursor.end:
            return
        cursor.pos = end


def _decoded(body: Cursor, module: _Module, results: int, worst: tuple[int, int]) -> Work:
    found = [0, 0.0, 0, 0]  # and the catch clauses a call would reach where the walk is
    try:
        for _ in range(body.count("local declaration")):
            body.leb()
            value_type(body)
        _body(body, module, results, found)
    except MalformedModule:
        left = body.end - body.pos
        found[0] += left * worst[0]
        # A call is two bytes: each may reach the clauses in scope.
        found[1] += left * max(_SITES_PER_BYTE, HANDLER_WEIGHT * found[3] / 2)
        found[2] += left * worst[1]
    return int(found[0]), found[1], int(found[2])


def _body(body: Cursor, module: _Module, results: int, found: list[float]) -> None:
    """Add this body's GC units, heavy sites and values moved to `found` as it goes (what
    was counted stays counted when an unknown instruction ends the walk)."""
    data, end = body.data, body.end
    weights = SITE_WEIGHTS
    signature, functions, tags = module.signature, module.functions, module.tags
    # Per open block: the values a branch to it carries; to the function's end, its
    # results (at least one: such a branch is a heavy site, as it always was).
    carries = [max(1, results)]
    # Per open block: the tag-specific catch clauses a call or throw in it may reach.
    handlers = [0]
    # The operand stack's height (`walk` adds what it steps past); per open block, the
    # height under it and its parameters and results.
    height, under, shapes = [0], [0], [(0, results)]
    effects, prefixed = _EFFECTS, _PREFIXED_EFFECTS
    for at, opcode, sub in walk(body, _PLAIN, _LEB, _EFFECTS, height):
        if opcode == 0x0B:  # end
            if len(carries) > 1:
                carries.pop()
                handlers.pop()
                found[3] = handlers[-1]
                height[0] = under.pop() + shapes.pop()[1]
            continue
        if opcode == 0x05:  # else
            height[0] = under[-1] + shapes[-1][0]
            continue
        if opcode in (0x02, 0x03, 0x04, 0x06, 0x1F):  # block, loop, if, try, try_table
            kind = data[at + 1] if at + 1 < end else 0x40
            if kind == 0x40:
                params = results = 0
            elif kind in _VALUE_TYPES:
                params, results = 0, 1
            else:  # a type index (s33)
                params, results = signature(Cursor(data, at + 1, end).leb(33))
            # A loop's branches carry its parameters, the others' their results.
            carries.append(params if opcode == 0x03 else results)
            handlers.append(handlers[-1])
            if kind != 0x40 and opcode != 0x03:
                found[1] += 1
            found[2] += params + results
            # What lies under the block lives across it.
            below = max(under[-1], height[0] - params - (opcode == 0x04))
            found[2] += below * LIVE_VALUE
            under.append(below)
            shapes.append((params, results))
            height[0] = below + params
        elif opcode in _ENDINGS:
            height[0] = under[-1]
        elif sub < 0:
            height[0] = max(under[-1], height[0] + effects[opcode])
        else:
            change = prefixed[opcode].get(sub, 0) if opcode in prefixed else 0
            if opcode == 0xFB and sub in (0, 8):  # struct.new, array.new_fixed
                immediates = Cursor(data, at + 1, body.pos)
                immediates.leb()
                kind_index = immediates.leb()
                taken = immediates.leb() if sub == 8 else (
                    len(module.types[kind_index] or ()) if kind_index < len(module.types)
                    else 0)
                change = 1 - taken
            height[0] = max(under[-1], height[0] + change)
        weight = weights.get((opcode, sub))
        if weight is not None:
            found[1] += weight
            if opcode in (0x11, 0x13):  # call_indirect, return_call_indirect
                taken, given = signature(Cursor(data, at + 1, end).leb())
                found[2] += taken + given
                if opcode == 0x11:
                    height[0] = max(under[-1], height[0] - taken - 1 + given)
                found[1] += HANDLER_WEIGHT * handlers[-1]
        elif opcode in (0x0C, 0x0D, 0xD5, 0xD6):  # br, br_if, br_on_null, br_on_non_null
            _branch(_index(data, at + 1), carries, found)
        elif opcode == 0x1F:  # try_table: each catch clause is a branch to its label
            clauses = Cursor(data, at + 1, body.pos)
            block_type(clauses)
            tagged, catch_all = 0, False
            for _ in range(clauses.count("catch clause")):
                if clauses.byte() in (0x00, 0x01):  # catch, catch_ref: a tag index
                    clauses.leb()
                    tagged += not catch_all
                else:  # catch_all, catch_all_ref: no clause outside it is reached
                    catch_all = True
                _branch(clauses.leb() + 1, carries, found)  # from outside the try
            handlers[-1] = found[3] = tagged if catch_all else tagged + handlers[-2]
        elif opcode == 0x0E:  # br_table
            targets = Cursor(data, at + 1, body.pos)
            for _ in range(targets.count("br_table label") + 1):
                _branch(targets.leb(), carries, found)
        elif opcode in (0x10, 0x12):  # call, return_call
            index = _index(data, at + 1)
            if index < len(functions):
                taken, given = signature(functions[index])
                found[2] += taken + given
                if opcode == 0x10:
                    height[0] = max(under[-1], height[0] - taken + given)
            found[1] += HANDLER_WEIGHT * handlers[-1]
        elif opcode in (0x14, 0x15):  # call_ref, return_call_ref
            taken, given = signature(_index(data, at + 1))
            found[2] += taken + given
            if opcode == 0x14:
                height[0] = max(under[-1], height[0] - taken - 1 + given)
            found[1] += HANDLER_WEIGHT * handlers[-1]
        elif opcode == 0x08:  # throw
            index = _index(data, at + 1)
            if index < len(tags):
                found[2] += signature(tags[index])[0]
            found[1] += HANDLER_WEIGHT * handlers[-1]
        elif opcode == 0x0A:  # throw_ref
            found[1] += HANDLER_WEIGHT * handlers[-1]
        elif opcode in (0x23, 0x24):  # global.get, global.set
            index = _index(data, at + 1)
            if index < len(module.globals) and module.globals[index]:
                found[0] += REF_ACCESS
        elif opcode in (0x25, 0x26):  # table.get, table.set
            index = _index(data, at + 1)
            if index < len(module.tables) and module.tables[index]:
                found[0] += REF_ACCESS
        elif opcode == 0xFB:
            if sub in (24, 25):  # br_on_cast, br_on_cast_fail: flags, then the label
                immediates = Cursor(data, at + 1, body.pos)
                immediates.leb()  # the sub-opcode (its LEB128 may be padded)
                immediates.byte()
                _branch(immediates.leb(), carries, found)
            elif 20 <= sub <= 23:  # ref.test, ref.cast: a subtype check each
                found[1] += 1.0
            elif module.types:
                found[0] += _gc_units(Cursor(data, at + 1, body.pos), sub, module)


def _index(data: bytes, pos: int) -> int:
    """The LEB128 index at `pos`, of an instruction `walk` already stepped past (so it
    ends within the body): without a Cursor, as most instructions read here carry one."""
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
        pos += 1
        shift += 7


def _branch(label: int, carries: list[int], found: list[float]) -> None:
    """A branch to `label`: a heavy site when it carries values, which it moves."""
    if label < len(carries):
        values = carries[-1 - label]
        if values:
            found[1] += BRANCH_WEIGHT
            found[2] += values


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
