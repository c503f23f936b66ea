"""A few WebAssembly binary encoders shared by the gen_*.py generators of this directory."""

from __future__ import annotations

__all__ = ["leb", "sleb", "vec", "name", "section", "header", "start_only_sections"]


def leb(value: int) -> bytes:
    """Unsigned LEB128."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def sleb(value: int) -> bytes:
    """Signed LEB128."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        done = (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40)
        out.append(byte | (0 if done else 0x80))
        if done:
            return bytes(out)


def vec(items: list[bytes]) -> bytes:
    """A length-prefixed vector of already encoded items."""
    return leb(len(items)) + b"".join(items)


def name(text: str) -> bytes:
    """A length-prefixed UTF-8 name."""
    raw = text.encode()
    return leb(len(raw)) + raw


def section(section_id: int, payload: bytes) -> bytes:
    """One section: id, size, payload."""
    return bytes([section_id]) + leb(len(payload)) + payload


def header() -> bytes:
    """The magic number and version of a core module."""
    return b"\0asm\1\0\0\0"


def start_only_sections() -> tuple[bytes, bytes]:
    """Type and function sections declaring one `() -> ()` function (index 0)."""
    types = section(1, vec([b"\x60\x00\x00"]))
    funcs = section(3, vec([leb(0)]))
    return types, funcs
