"""Vouching for `.cwasm` files: an isolated worker holds only its scope's AoT key, so its
parent checks a `.cwasm` under this host's key and hands the worker the digest of exactly
those bytes. A new sealed file is handed to the running worker (no restart); the digests
a sandbox keeps, and a worker holds, are bounded; tampered bytes stay refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from stockade import Outcome, Policy
from stockade.isolate import IsolatedSandbox
from stockade.isolate import process as isolated
from tests.conftest import guest, stockade

SOURCES = ("hello.wasm", "trap.wasm", "divzero.wasm")


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """`.cwasm` files this host sealed (strict profile), one per source."""
    where = tmp_path_factory.mktemp("sealed")
    files = []
    for name in SOURCES:
        out = where / Path(name).with_suffix(".cwasm").name
        done = stockade("compile", str(guest(name)), "-o", str(out), "--profile", "strict")
        assert done.returncode == 0, done.stderr
        files.append(out)
    return files


def _policy() -> Policy:
    return Policy.from_profile("strict").with_capabilities(allow_precompiled=True)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _loaded(sandbox: IsolatedSandbox, path: Path) -> int:
    """Run `path`; assert the worker loaded it (not refused); the worker's pid."""
    result = sandbox.run(path)
    assert result.outcome is not Outcome.DENIED, result.message
    assert result.outcome is (Outcome.EXITED if path.stem == "hello" else Outcome.TRAP)
    pid = sandbox.worker_pid
    assert pid is not None
    return pid


def test_a_new_sealed_file_does_not_restart_the_worker(sealed: list[Path]) -> None:
    with IsolatedSandbox(_policy()) as sandbox:
        pids = {_loaded(sandbox, path) for path in sealed}
        assert len(pids) == 1
        assert sandbox.vouched == {_digest(path) for path in sealed}


def test_the_vouched_digests_are_bounded(sealed: list[Path],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolated, "_MAX_VOUCHED", 2)
    first, second, third = sealed
    with IsolatedSandbox(_policy()) as sandbox:
        pid = _loaded(sandbox, first)
        assert _loaded(sandbox, second) == pid
        # A third would take the worker past the bound: a new one starts with the two
        # most recent, and the oldest is forgotten.
        renewed = _loaded(sandbox, third)
        assert renewed != pid
        assert sandbox.vouched == {_digest(second), _digest(third)}
        # The forgotten one is vouched for again when it runs again.
        assert _loaded(sandbox, first) != renewed
        assert sandbox.vouched == {_digest(third), _digest(first)}
        assert len(sandbox.vouched) <= 2


def test_tampered_bytes_stay_refused_by_a_worker_told_of_others(sealed: list[Path],
                                                                 tmp_path: Path) -> None:
    patched = tmp_path / "patched.cwasm"
    data = bytearray(sealed[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    patched.write_bytes(bytes(data))
    with IsolatedSandbox(_policy()) as sandbox:
        pid = _loaded(sandbox, sealed[1])
        result = sandbox.run(patched)
        assert result.outcome is Outcome.DENIED
        assert "MAC does not verify" in result.message
        assert _digest(patched) not in sandbox.vouched
        assert _loaded(sandbox, sealed[0]) == pid
