"""Build every guest module under guests/ into build/guests/ (incremental).

- ``*.c``   -> clang --target=wasm32-wasi (flags from ``// build: ...`` lines,
               target from ``// target: ...``); with ``// native: yes`` also a
               native binary in build/native/ from the same source.
- ``*.wat`` -> binary wasm via wasmtime's wat2wasm.
- ``gen_*.py`` -> run as ``python gen_x.py OUT_DIR``: generators for modules too
               big or too regular to keep as source (compile bombs, huge files).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "guests"
OUT = ROOT / "build" / "guests"
NATIVE = ROOT / "build" / "native"
DIRECTIVE = re.compile(r"^//\s*(build|target|native|link):\s*(.*)$")


def directives(source: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in source.read_text().splitlines()[:15]:
        match = DIRECTIVE.match(line.strip())
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def stale(target: Path, *sources: Path) -> bool:
    if not target.exists():
        return True
    newest = max(s.stat().st_mtime for s in sources)
    return target.stat().st_mtime < newest


def build_c(source: Path) -> None:
    rel = source.relative_to(SRC).with_suffix("")
    opts = directives(source)
    flags = opts.get("build", "-O2").split()
    target = opts.get("target", "wasm32-wasi")
    out = OUT / rel.with_suffix(".wasm")
    out.parent.mkdir(parents=True, exist_ok=True)
    headers = sorted(source.parent.glob("*.h"))
    if stale(out, source, Path(__file__), *headers):
        cmd = ["clang", f"--target={target}", *flags, "-Wl,--strip-all"]
        cmd += ["-o", str(out), str(source)]
        cmd += opts.get("link", "").split()
        run(cmd, source)
    if opts.get("native") == "yes":
        native = NATIVE / rel
        native.parent.mkdir(parents=True, exist_ok=True)
        if stale(native, source, Path(__file__), *headers):
            # Same compiler as the wasm build, so native vs wasm compares code generators.
            run(["clang", *flags, "-s", "-static", "-o", str(native), str(source), "-lm"], source)


def build_wat(source: Path) -> None:
    import wasmtime

    out = OUT / source.relative_to(SRC).with_suffix(".wasm")
    out.parent.mkdir(parents=True, exist_ok=True)
    if stale(out, source):
        out.write_bytes(wasmtime.wat2wasm(source.read_text()))


def build_generated(script: Path) -> None:
    out_dir = OUT / script.parent.relative_to(SRC)
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / f".{script.stem}.done"
    if stale(marker, script):
        run([sys.executable, str(script), str(out_dir)], script)
        marker.touch()


def run(cmd: list[str], source: Path) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"build_guests: {source.relative_to(ROOT)} failed:\n{result.stderr}")


def main() -> None:
    if shutil.which("clang") is None:
        sys.exit("build_guests: clang not found (apt-get install clang lld wasi-libc)")
    count = 0
    for source in sorted(SRC.rglob("*")):
        if source.suffix == ".c":
            build_c(source)
        elif source.suffix == ".wat":
            build_wat(source)
        elif source.suffix == ".py" and source.name.startswith("gen_"):
            build_generated(source)
        else:
            continue
        count += 1
    print(f"build_guests: {count} guest sources up to date in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
