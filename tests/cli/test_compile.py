"""`stockade compile` and `stockade check --module`: a module path is read as `run` and
`inspect` read it (127 missing, 126 not a regular file, one line each), and compile never
replaces its own input."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import guest, stockade


def one_line(done: subprocess.CompletedProcess[bytes], code: int, *words: str) -> str:
    """The one line of a refusal exiting `code`, holding `words`."""
    err = done.stderr.decode(errors="replace")
    assert done.returncode == code, err[-2000:]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-2000:]
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize("command", [["compile"], ["check", "--no-host", "--module"]])
def test_a_directory_as_the_module_is_126_in_one_line(tmp_path: Path,
                                                      command: list[str]) -> None:
    (tmp_path / "dir.wasm").mkdir()
    done = stockade(*command, str(tmp_path / "dir.wasm"))
    one_line(done, 126, "dir.wasm: not a regular file")
    assert one_line(stockade("run", str(tmp_path / "dir.wasm")), 126) == \
        done.stderr.decode()  # the words `run` uses
    os.mkfifo(tmp_path / "pipe.wasm")
    one_line(stockade(*command, str(tmp_path / "pipe.wasm"), timeout=30), 126,
             "not a regular file")
    one_line(stockade(*command, str(tmp_path / "nope.wasm")), 127, "no such module file")


def test_compile_of_an_empty_name_is_one_line() -> None:
    one_line(stockade("compile", ""), 127, "no such module file")


def test_compile_never_replaces_its_input(tmp_path: Path) -> None:
    source = tmp_path / "a.wasm"
    shutil.copyfile(guest("hello.wasm"), source)
    before = source.read_bytes()
    (tmp_path / "hard.wasm").hardlink_to(source)
    for output in (str(source), f"{tmp_path}/../{tmp_path.name}/a.wasm",
                   str(tmp_path / "hard.wasm")):
        done = stockade("compile", str(source), "-o", output)
        one_line(done, 125, "is the module compiled")
    assert source.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["a.wasm", "hard.wasm"]


def test_compile_of_a_cwasm_says_what_to_compile(tmp_path: Path) -> None:
    cwasm = tmp_path / "hello.cwasm"
    assert stockade("compile", str(guest("hello.wasm")), "-o", str(cwasm)).returncode == 0
    sealed = cwasm.read_bytes()
    err = one_line(stockade("compile", str(cwasm)), 126, "already compiled", ".wasm")
    assert "--allow-precompiled" not in err
    assert cwasm.read_bytes() == sealed


def test_compile_refuses_an_output_that_is_not_a_regular_file_before_compiling(
        tmp_path: Path) -> None:
    (tmp_path / "target").write_text("precious")
    (tmp_path / "link.cwasm").symlink_to(tmp_path / "target")
    (tmp_path / "out.cwasm").mkdir()
    (tmp_path / "dangling.cwasm").symlink_to(tmp_path / "nowhere")
    for output in ("link.cwasm", "out.cwasm", "dangling.cwasm", "/dev/full"):
        done = stockade("compile", str(guest("hello.wasm")), "-o", str(tmp_path / output))
        one_line(done, 125, "not a regular file")
    assert (tmp_path / "target").read_text() == "precious"
    assert (tmp_path / "link.cwasm").is_symlink() and not (tmp_path / "nowhere").exists()


def test_the_output_name_is_shown_escaped(tmp_path: Path) -> None:
    """The success line wrote the output's name raw (an escape sequence or a newline in
    it rewrote the terminal)."""
    output = tmp_path / "out\x1b]0;pwned\x07\x1b[2J\n.cwasm"
    done = stockade("compile", "-o", str(output), str(guest("hello.wasm")))
    assert done.returncode == 0, done.stderr
    assert b"\x1b" not in done.stderr and done.stderr.count(b"\n") == 1, done.stderr
    assert b"\\x1b" in done.stderr
