"""Build every guest module under guests/ into build/guests/ (incremental).

- ``*.c``   -> clang --target=wasm32-wasi (flags from ``// build: ...`` lines,
               target from ``// target: ...``); with ``// native: yes`` also a
               native binary in build/native/ from the same source; ``// native: only``
               builds the native binary alone (a helper of the benchmark, such as
               ``bench/rusage``, its launcher that measures a process's own peak RSS).
- ``*.wat`` -> binary wasm via wasmtime's wat2wasm.
- ``gen_*.py`` -> run as ``python gen_x.py OUT_DIR``: generators for modules too
               big or too regular to keep as source (compile bombs, huge files).

``--package DEST`` (the wheel's build hook, setup.py) builds only what an installed
Stockade needs (the attack suite and the benchmark: ``guests/attacks``, ``guests/bench``)
and copies it into DEST (``stockade/_guests``) laid out like build/: built modules, the
benchmark's native binaries, and the generator scripts instead of their multi-megabyte
outputs, which ``stockade.guests`` generates at first use.
"""

from __future__ import annotations

import argparse
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
    headers = sorted(source.parent.glob("*.h"))
    if opts.get("native") != "only" and stale(out, source, Path(__file__), *headers):
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = ["clang", f"--target={target}", *flags, "-Wl,--strip-all"]
        cmd += ["-o", str(out), str(source)]
        cmd += opts.get("link", "").split()
        run(cmd, source)
    if opts.get("native") in ("yes", "only"):
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


# What an installed Stockade carries (see --package).
PACKAGED_DIRS = ("attacks", "bench")


def build(subdirs: tuple[str, ...] = (), generate: bool = True) -> int:
    """Build the sources under `subdirs` of guests/ (all when empty); the count built."""
    if shutil.which("clang") is None:
        sys.exit("build_guests: clang not found (apt-get install clang lld wasi-libc)")
    count = 0
    for source in sorted(SRC.rglob("*")):
        parts = source.relative_to(SRC).parts
        if subdirs and (len(parts) < 2 or parts[0] not in subdirs):
            continue
        if source.suffix == ".c":
            build_c(source)
        elif source.suffix == ".wat":
            build_wat(source)
        elif source.suffix == ".py" and source.name.startswith("gen_"):
            if not generate:
                continue
            build_generated(source)
        else:
            continue
        count += 1
    return count


def package(dest: Path) -> int:
    """Build PACKAGED_DIRS and copy them into `dest` laid out like build/; files copied."""
    build(PACKAGED_DIRS, generate=False)
    if dest.exists():
        shutil.rmtree(dest)
    copied = 0
    for subdir in PACKAGED_DIRS:
        source_dir, built_dir = SRC / subdir, OUT / subdir
        generators = sorted(source_dir.glob("gen_*.py"))
        generated = {g.stem.removeprefix("gen_") + ".wasm" for g in generators}
        target = dest / "guests" / subdir
        target.mkdir(parents=True)
        for module in sorted(built_dir.glob("*.wasm")):
            if module.name not in generated:
                shutil.copy2(module, target / module.name)
                copied += 1
        # generators and the helpers they import, not their outputs
        for script in [*generators, *(p for p in source_dir.glob("*.py") if p not in generators)]:
            shutil.copy2(script, target / script.name)
            copied += 1
        native = NATIVE / subdir
        for binary in sorted(native.glob("*")) if native.is_dir() else []:
            (dest / "native" / subdir).mkdir(parents=True, exist_ok=True)
            shutil.copy2(binary, dest / "native" / subdir / binary.name)
            copied += 1
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, metavar="DEST",
                        help="build what the wheel carries and copy it into DEST")
    options = parser.parse_args()
    if options.package is not None:
        copied = package(options.package.resolve())
        print(f"build_guests: {copied} files packaged into {options.package}")
        return
    count = build()
    print(f"build_guests: {count} guest sources up to date in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
