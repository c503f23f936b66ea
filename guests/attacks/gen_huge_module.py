"""Generate huge_module.wasm: a valid do-nothing module carrying a 160 MiB custom section.

Attack (ours): enormous on disk; whatever reads, hashes or caches the whole file pays.
usage: python gen_huge_module.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from wasm_encode import header, leb, name, section, start_only_sections, vec

CUSTOM_BYTES = 160 * 1024 * 1024
CHUNK = 1024 * 1024


def main(out_dir: Path) -> None:
    types, funcs = start_only_sections()
    exports = section(7, vec([b"\x06_start\x00\x00"]))
    code = section(10, vec([leb(2) + b"\x00\x0b"]))
    label = name("stockade.bloat")
    with (out_dir / "huge_module.wasm").open("wb") as out:
        out.write(header() + types + funcs + exports + code)
        # a custom section (id 0) written in chunks, never held in memory whole
        out.write(b"\x00" + leb(len(label) + CUSTOM_BYTES) + label)
        chunk = bytes(range(256)) * (CHUNK // 256)
        for _ in range(CUSTOM_BYTES // CHUNK):
            out.write(chunk)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
