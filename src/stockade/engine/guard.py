"""`CompileGuard`: refuse modules whose size or shape would make compiling them an attack.

Compilation happens before any fuel or deadline applies, and Cranelift's register
allocation is superlinear in locals kept live through one huge function: a 1 MB module
can cost seconds of CPU. So the policy bounds the module file, the largest function body
and the locals of one function; the check reads only section and body headers. Data
segments larger than the memory limit are refused too: such a module can never be
instantiated, and compiling it builds memory images of that size in the host.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModuleError
from ..policy.units import format_size

__all__ = ["CompileGuard", "code_shape", "data_size"]

CODE_SECTION = 10
DATA_SECTION = 11


class _Truncated(Exception):
    """The headers end early: leave the verdict on validity to wasmtime."""


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 35:
            raise _Truncated
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def code_shape(data: bytes) -> list[tuple[int, int]]:
    """(body size, declared locals) of every function in a binary module's code section,
    as far as its headers can be read (a malformed module is wasmtime's to reject)."""
    shape: list[tuple[int, int]] = []
    try:
        _scan(data, shape)
    except _Truncated:
        pass
    return shape


def _scan(data: bytes, shape: list[tuple[int, int]]) -> None:
    pos = 8
    while pos < len(data):
        section = data[pos]
        size, pos = _leb(data, pos + 1)
        end = pos + size
        if section == CODE_SECTION:
            count, cursor = _leb(data, pos)
            for _ in range(count):
                body_size, cursor = _leb(data, cursor)
                body_end = cursor + body_size
                groups, inner = _leb(data, cursor)
                locals_count = 0
                for _ in range(groups):
                    declared, inner = _leb(data, inner)
                    locals_count += declared
                    inner += 1  # the value type
                shape.append((body_size, locals_count))
                cursor = body_end
            return
        pos = end


def data_size(data: bytes) -> int:
    """Bytes of all data segments of a binary module, as far as its headers can be read."""
    total = 0
    try:
        pos = 8
        while pos < len(data):
            section = data[pos]
            size, pos = _leb(data, pos + 1)
            if section == DATA_SECTION:
                count, cursor = _leb(data, pos)
                for _ in range(count):
                    flags, cursor = _leb(data, cursor)
                    if flags == 2:
                        _, cursor = _leb(data, cursor)  # memory index
                    if flags in (0, 2):
                        cursor = _skip_const_expr(data, cursor)  # the offset
                    length, cursor = _leb(data, cursor)
                    total += length
                    cursor += length
                return total
            pos += size
    except _Truncated:
        pass
    return total


_WITH_IMMEDIATE = {0x41, 0x42, 0x23}  # i32.const, i64.const, global.get
_NO_IMMEDIATE = {0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E}  # extended-const add, sub, mul


def _skip_const_expr(data: bytes, pos: int) -> int:
    """The position after a constant expression's `end` (unknown opcodes: give up)."""
    while pos < len(data):
        opcode = data[pos]
        pos += 1
        if opcode == 0x0B:
            return pos
        if opcode in _WITH_IMMEDIATE:
            _, pos = _leb(data, pos)
        elif opcode not in _NO_IMMEDIATE:
            raise _Truncated
    raise _Truncated


@dataclass(frozen=True)
class CompileGuard:
    """Bounds checked before a module is compiled (sizes in bytes)."""

    max_module_size: int
    max_function_size: int
    max_locals: int
    max_data_size: int | None = None

    def check_size(self, size: int, name: str) -> None:
        """Refuse a module file larger than `max_module_size` before reading it."""
        if size > self.max_module_size:
            raise ModuleError(
                f"{name}: {format_size(size)} is larger than this policy's module size limit "
                f"of {format_size(self.max_module_size)}"
            )

    def check_code(self, data: bytes, name: str) -> None:
        """Refuse function bodies or local counts that would make compilation explode, and
        data segments that could never fit in the memory limit."""
        if self.max_data_size is not None:
            segments = data_size(data)
            if segments > self.max_data_size:
                raise ModuleError(
                    f"{name}: its data segments hold {format_size(segments)}, more than "
                    f"this policy's memory limit of {format_size(self.max_data_size)}: it "
                    "could never be instantiated"
                )
        for index, (body, locals_count) in enumerate(code_shape(data)):
            if body > self.max_function_size:
                raise ModuleError(
                    f"{name}: function {index} has a {format_size(body)} body, over this "
                    f"policy's limit of {format_size(self.max_function_size)} (compile cost)"
                )
            if locals_count > self.max_locals:
                raise ModuleError(
                    f"{name}: function {index} declares {locals_count} locals, over this "
                    f"policy's limit of {self.max_locals} (compile cost)"
                )
