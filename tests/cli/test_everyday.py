"""`stockade run` behaving like wasmtime: guest arguments, stdin, `HOST::GUEST`, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import guest, stockade


def test_everything_after_the_module_is_the_guests() -> None:
    done = stockade("run", str(guest("hello.wasm")), "a", "--json", "--", "-c")
    assert done.returncode == 0
    assert done.stdout.splitlines()[1:] == [b"arg 1: a", b"arg 2: --json", b"arg 3: --",
                                            b"arg 4: -c"]


def test_a_double_dash_after_the_module_is_still_accepted() -> None:
    done = stockade("run", str(guest("hello.wasm")), "--", "world")
    assert done.stdout.splitlines()[1:] == [b"arg 1: world"]


def test_stdin_is_inherited_by_default() -> None:
    done = stockade("run", str(guest("hello.wasm")), stdin=b"piped\n")
    assert done.stdout.endswith(b"piped\n")


def test_stdin_none_gives_empty_input() -> None:
    done = stockade("run", "--stdin", "none", str(guest("hello.wasm")), stdin=b"piped\n")
    assert b"piped" not in done.stdout


def test_wasmtime_dir_form(tmp_path: Path) -> None:
    (tmp_path / "probe.txt").write_text("x")
    done = stockade("run", "--json", "--dir", f"{tmp_path}::/data", str(guest("hello.wasm")))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--fuel", "lots", b"--fuel: not a whole number: 'lots'"),
    ("--fuel", "-5", b"--fuel: must not be negative"),
    ("--max-memory", "16", b"did you mean 16MiB?"),
    ("--max-memory", "sixteen", b"--max-memory: not a size"),
    ("--timeout", "soon", b"--timeout: not a duration"),
    ("--timeout", "-1s", b"--timeout: not a duration"),
    ("--max-output", "-1", b"--max-output: not a size"),
    ("--max-files", "1.5", b"--max-files: not a whole number"),
    ("--dir", "a::", b"--dir: not a directory grant"),
    ("--env", "NOVALUE", b"--env 'NOVALUE': expected KEY=VALUE"),
])
def test_bad_flag_values_get_one_clear_line(flag: str, value: str, says: bytes) -> None:
    done = stockade("run", flag, value, str(guest("hello.wasm")))
    assert done.returncode == 125
    assert says in done.stderr, done.stderr
    assert done.stderr.count(b"\n") == 1 and b"Traceback" not in done.stderr


def test_unknown_policy_keys_get_a_suggestion(tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text("[limits]\ntimout = '2s'\n")
    done = stockade("run", "--policy", str(policy), str(guest("hello.wasm")))
    assert done.returncode == 125
    assert b"did you mean 'timeout'?" in done.stderr
    policy.write_text("[capabilites]\ndirs = []\n")
    done = stockade("run", "--policy", str(policy), str(guest("hello.wasm")))
    assert b"did you mean 'capabilities'?" in done.stderr


def test_wat_errors_name_line_and_column(tmp_path: Path) -> None:
    module = tmp_path / "bad.wat"
    module.write_text("(module\n  (func\n   (i32.add oops)))\n")
    done = stockade("run", str(module))
    assert done.returncode == 126
    assert done.stderr == (b"stockade: bad.wat: invalid WAT: line 3, column 13: unknown "
                           b"operator or unexpected token (near `(i32.add oops)))`)\n")


def test_strict_writable_dir_without_quotas_is_refused_up_front(tmp_path: Path) -> None:
    done = stockade("run", "--profile", "strict", "--dir", f"{tmp_path}:/out:rw",
                    str(guest("hello.wasm")))
    assert done.returncode == 125
    assert b"no new files (max_files 0) and no bytes written (disk_quota 0)" in done.stderr
    granted = stockade("run", "--profile", "strict", "--max-files", "2", "--disk-quota", "1MiB",
                       "--dir", f"{tmp_path}:/out:rw", str(guest("hello.wasm")))
    assert granted.returncode == 0, granted.stderr
