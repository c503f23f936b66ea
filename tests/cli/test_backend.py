"""`stockade run` on the C-API backend: no wasmtime-py on its path, the same results.

The backend choice is `stockade.sandbox.backend`; `STOCKADE_BACKEND=capi|wasmtime` forces
one side, so the same run can be compared on both.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stockade.policy import DirGrant, Policy, profile
from stockade.policy.model import Trust
from stockade.sandbox.backend import capi_refusal, use_capi
from tests.conftest import STOCKADE, guest

# Figures that measure the run (time, fuel through host calls of different shapes, which
# host calls were counted by name), not what it did.
_MEASURED = {"wall_ms", "cpu_ms", "fuel_consumed", "hostcalls"}


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_import_stockade_cli_does_not_load_wasmtime() -> None:
    loaded = _python("import sys, stockade, stockade.cli, stockade.cli.run\n"
                     "print(sorted(m for m in sys.modules if m.split('.')[0] == 'wasmtime'))")
    assert loaded == "[]"


def test_the_package_root_still_exports_its_names() -> None:
    # Lazy: the names resolve on first use (and only then import wasmtime-py).
    assert _python("import stockade\nprint(stockade.Sandbox.__name__, "
                   "stockade.Policy.__name__, stockade.SandboxPool.__name__)") == \
        "Sandbox Policy SandboxPool"


def _run_and_list_wasmtime(*args: str, backend: str | None = None,
                           package: str = "wasmtime") -> tuple[int, str, str]:
    """Run `stockade run ARGS` in a fresh interpreter; (exit code, stdout, the modules of
    `package` loaded by the time it exited)."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('LOADED', sorted(m for m in sys.modules "
            f"if m.split('.')[0] == {package!r}), file=sys.stderr))\n"
            "from stockade.cli import main\n"
            f"main({['run', *args]!r})\n")
    env = dict(os.environ)
    if backend is not None:
        env["STOCKADE_BACKEND"] = backend
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, stdin=subprocess.DEVNULL, env=env)
    marker = [line for line in proc.stderr.splitlines() if line.startswith("LOADED")]
    assert marker, proc.stderr
    return proc.returncode, proc.stdout, marker[-1].removeprefix("LOADED ")


@pytest.mark.parametrize("runs", [1, 2], ids=["compiling", "from-cache"])
def test_run_hello_does_not_import_wasmtime(runs: int) -> None:
    # The first run compiles (through the C API) and seals into the cache; the second
    # maps the cached .cwasm. Neither imports wasmtime-py.
    for _ in range(runs):
        code, out, loaded = _run_and_list_wasmtime(str(guest("hello.wasm")), "world")
    assert (code, loaded) == (0, "[]")
    assert out == "Hello from a Stockade sandbox!\narg 1: world\n"


def test_a_metered_run_does_not_import_wasmtime(tmp_path: Path) -> None:
    # Granted and scratch directories with their quotas: metered host calls, on the C API.
    code, _, loaded = _run_and_list_wasmtime("--dir", f"{tmp_path}:/out:rw", "--scratch", "/s",
                                             "--disk-quota", "1MiB", str(guest("diskfill.wasm")))
    assert (code, loaded) == (153, "[]")
    assert (tmp_path / "fill.bin").stat().st_size == 1024**2


def test_a_plain_run_command_line_does_not_import_click() -> None:
    code, _, loaded = _run_and_list_wasmtime("--json", "--timeout", "5s",
                                             str(guest("hello.wasm")), package="click")
    assert (code, loaded) == (0, "[]")
    code, _, loaded = _run_and_list_wasmtime("--profile", "bogus", str(guest("hello.wasm")),
                                             package="click")
    assert code == 125 and "'click'" in loaded  # click reports what is wrong


def test_telemetry_file_is_written_without_wasmtime_or_the_sdk(tmp_path: Path) -> None:
    code, _, loaded = _run_and_list_wasmtime(str(guest("hello.wasm")))
    assert (code, loaded) == (0, "[]")
    state = Path(os.environ["STOCKADE_STATE_DIR"])
    records = [p for p in state.rglob("*") if p.is_file() and "telemetry" in p.name]
    assert records and any(p.stat().st_size for p in records)


def test_forcing_wasmtime_py_loads_it() -> None:
    # The check above can fail: the same probe sees wasmtime-py when it is used.
    code, _, loaded = _run_and_list_wasmtime(str(guest("hello.wasm")), backend="wasmtime")
    assert code == 0 and "'wasmtime'" in loaded


def _result(backend: str, args: list[str], stdin: bytes = b"") -> tuple[int, dict[str, Any]]:
    env = {**os.environ, "STOCKADE_BACKEND": backend}
    proc = subprocess.run([*STOCKADE, "run", "--json", *args], input=stdin,
                          capture_output=True, timeout=120, check=False, env=env)
    return proc.returncode, json.loads(proc.stdout)


def _comparable(result: dict[str, Any]) -> dict[str, Any]:
    usage = {k: v for k, v in result["usage"].items() if k not in _MEASURED}
    return {**result, "usage": usage}


@pytest.mark.parametrize("args", [
    ["hello.wasm", "a", "b"],
    ["--env", "GREETING=hi", "hello.wasm"],
    ["exitcode.wasm", "42"],
    ["trap.wasm"],
    ["recurse.wasm"],
    ["--timeout", "300ms", "--fuel", "unlimited", "spin.wasm"],
    ["--timeout", "500ms", "sleeper.wasm", "5"],
    ["--fuel", "100000", "spin.wasm"],
    ["--max-memory", "16MiB", "memhog.wasm"],
    ["--max-output", "64KiB", "flood.wasm"],
    ["--max-output", "64KiB", "flood.wasm", "stderr"],
    ["needs_sockets.wasm"],
    ["needs_env.wasm"],
], ids=lambda args: " ".join(args))
def test_both_backends_give_the_same_result(args: list[str]) -> None:
    args = [str(guest(a)) if a.endswith(".wasm") else a for a in args]
    capi_code, capi = _result("capi", args, stdin=b"in\n")
    py_code, py = _result("wasmtime", args, stdin=b"in\n")
    assert capi_code == py_code
    assert _comparable(capi) == _comparable(py)


@pytest.mark.parametrize("args", [
    ["--dir", "{d}:/out:rw", "--max-files", "50", "filespam.wasm"],
    ["--dir", "{d}:/out:rw", "--disk-quota", "2MiB", "diskfill.wasm"],
    ["--profile", "strict", "--isolate", "none", "--dir", "{d}:/data", "probe.wasm", "/data/f",
     "/data/none"],
    # The strict profile's cap of 10000 random_get calls.
    ["--profile", "strict", "--isolate", "none", "attacks/entropy_flood.wasm", "20000", "16"],
    ["--profile", "strict", "--isolate", "none", "hello.wasm", "a"],
    ["--profile", "strict", "--isolate", "none", "--fuel", "100000", "spin.wasm"],
    ["--profile", "strict", "--isolate", "none", "--max-output", "64KiB", "flood.wasm"],
    ["--dir", "{d}:/data", "probe.wasm", "/data/f", "/etc/passwd"],
    ["--scratch", "/scratch", "attacks/escape.wasm", "/scratch"],
    ["--scratch", "/scratch", "--max-files", "100", "attacks/inode_flood.wasm", "2000",
     "/scratch", "10"],
], ids=lambda args: " ".join(args))
def test_both_backends_meter_directories_alike(tmp_path: Path, args: list[str]) -> None:
    # Granted directories, their quotas, scratch and the strict profile's per-call caps
    # run on the C API (`run_metered`): the same result and the same files as wasmtime-py.
    runs = {}
    for backend in ("capi", "wasmtime"):
        where = tmp_path / backend
        where.mkdir()
        (where / "f").write_text("x")
        argv = [str(guest(a)) if a.endswith(".wasm") else a.replace("{d}", str(where))
                for a in args]
        runs[backend] = _result(backend, argv)
    (capi_code, capi), (py_code, py) = runs["capi"], runs["wasmtime"]
    assert capi_code == py_code
    assert _comparable(capi) == _comparable(py)
    assert _tree(tmp_path / "capi") == _tree(tmp_path / "wasmtime")


WAT_SOURCES = Path(__file__).resolve().parents[2] / "guests"


@pytest.mark.parametrize("source", ["trap.wat", "needs_env.wat", "oob.wat", "broken.wat"])
def test_wat_runs_alike_on_both_backends(tmp_path: Path, source: str) -> None:
    # WAT text is compiled by the C API's wat2wasm: the same module, digest and result;
    # invalid text gets the same one-line error.
    module = tmp_path / source
    module.write_text("(module (func $f (i32.add)) (oops))\n" if source == "broken.wat"
                      else (WAT_SOURCES / source).read_text())
    capi_code, capi = _result("capi", [str(module)])
    py_code, py = _result("wasmtime", [str(module)])
    assert capi_code == py_code
    if "usage" in py:
        assert _comparable(capi) == _comparable(py)
    else:  # an error object: no run
        assert capi == py
    code, _, loaded = _run_and_list_wasmtime(str(module))
    if source == "trap.wat":  # a .wat that loads and runs: no wasmtime-py on the path
        assert (code, loaded) == (py_code, "[]")


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A key pair and hello.wasm signed with it, tampered and unsigned."""
    base = tmp_path_factory.mktemp("signed")
    done = subprocess.run([*STOCKADE, "keygen", str(base / "signer")], capture_output=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*STOCKADE, "sign", "--key", str(base / "signer"),
                           str(guest("hello.wasm")), "-o", str(base / "signed.wasm")],
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    tampered = bytearray((base / "signed.wasm").read_bytes())
    tampered[-3] ^= 0x01  # covered by the signature
    (base / "tampered.wasm").write_bytes(bytes(tampered))
    return {"key": base / "signer.pub", "signed": base / "signed.wasm",
            "tampered": base / "tampered.wasm", "unsigned": guest("hello.wasm")}


@pytest.mark.parametrize("which", ["signed", "tampered", "unsigned"])
def test_signatures_are_checked_alike_on_both_backends(signed: dict[str, Path],
                                                       which: str) -> None:
    args = ["--trust-key", str(signed["key"]), str(signed[which]), "x"]
    capi_code, capi = _result("capi", args)
    py_code, py = _result("wasmtime", args)
    assert capi_code == py_code == (0 if which == "signed" else 126)
    assert _comparable(capi) == _comparable(py)


def _tree(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), 0 if p.is_dir() else p.stat().st_size)
                  for p in root.rglob("*"))


def test_the_choice() -> None:
    hello = guest("hello.wasm")
    default = profile("default")
    assert capi_refusal(default, hello) is None
    assert use_capi(default, hello, "none")
    assert use_capi(default, hello, "process")  # the isolated worker wraps it too
    granted = default.with_capabilities(dirs=(DirGrant.parse("/tmp:/tmp:ro"),))
    assert capi_refusal(granted, hello) is None  # metered on the C API
    assert capi_refusal(default.with_capabilities(scratch="/s"), hello) is None
    assert capi_refusal(profile("strict"), hello) is None  # per-call caps, metered
    assert capi_refusal(default, Path("m.wat")) is None  # wat2wasm on the C API
    signing = dataclasses.replace(default, trust=Trust(require_signature=True))
    assert capi_refusal(signing, hello) is None  # the gate's verified bytes
    assert capi_refusal(default, Path("m.cwasm")) is not None
    assert isinstance(default, Policy)


def test_forced_capi_names_why_it_cannot(tmp_path: Path) -> None:
    env = {**os.environ, "STOCKADE_BACKEND": "capi"}
    proc = subprocess.run([*STOCKADE, "run", "--isolate", "process", "--max-memory", "5GiB",
                           str(guest("hello.wasm"))], capture_output=True, timeout=120,
                          check=False, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 125
    assert b"C-API pool" in proc.stderr and b"Traceback" not in proc.stderr
    bad = {**os.environ, "STOCKADE_BACKEND": "nope"}
    proc = subprocess.run([*STOCKADE, "run", str(guest("hello.wasm"))], capture_output=True,
                          timeout=120, check=False, env=bad, stdin=subprocess.DEVNULL)
    assert proc.returncode == 125 and b"STOCKADE_BACKEND" in proc.stderr


def _capi_run(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "STOCKADE_BACKEND": "capi"}
    if cache is not None:
        env["STOCKADE_CACHE_DIR"] = str(cache)
    return subprocess.run([*STOCKADE, "run", "--json", *args], capture_output=True,
                          timeout=120, check=False, env=env, stdin=subprocess.DEVNULL)


def test_a_cwasm_named_wasm_is_refused_on_the_c_api(tmp_path: Path) -> None:
    # Native code under a .wasm name: the C-API loader takes only \0asm binaries, so it
    # reaches the standard loader, which refuses a .cwasm without --allow-precompiled.
    cwasm = tmp_path / "hello.cwasm"
    done = subprocess.run([*STOCKADE, "compile", str(guest("hello.wasm")), "-o", str(cwasm)],
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    disguised = tmp_path / "hello.wasm"
    disguised.write_bytes(cwasm.read_bytes())
    proc = _capi_run(str(disguised))
    assert proc.returncode == 126
    assert json.loads(proc.stdout)["outcome"] == "denied"


def test_a_forged_cache_entry_is_refused_on_the_c_api(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert _capi_run(str(guest("hello.wasm")), cache=cache).returncode == 0
    entries = list(cache.glob("*/*.cwasm"))
    assert len(entries) == 1
    entry = entries[0]
    forged = bytearray(entry.read_bytes())
    forged[len(forged) // 2] ^= 0xFF  # native code changed after it was sealed
    entry.write_bytes(bytes(forged))
    proc = _capi_run(str(guest("hello.wasm")), cache=cache)
    assert proc.returncode == 0 and json.loads(proc.stdout)["outcome"] == "exited"
    log = Path(os.environ["STOCKADE_STATE_DIR"]) / "audit.jsonl"
    kinds = [json.loads(line)["kind"] for line in log.read_text().splitlines()]
    assert "cache_refused" in kinds
    assert entry.read_bytes() != bytes(forged)  # compiled again and sealed
