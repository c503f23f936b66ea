"""`inspect`, `advise` and `verify` read `oci://REF` the way `run` does: from the local store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import guest, stockade

REF = "localhost/inspected:1"


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """hello.wasm built into a store of this test's own (no registry: run reads the store)."""
    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(tmp_path / "cache"))
    done = stockade("oci", "build", str(guest("hello.wasm")), "--tag", REF)
    assert done.returncode == 0, done.stderr
    assert stockade("run", f"oci://{REF}", "--", "x").returncode == 0
    return f"oci://{REF}"


def test_inspect_reads_an_image_from_the_store(built: str) -> None:
    done = stockade("inspect", "--json", built)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["sha256"] == __import__("hashlib").sha256(
        guest("hello.wasm").read_bytes()).hexdigest()
    text = stockade("inspect", built)
    assert text.returncode == 0 and built.encode() in text.stdout


def test_advise_reads_an_image_from_the_store(built: str) -> None:
    done = stockade("advise", "--json", "--module", built)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)["needs"]["module"]
    assert facts["name"] == built and facts["runs_as_is"]


def test_an_image_absent_from_store_and_registry_is_not_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(tmp_path / "cache"))
    absent = "oci://127.0.0.1:9/absent:1"  # the discard port: nothing answers
    ran = stockade("run", absent)
    for done in (stockade("inspect", absent), stockade("advise", "--module", absent)):
        assert done.returncode == ran.returncode != 0, done.stderr
        assert b"Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
