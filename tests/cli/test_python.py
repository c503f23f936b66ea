"""`stockade python` as a real process, with the real CPython-for-WASI module."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import REAL, STOCKADE, stockade

pytestmark = pytest.mark.cpython


@pytest.fixture(autouse=True)
def _needs_cpython(python_wasm: Path) -> None:
    """Every test here runs the real interpreter (fails when the build step was skipped)."""


def test_program_from_standard_input() -> None:
    done = stockade("python", "-", stdin=b"print(6*7)\n", timeout=300)
    assert (done.returncode, done.stdout) == (0, b"42\n"), done.stderr


def test_code_and_arguments_after_it() -> None:
    done = stockade("python", "-c", "import sys; print(sys.argv[1:])", "a", "--json", "-c")
    assert done.stdout == b"['a', '--json', '-c']\n", done.stderr


def test_options_after_the_code_are_the_program_s(tmp_path: Path) -> None:
    # As CPython's own `-c`: whatever follows the code is sys.argv, never Stockade's
    # options. A wrapper passing its caller's arguments after the code granted them a
    # host directory (`--dir`), or changed the output (`--json`) and the limits.
    (tmp_path / "secret.txt").write_text("host secret")
    code = ("import sys, os; print(sys.argv[1:]); "
            "print(os.path.exists('/h/secret.txt'))")
    done = stockade("python", "-c", code, "--dir", f"{tmp_path}:/h", "--json",
                    "--timeout", "1s", "-c", "x", "--", "y")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"['--dir', '{tmp_path}:/h', '--json', '--timeout', '1s', "
                           "'-c', 'x', '--', 'y']\nFalse\n").encode()
    # A `--` after the code is the program's too, as CPython passes it on.
    dashes = stockade("python", "-c", "import sys; print(sys.argv)", "--", "y")
    assert dashes.stdout == b"['-c', '--', 'y']\n", dashes.stderr
    script = tmp_path / "argv.py"
    script.write_text("import sys; print(sys.argv[1:])")
    assert stockade("python", str(script), "--", "y").stdout == b"['--', 'y']\n"
    joined = stockade("python", f"-c{code}", "--dir", f"{tmp_path}:/h")
    assert joined.stdout == f"['--dir', '{tmp_path}:/h']\nFalse\n".encode(), joined.stderr
    # Options before the code are still Stockade's, values that look like -c included.
    before = stockade("python", "--env", "A=-c", "--env-allow", "HOME", "--json", "-c",
                      "import os; print(os.environ['A'])")
    assert json.loads(before.stdout)["stdout"] == "-c\n", before.stderr


def test_script_with_its_arguments(tmp_path: Path) -> None:
    script = tmp_path / "hello.py"
    script.write_text("import sys\nprint('script', sys.argv)\n")
    done = stockade("python", str(script), "x", "-y")
    assert done.stdout == b"script ['/work/hello.py', 'x', '-y']\n", done.stderr


def test_a_script_sees_only_itself(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("host secret")
    script = tmp_path / "peek.py"
    script.write_text("import os\nprint(sorted(os.listdir('/work')))\n")
    done = stockade("python", str(script))
    assert done.stdout == b"['peek.py']\n", done.stderr


def test_json_result_and_limits() -> None:
    done = stockade("python", "--json", "-c", "print('hi')")
    result = json.loads(done.stdout)
    assert (result["outcome"], result["stdout"]) == ("exited", "hi\n")
    # Sized for CPython: a 10 s timeout and 2e11 fuel over the default profile.
    assert (result["limits"]["timeout_ms"], result["limits"]["fuel"]) == (10_000, 2 * 10**11)


def test_a_runaway_loop_stops_at_its_timeout() -> None:
    done = stockade("python", "--json", "--timeout", "1s", "--fuel", "unlimited", "-c",
                    "while True: pass")
    result = json.loads(done.stdout)
    assert (done.returncode, result["outcome"]) == (124, "timeout")
    assert result["usage"]["wall_ms"] <= 1100 + 500  # the timeout, with slack for a busy host


def test_the_default_loop_stops_at_the_python_timeout() -> None:
    done = stockade("python", "--json", "-c", "while True: pass", timeout=60)
    assert json.loads(done.stdout)["outcome"] == "timeout"


def test_guest_exceptions_exit_1_with_traceback() -> None:
    done = stockade("python", "-c", "raise ValueError('boom')")
    assert done.returncode == 1
    assert b"ValueError: boom" in done.stderr


def test_strict_runs_a_snippet_and_refuses_an_unwritable_grant(tmp_path: Path) -> None:
    done = stockade("python", "--profile", "strict", "-c", "print(1)")
    assert (done.returncode, done.stdout) == (0, b"1\n"), done.stderr
    refused = stockade("python", "--profile", "strict", "--dir", f"{tmp_path}:/out:rw",
                       "-c", "print(1)")
    assert refused.returncode == 125
    assert b"no new files" in refused.stderr and b"Traceback" not in refused.stderr


def test_no_code_is_a_usage_error() -> None:
    done = stockade("python")
    assert done.returncode == 125
    assert done.stderr.startswith(b"stockade: give the code to run")


def test_missing_script() -> None:
    done = stockade("python", "/nonexistent/x.py")
    assert done.returncode == 127  # not found, as `run`'s missing module
    assert b"no such script" in done.stderr


def test_a_wrong_cpython_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "python.wasm"
    fake.write_bytes((REAL / "python.wasm").read_bytes()[:-1] + b"\x01")
    env = {**os.environ, "STOCKADE_PYTHON_WASM": str(fake)}
    done = subprocess.run([*STOCKADE, "python", "-c", "print(1)"], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    assert done.returncode == 125
    assert b"not the pinned CPython build" in done.stderr


def test_a_first_compile_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    # A fresh cache: CPython compiles (seconds), and stderr is a terminal.
    env = {**os.environ, "STOCKADE_CACHE_DIR": str(tmp_path / "cache"), "TERM": "xterm"}
    leader, follower = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:  # read while it runs: a full terminal buffer would block it
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        done = subprocess.run([*STOCKADE, "python", "-c", "print(6*7)"], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=follower, timeout=600, check=False)
        os.close(follower)
        reader.join(timeout=30)
    finally:
        os.close(leader)
    shown = b"".join(chunks)
    assert (done.returncode, done.stdout) == (0, b"42\n")
    assert b"compiling python.wasm" in shown
    assert b"done in" in shown


def test_help_lists_run_options() -> None:
    done = stockade("python", "--help")
    assert done.returncode == 0
    for option in (b"--timeout", b"--max-memory", b"--dir", b"--json", b"-c CODE"):
        assert option in done.stdout
    assert sys.executable  # the same interpreter runs the CLI


def test_a_script_that_is_no_small_file_is_refused(tmp_path: Path) -> None:
    """A SCRIPT was copied whole: a sparse 4 GB file wrote 4 GB to /tmp before the guest
    failed (found by review); a FIFO waited for a writer."""
    sparse = tmp_path / "big.py"
    with sparse.open("wb") as file:
        file.truncate(4 * 1024**3)
    fifo = tmp_path / "fifo.py"
    os.mkfifo(fifo)
    for script, reason in ((sparse, b"larger than 16 MiB"), (fifo, b"not a regular file")):
        refused = stockade("python", str(script), timeout=60)
        assert refused.returncode == 125 and reason in refused.stderr, refused.stderr
    link = tmp_path / "link.py"
    (tmp_path / "real.py").write_text("print('followed')\n")
    link.symlink_to(tmp_path / "real.py")  # a path the user named: followed
    done = stockade("python", str(link), timeout=300)
    assert (done.returncode, done.stdout) == (0, b"followed\n"), done.stderr
