"""Bad input to any command is one line on stderr and the contract's exit code: a path
of the wrong kind (a directory, a file, a FIFO, an empty name), a value out of range or of
the wrong type, an unknown flag or a missing argument. Never click's usage block over
three lines (Usage:, Try, Error:), never a traceback; `--help` is unchanged."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ..conftest import STOCKADE, guest, stockade


def one_line(done: subprocess.CompletedProcess[bytes], code: int, *words: str) -> str:
    """The one line of a refusal exiting `code`, holding `words`."""
    err = done.stderr.decode(errors="replace")
    assert done.returncode == code, err[-2000:]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-2000:]
    assert err.startswith("stockade: ") and "Usage:" not in err and "Error:" not in err, err
    for word in words:
        assert word in err, err
    return err


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A directory `d`, a regular file `f` and a FIFO `p` under tmp_path."""
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x\n")
    os.mkfifo(tmp_path / "p")
    return tmp_path


# (command line with D for the directory, F for the file; exit code; words of the line)
DIRECTORY_FOR_A_FILE = {
    "check --policy": (["check", "--no-host", "--policy", "D"], 125, ["--policy", "directory"]),
    "check --manifest": (["check", "--no-host", "--manifest", "D"], 125,
                         ["--manifest", "directory"]),
    "serve -c": (["serve", "-c", "D"], 125, ["--config", "directory"]),
    "serve --config=": (["serve", "--config=D"], 125, ["--config", "directory"]),
    "audit verify": (["audit", "verify", "D"], 125, ["directory"]),
    "oci build": (["oci", "build", "D", "--tag", "localhost/x:1"], 126,
                  ["not a regular file"]),
    "oci sign --key": (["oci", "sign", "--key", "D", "localhost/x:1"], 125,
                       ["--key", "directory"]),
    "run --policy": (["run", "--policy", "D", "HELLO"], 125, ["--policy", "directory"]),
    "python --policy": (["python", "--policy", "D", "-c", "pass"], 125,
                        ["--policy", "directory"]),
    "breaker list -c": (["breaker", "list", "-c", "D"], 125, ["--config", "directory"]),
    "breaker reset --manifest": (["breaker", "reset", "--all", "--manifest", "D"], 125,
                                 ["--config", "directory"]),
    "advise --results": (["advise", "--no-interactive", "--results", "D"], 125,
                         ["--results", "directory"]),
    "new --python-wasm": (["new", "--lang", "python", "--python-wasm", "D", "NEWDIR"], 125,
                          ["--python-wasm", "directory"]),
}

FILE_FOR_A_DIRECTORY = {
    "new": (["new", "F"], 125, ["not a directory"]),
    "attack --guests": (["attack", "--guests", "F", "--list"], 125,
                        ["--guests", "not a directory"]),
    "bench --out": (["bench", "--build", "D", "--out", "F"], 125,
                    ["--out", "not a directory"]),
    "bench --build": (["bench", "--build", "F"], 125, ["--build", "not a directory"]),
    "advise --build": (["advise", "--no-interactive", "--probe", "--build", "F"], 125,
                       ["--build", "not a directory"]),
}


def _words(args: list[str], place: Path) -> list[str]:
    named = {"D": str(place / "d"), "F": str(place / "f"), "P": str(place / "p"),
             "HELLO": str(guest("hello.wasm")), "NEWDIR": str(place / "new")}
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        out.append(f"{key}={named.get(value, value)}" if eq else named.get(arg, arg))
    return out


@pytest.mark.parametrize("case", sorted(DIRECTORY_FOR_A_FILE))
def test_a_directory_where_a_file_is_expected_is_one_line(place: Path, case: str) -> None:
    args, code, words = DIRECTORY_FOR_A_FILE[case]
    one_line(stockade(*_words(args, place), timeout=60), code, *words)


@pytest.mark.parametrize("case", sorted(FILE_FOR_A_DIRECTORY))
def test_a_file_where_a_directory_is_expected_is_one_line(place: Path, case: str) -> None:
    args, code, words = FILE_FOR_A_DIRECTORY[case]
    one_line(stockade(*_words(args, place), timeout=60), code, *words)


def test_a_directory_refused_with_json_is_one_json_object_too(place: Path) -> None:
    done = stockade("check", "--json", "--no-host", "--policy", str(place / "d"))
    line = one_line(done, 125, "--policy")
    assert json.loads(done.stdout) == {"error": line.removeprefix("stockade: ").strip(),
                                       "exit_code": 125}


@pytest.mark.parametrize("command", [["oci", "build"], ["check", "--no-host", "--module"]])
def test_a_module_path_is_read_as_run_reads_it(place: Path, command: list[str]) -> None:
    tag = ["--tag", "localhost/x:1"] if command[0] == "oci" else []
    for name, code, words in (("d", 126, "not a regular file"), ("p", 126, "not a regular file"),
                              ("absent.wasm", 127, "no such module file")):
        path = str(place / name)
        done = stockade(*command, path, *tag, timeout=30)
        err = one_line(done, code, words)
        assert err == stockade("run", path, timeout=30).stderr.decode()  # run's words


# Every command that takes a module: an empty name is a module not found (127), as a
# missing file is; Path('') is '.', a directory, which `run` used to call 126.
EMPTY_MODULE = {
    "run": ["run", ""],
    "run --json": ["run", "--json", ""],
    "compile": ["compile", ""],
    "inspect": ["inspect", ""],
    "check --module": ["check", "--no-host", "--module", ""],
    "oci build": ["oci", "build", "", "--tag", "localhost/x:1"],
    "sign": ["sign", "--key", "KEY", "-o", "OUT", ""],
    "verify": ["verify", "--key", "KEY", ""],
}


@pytest.mark.parametrize("case", sorted(EMPTY_MODULE))
def test_an_empty_module_name_is_not_found(tmp_path: Path, case: str) -> None:
    from stockade.trust.keys import SecretKey

    secret = SecretKey(bytes([7]) * 32)
    (tmp_path / "k").write_bytes(secret.pem())
    (tmp_path / "k.pub").write_bytes(secret.public.pem())
    named = {"KEY": str(tmp_path / ("k.pub" if case == "verify" else "k")),
             "OUT": str(tmp_path / "out.wasm")}
    done = stockade(*[named.get(arg, arg) for arg in EMPTY_MODULE[case]])
    one_line(done, 127, "no such module file")
    if case == "run --json":
        assert json.loads(done.stdout)["exit_code"] == 127


def test_run_and_compile_agree_on_an_empty_name() -> None:
    run, compiled = stockade("run", ""), stockade("compile", "")
    assert run.returncode == compiled.returncode == 127
    assert run.stderr == compiled.stderr


# Paths that are options (not modules): an empty name names nothing, one line, 125.
EMPTY_PATH = {
    "run --policy": ["run", "--policy", "", "HELLO"],
    "run --trust-key": ["run", "--trust-key", "", "HELLO"],
    "check --policy": ["check", "--no-host", "--policy", ""],
    "serve -c": ["serve", "-c", ""],
    "bench --out": ["bench", "--build", "D", "--out", ""],  # D: no guests, ends at once
    "verify --key": ["verify", "--key", "", "HELLO"],
    "oci verify --key": ["oci", "verify", "--key", "", "localhost/x:1"],
    "telemetry show --file": ["telemetry", "show", "--file", ""],
}


@pytest.mark.parametrize("case", sorted(EMPTY_PATH))
def test_an_empty_path_option_is_one_line(place: Path, case: str) -> None:
    args = _words(EMPTY_PATH[case], place)
    one_line(stockade(*args, timeout=60), 125, "''")


def test_new_of_an_empty_directory_name_writes_nothing_here(tmp_path: Path) -> None:
    # Path('') is '.': the starter was written into the current directory.
    here = tmp_path / "here"
    here.mkdir()
    done = subprocess.run([*STOCKADE, "new", ""], cwd=here, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60, check=False)
    one_line(done, 125, "''")
    assert os.listdir(here) == []


# Values click checks itself (ranges, types, choices): its words, on one line, 125.
BAD_VALUES = {
    "serve --workers 0": (["serve", "--workers", "0"], ["--workers", "0"]),
    "serve --workers 65": (["serve", "--workers", "65"], ["--workers", "65"]),
    "serve --workers x": (["serve", "--workers", "x"], ["--workers", "'x'"]),
    "serve --threads 0": (["serve", "--threads", "0"], ["--threads"]),
    "serve --threads -3": (["serve", "--threads=-3"], ["--threads", "-3"]),
    "serve --port 70000": (["serve", "--port", "70000"], ["--port", "70000"]),
    "serve --port -1": (["serve", "--port=-1"], ["--port", "-1"]),
    "serve --executor": (["serve", "--executor", "warp"], ["--executor", "'warp'"]),
    "advise --density 0": (["advise", "--density", "0"], ["--density"]),
    "advise --rps -1": (["advise", "--rps=-1"], ["--rps"]),
    "attack --isolate": (["attack", "--isolate", "vm", "--list"], ["--isolate", "'vm'"]),
    "run --profile": (["run", "--profile", "lax", "HELLO"], ["--profile", "'lax'"]),
    "compile --profile": (["compile", "--profile", "lax", "HELLO"], ["--profile"]),
    "new --lang": (["new", "--lang", "cobol", "NEWDIR"], ["--lang", "'cobol'"]),
    "telemetry show -n 0": (["telemetry", "show", "-n", "0"], ["--last"]),
    "oci build --format": (["oci", "build", "HELLO", "--tag", "localhost/x:1", "--format",
                            "tar"], ["--format", "'tar'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_a_bad_value_is_one_line_with_clicks_words(tmp_path: Path, case: str) -> None:
    args, words = BAD_VALUES[case]
    args = _words(args, tmp_path)
    err = one_line(stockade(*args, timeout=60), 125, *words)
    assert "--help" in err  # what to do: where the values allowed are listed


# Real usage errors keep click's wording and exit 125, on one line.
USAGE = {
    "run --bogus": (["run", "--bogus", "HELLO"], ["No such option", "--bogus"]),
    "run without MODULE": (["run"], ["Missing argument 'MODULE'"]),
    "serve --bogus": (["serve", "--bogus"], ["No such option", "--bogus"]),
    "inspect without MODULE": (["inspect"], ["Missing argument 'MODULE'"]),
    "oci build without --tag": (["oci", "build", "HELLO"], ["Missing option '--tag'"]),
    "unknown command": (["frobnicate"], ["No such command 'frobnicate'"]),
    "audit verify extra": (["audit", "verify", "a", "b"], ["unexpected extra argument"]),
    "serve --port without value": (["serve", "--port"], ["--port", "requires an argument"]),
}


@pytest.mark.parametrize("case", sorted(USAGE))
def test_a_usage_error_is_one_line(tmp_path: Path, case: str) -> None:
    args, words = USAGE[case]
    args = _words(args, tmp_path)
    one_line(stockade(*args, timeout=60), 125, *words)


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["run", "--help"],
                                  ["oci", "build", "-h"], ["audit", "verify", "--help"]],
                         ids=" ".join)
def test_help_is_unchanged(args: list[str]) -> None:
    done = stockade(*args)
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    assert done.stdout.startswith(b"Usage: stockade ")
    assert b"--help" in done.stdout


def test_a_group_without_a_command_shows_its_help() -> None:
    done = stockade("oci")
    assert b"Usage: stockade oci" in done.stdout + done.stderr
    assert b"Commands:" in done.stdout + done.stderr


def test_stdin_of_an_empty_name_says_so() -> None:
    # It said "--stdin : No such file or directory".
    one_line(stockade("run", "--stdin", "", str(guest("hello.wasm"))), 125, "--stdin ''")


def test_python_wasm_that_is_a_fifo_is_not_called_missing(place: Path) -> None:
    done = stockade("new", "--lang", "python", "--python-wasm", str(place / "p"),
                    str(place / "app"))
    one_line(done, 125, "--python-wasm", "not a regular file")
    assert not (place / "app").exists()


@pytest.mark.parametrize(("args", "code", "said"), [
    (("--timeout", "nan", "-c", "x"), 125, b"timeout"),
    (("/nonexistent/x.py",), 127, b"no such script"),
    # the script's guest path, granted again: the error named its temporary directory
    (("--dir", "/tmp:/work", "{script}"), 125, b"--dir /tmp:/work: /work is where"),
    (("--scratch", "/work/", "{script}"), 125, b"--scratch /work/: /work is where"),
])
def test_python_tells_a_bad_flag_or_script_before_it_finds_cpython(
        tmp_path: Path, args: tuple[str, ...], code: int, said: bytes) -> None:
    """`stockade python` fetched CPython (26 MB from PyPI) before it read its flags and
    script, and reported the fetch's failure instead of theirs (found by review). Here
    no CPython can be found: the flag's or script's error comes first."""
    script = tmp_path / "s.py"
    script.write_text("print(1)\n")
    args = tuple(arg.format(script=script) for arg in args)
    env = {**os.environ, "STOCKADE_PYTHON_WASM": str(tmp_path / "absent.wasm")}
    done = subprocess.run([*STOCKADE, "python", *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == code, done.stderr
    assert said in done.stderr and b"STOCKADE_PYTHON_WASM" not in done.stderr, done.stderr


LONG = "a" * 100_000  # a mistaken or hostile argument: a whole file pasted into a flag


@pytest.mark.parametrize(("args", "code"), [
    (["run", "--dir", f"/nonexistent/{LONG}:/x", "HELLO"], 125),
    (["run", "--env", LONG, "HELLO"], 125),
    (["run", "--policy", LONG, "HELLO"], 125),
    (["run", f"{LONG}.wasm"], 126),
    (["inspect", LONG], 126),
], ids=["run --dir", "run --env", "run --policy", "run MODULE", "inspect MODULE"])
def test_an_error_quoting_a_huge_argument_is_one_short_line(args: list[str], code: int) -> None:
    """Errors quote what they refuse: a 100 KB `--dir` made a 200 KB line (and its JSON
    object as much). The line keeps its start and its end (why), the middle left out."""
    hello = str(guest("hello.wasm"))
    words = [hello if word == "HELLO" else word for word in args]
    err = one_line(stockade(*words), code)
    assert len(err) < 1100 and "characters ...]" in err, err[:200]
    shown = stockade(*words[:1], "--json", *words[1:])
    assert len(shown.stdout) < 4000 and json.loads(shown.stdout)["exit_code"] == code
