"""`stockade run` as a real process: the contract's flags, exit codes and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import STOCKADE, guest, stockade


def test_hello_passes_output_through() -> None:
    proc = stockade("run", str(guest("hello.wasm")), "--", "world")
    assert proc.returncode == 0
    assert proc.stdout == b"Hello from a Stockade sandbox!\narg 1: world\n"
    assert proc.stderr == b""


def test_json_result_shape() -> None:
    proc = stockade("run", "--json", "--profile", "strict", str(guest("hello.wasm")))
    assert proc.returncode == 0
    result = json.loads(proc.stdout)
    assert set(result) >= {"module", "sha256", "outcome", "exit_code", "guest_exit_code",
                           "message", "stdout", "stderr", "stdout_truncated",
                           "stderr_truncated", "usage", "limits"}
    assert set(result["usage"]) >= {"wall_ms", "cpu_ms", "fuel_consumed", "peak_memory_bytes",
                                     "files_created", "bytes_written"}
    assert result["limits"]["fuel"] == 10**9
    assert result["limits"]["timeout_ms"] == 30_000
    assert result["limits"]["max_memory_bytes"] == 16 * 1024**2
    assert (result["module"], result["outcome"], result["exit_code"]) == ("hello.wasm", "exited", 0)


def test_stdin_from_file(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from a file\n")
    proc = stockade("run", "--stdin", str(tmp_path / "in.txt"), str(guest("hello.wasm")))
    assert proc.stdout.endswith(b"from a file\n")


@pytest.mark.parametrize("source", ["inherited", "dash", "fifo"])
def test_input_that_never_ends_is_bounded_by_the_timeout(tmp_path: Path, source: str) -> None:
    # Input is read whole before the guest starts: a writer that never closes (or a
    # FIFO nobody opens) held the run past its timeout, forever.
    flags = {"inherited": [], "dash": ["--stdin", "-"],
             "fifo": ["--stdin", str(tmp_path / "fifo")]}[source]
    os.mkfifo(tmp_path / "fifo")
    proc = subprocess.Popen([*STOCKADE, "run", "--json", "--timeout", "1s", *flags,
                             str(guest("hello.wasm"))], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"some input, then nothing\n")
        proc.stdin.flush()
        proc.wait(timeout=60)  # its input still open
    finally:
        proc.kill()
        out, err = proc.communicate()
    result = json.loads(out)
    assert (proc.returncode, result["outcome"]) == (124, "timeout"), err
    assert "standard input did not end within the timeout of 1s" in result["message"]
    assert result["limits"]["timeout_ms"] == 1000 and result["sha256"] is None


def test_a_fifo_without_a_timeout_waits_for_its_writer(tmp_path: Path) -> None:
    # Opened without blocking (so a deadline can bound the wait), a FIFO nobody had
    # opened yet read as empty input when there was no deadline.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def write_late() -> None:
        time.sleep(1.0)
        with open(fifo, "wb") as writer:
            writer.write(b"late data\n")

    writer = threading.Thread(target=write_late)
    writer.start()
    try:
        proc = stockade("run", "--timeout", "none", "--stdin", str(fifo),
                        str(guest("hello.wasm")), timeout=60)
    finally:
        writer.join(timeout=30)
    assert proc.returncode == 0 and proc.stdout.endswith(b"late data\n"), proc.stderr


def test_stdin_on_a_descriptor_past_1023_is_read(tmp_path: Path) -> None:
    # select() refuses descriptors past 1023 (a traceback): a parent that leaves many
    # open makes the input file's one of them.
    source = tmp_path / "in.txt"
    source.write_text("from a file\n")
    parent = ("import os, subprocess, sys\n"
              "held = [os.open('/dev/null', os.O_RDONLY) for _ in range(1100)]\n"
              "sys.exit(subprocess.run(sys.argv[1:], pass_fds=held).returncode)\n")
    proc = subprocess.run([sys.executable, "-c", parent, *STOCKADE, "run", "--timeout", "5s",
                           "--stdin", str(source), str(guest("hello.wasm"))],
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.endswith(b"from a file\n"), proc.stderr


def test_stdin_dash() -> None:
    proc = stockade("run", "--stdin", "-", str(guest("hello.wasm")), stdin=b"piped\n")
    assert proc.stdout.endswith(b"piped\n")


@pytest.mark.parametrize(("args", "code", "outcome"), [
    (["--timeout", "300ms", "--fuel", "unlimited", "spin.wasm"], 124, "timeout"),
    (["--timeout", "500ms", "sleeper.wasm", "--", "5"], 124, "timeout"),
    (["--fuel", "100000", "spin.wasm"], 124, "fuel_exhausted"),
    (["--max-memory", "16MiB", "memhog.wasm"], 137, "memory_limit"),
    (["--max-output", "64KiB", "flood.wasm"], 153, "output_limit"),
    (["trap.wasm"], 134, "trap"),
    (["needs_sockets.wasm"], 126, "denied"),
    (["needs_env.wasm"], 126, "denied"),
    (["exitcode.wasm", "--", "42"], 42, "exited"),
])
def test_limits_map_to_exit_codes(args: list[str], code: int, outcome: str) -> None:
    args = [str(guest(a)) if a.endswith(".wasm") else a for a in args]
    proc = stockade("run", "--json", *args)
    assert proc.returncode == code
    assert json.loads(proc.stdout)["outcome"] == outcome
    human = stockade("run", *args)
    assert human.returncode == code
    if outcome != "exited":
        assert human.stderr.decode().splitlines()[-1].startswith(f"stockade: {outcome}: ")


# One fd_write of SIZE bytes to stdout (and, given any argument, another to stderr),
# ignoring how much was written: a guest that never writes again.
ONE_WRITE = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $a (param i32 i32) (result i32)))
  (memory (export "memory") 80)
  (data (i32.const 0) "\\00\\01\\00\\00")
  (func $size (i32.store (i32.const 4) (i32.const SIZE)))
  (start $size)
  (func (export "_start")
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (drop (call $a (i32.const 16) (i32.const 20)))
    (if (i32.gt_u (i32.load (i32.const 16)) (i32.const 1))
      (then (drop (call $w (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))))))
"""


@pytest.mark.parametrize("how", ["none", "process", "metered"])
@pytest.mark.parametrize(("size", "cap", "streams", "cut"), [
    (384 * 1024, "100KiB", 1, "stdout"), (384 * 1024, "500KiB", 2, "stderr"),
    (384 * 1024, "100KiB", 2, "stdout"),
    (4 * 1024**2 + 100, "4096KiB", 1, "stdout"),  # room of exactly one call's most
])
def test_one_write_past_the_output_cap_is_an_output_limit(
        tmp_path: Path, how: str, size: int, cap: str, streams: int, cut: str) -> None:
    module = tmp_path / "one_write.wat"
    module.write_text(ONE_WRITE.replace("SIZE", str(size)))
    extra = ["both"] if streams == 2 else []
    flags = ["--dir", f"{tmp_path}:/out:rw"] if how == "metered" else ["--isolate", how]
    proc = stockade("run", "--json", *flags, "--max-output", cap, "--stdin", "none",
                    str(module), *extra)
    result = json.loads(proc.stdout)
    assert (proc.returncode, result["outcome"]) == (153, "output_limit"), proc.stderr
    limit = int(cap[:-3]) * 1024
    assert len(result["stdout"]) + len(result["stderr"]) == limit
    assert (result["stdout_truncated"], result["stderr_truncated"]) == (
        cut == "stdout", cut == "stderr")


def test_quota_flags(tmp_path: Path) -> None:
    proc = stockade("run", "--json", "--dir", f"{tmp_path}:/out:rw", "--disk-quota", "1MiB",
                    str(guest("diskfill.wasm")))
    assert proc.returncode == 153
    assert json.loads(proc.stdout)["outcome"] == "disk_quota"
    proc = stockade("run", "--json", "--dir", f"{tmp_path}:/out:rw", "--max-files", "5",
                    str(guest("filespam.wasm")))
    assert proc.returncode == 153
    assert json.loads(proc.stdout)["outcome"] == "file_quota"


def test_env_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANG", "C")
    monkeypatch.setenv("SECRET", "x")
    proc = stockade("run", "--env", "A=1", "--env-allow", "LANG", str(guest("probe.wasm")))
    assert sorted(proc.stdout.decode().splitlines()) == ["env A=1", "env LANG=C"]


def one_clean_line(proc: object) -> str:
    stderr = proc.stderr.decode()  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_missing_module(tmp_path: Path) -> None:
    proc = stockade("run", str(tmp_path / "nope.wasm"))
    assert proc.returncode == 127
    assert "no such module file" in one_clean_line(proc)


@pytest.mark.parametrize("content", [b"just some text\n", bytes(range(256)) * 64, b""])
def test_not_wasm(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.wasm"
    path.write_bytes(content)
    proc = stockade("run", str(path))
    assert proc.returncode == 126
    assert "WebAssembly" in one_clean_line(proc) or "empty" in one_clean_line(proc)


def test_truncated_module(tmp_path: Path) -> None:
    path = tmp_path / "cut.wasm"
    path.write_bytes(guest("hello.wasm").read_bytes()[:1000])
    proc = stockade("run", str(path))
    assert proc.returncode == 126
    assert "invalid WebAssembly" in one_clean_line(proc)


@pytest.mark.parametrize("isolate", ["none", "process"])
@pytest.mark.parametrize(("module", "words"), [
    ('(module (func (export "_start") (param i32)))', "`_start` takes or returns values"),
    ('(module (func (export "_start") (result i32) (i32.const 0)))', "`_start` takes or"),
    ('(module (memory (export "memory") 1 2 shared) (func (export "_start")))',
     "shared memory"),
])
def test_a_module_that_cannot_be_a_command_cannot_run(tmp_path: Path, isolate: str,
                                                      module: str, words: str) -> None:
    # Not a trap (134): nothing of the guest ran.
    path = tmp_path / "not_a_command.wat"
    path.write_text(module)
    proc = stockade("run", "--isolate", isolate, str(path))
    assert proc.returncode == 126, proc.stderr
    assert words in one_clean_line(proc)


# Each sock_* call on descriptors 0, 1, 3 and 99; exits with how many did not answer
# EBADF (8): no descriptor is a socket, whichever backend runs it.
NO_SOCKETS = """(module
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv"
    (func $recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send"
    (func $send (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_shutdown" (func $shutdown (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func $bad (param $errno i32) (result i32) (i32.ne (local.get $errno) (i32.const 8)))
  (func $each (param $fd i32) (result i32)
    (i32.add (i32.add (call $bad (call $accept (local.get $fd) (i32.const 0) (i32.const 64)))
                      (call $bad (call $recv (local.get $fd) (i32.const 0) (i32.const 1)
                                             (i32.const 0) (i32.const 64) (i32.const 68))))
             (i32.add (call $bad (call $send (local.get $fd) (i32.const 0) (i32.const 1)
                                             (i32.const 0) (i32.const 64)))
                      (call $bad (call $shutdown (local.get $fd) (i32.const 2))))))
  (func (export "_start")
    (call $exit (i32.add (i32.add (call $each (i32.const 0)) (call $each (i32.const 1)))
                         (i32.add (call $each (i32.const 3)) (call $each (i32.const 99)))))))
"""


@pytest.mark.parametrize("how", ["native", "isolated", "metered", "wasmtime-py"])
def test_the_socket_calls_answer_ebadf_on_every_backend(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    module = tmp_path / "no_sockets.wat"
    module.write_text(NO_SOCKETS)
    flags = {"native": [], "isolated": ["--isolate", "process"],
             "metered": ["--dir", f"{tmp_path}:/data:rw"], "wasmtime-py": []}[how]
    if how == "wasmtime-py":
        monkeypatch.setenv("STOCKADE_BACKEND", "wasmtime")
    proc = stockade("run", "--json", *flags, str(module))
    result = json.loads(proc.stdout)
    assert (proc.returncode, result["outcome"]) == (0, "exited"), result
    assert result["usage"]["hostcalls"].get("sock_recv") == 4, result["usage"]


@pytest.mark.parametrize("backend", ["auto", "wasmtime"])
def test_a_start_with_values_is_refused_before_its_start_section_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    # The start section runs at instantiation, with every grant: the refusal comes first.
    monkeypatch.setenv("STOCKADE_BACKEND", backend)
    out = tmp_path / "out"
    out.mkdir()
    module = tmp_path / "start_then_bad.wat"
    module.write_text("""(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "pwned")
  (func $plant (drop (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 5)
                               (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0)
                               (i32.const 64))))
  (start $plant)
  (func (export "_start") (param i32)))""")
    proc = stockade("run", "--dir", f"{out}:/out:rw", str(module))
    assert proc.returncode == 126, proc.stderr
    assert list(out.iterdir()) == []


def test_bad_signature() -> None:
    proc = stockade("run", str(guest("bad_signature.wasm")))
    assert proc.returncode == 126
    assert "fd_write" in one_clean_line(proc)


def test_broken_policy(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[limits]\ntimeout = 'soon'\n")
    proc = stockade("run", "--policy", str(path), str(guest("hello.wasm")))
    assert proc.returncode == 125
    assert "limits.timeout" in one_clean_line(proc)


@pytest.mark.parametrize("flags", [
    ["--timeout", "soon"], ["--max-memory", "lots"], ["--fuel", "-5"], ["--bogus"],
    ["--profile", "lenient"], ["--dir", ":rw"], ["--env", "NOEQUALS"],
    # Names the system refuses (ENAMETOOLONG) where a path is expected.
    ["--policy", "p" * 5000 + ".toml"], ["--trust-key", "k" * 5000], ["--stdin", "s" * 5000],
    ["--timeout", "2d"], ["--timeout", "10us"],
])
def test_bad_flag_values(flags: list[str]) -> None:
    proc = stockade("run", *flags, str(guest("hello.wasm")))
    assert proc.returncode == 125
    assert "Traceback" not in proc.stderr.decode()


def test_policy_file_and_flag_precedence(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('profile = "strict"\n[limits]\ntimeout = "9s"\n')
    proc = stockade("run", "--json", "--policy", str(path), "--timeout", "3s",
                    str(guest("hello.wasm")))
    limits = json.loads(proc.stdout)["limits"]
    assert limits["timeout_ms"] == 3000 and limits["max_memory_bytes"] == 16 * 1024**2


def test_compile_then_run_cwasm(tmp_path: Path) -> None:
    out = tmp_path / "hello.cwasm"
    proc = stockade("compile", str(guest("hello.wasm")), "-o", str(out))
    assert proc.returncode == 0 and out.exists()
    assert stockade("run", "--allow-precompiled", str(out)).stdout.startswith(b"Hello")
    refused = stockade("run", "--allow-precompiled", "--profile", "permissive", str(out))
    assert refused.returncode == 126
    assert "another engine configuration" in one_clean_line(refused)


def test_version_and_help() -> None:
    assert stockade("--version").stdout.decode().startswith("stockade ")
    text = stockade("run", "--help").stdout.decode()
    for flag in ("--profile", "--policy", "--fuel", "--timeout", "--max-memory", "--max-output",
                 "--dir", "--disk-quota", "--max-files", "--env", "--env-allow", "--stdin",
                 "--json"):
        assert flag in text


def test_a_run_without_a_timeout_says_so_once() -> None:
    # `--timeout none` under the default profile (no fuel): nothing would stop a guest
    # that spins, and nothing said so. One warning line before the run, and in --json.
    proc = stockade("run", "--timeout", "none", str(guest("hello.wasm")))
    assert proc.returncode == 0
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stockade: warning: no timeout: nothing "
                                                   "bounds"), lines
    proc = stockade("run", "--json", "--profile", "strict", "--timeout", "none",
                    str(guest("hello.wasm")))
    result = json.loads(proc.stdout)
    assert result["limits"]["timeout_ms"] is None
    assert len(result["warnings"]) == 1 and "fuel bounds" in result["warnings"][0]
    assert proc.stderr.decode().count("stockade: warning: ") == 1
    bounded = stockade("run", "--json", str(guest("hello.wasm")))
    assert "warnings" not in json.loads(bounded.stdout) and bounded.stderr == b""
