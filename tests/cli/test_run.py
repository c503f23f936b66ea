"""`stockade run` as a real process: the contract's flags, exit codes and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import guest, stockade


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
