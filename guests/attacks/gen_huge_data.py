"""Generate huge_data.wasm: a 64 MiB memory initialised by one 48 MiB data segment.

Attack (ours): the cost lands at instantiation, before any guest code runs.
usage: python gen_huge_data.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from wasm_encode import header, leb, section, start_only_sections, vec

PAGES = 1024  # 64 MiB
DATA_BYTES = 48 * 1024 * 1024


def main(out_dir: Path) -> None:
    types, funcs = start_only_sections()
    memory = section(5, vec([b"\x00" + leb(PAGES)]))
    exports = section(7, vec([b"\x06_start\x00\x00"]))
    code = section(10, vec([leb(2) + b"\x00\x0b"]))
    payload = bytes(range(256)) * (DATA_BYTES // 256)
    # active segment for memory 0 at offset 0: flags 0, (i32.const 0) end, bytes
    segment = b"\x00\x41\x00\x0b" + leb(len(payload)) + payload
    data = section(11, vec([segment]))
    (out_dir / "huge_data.wasm").write_bytes(
        header() + types + funcs + memory + exports + code + data
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
