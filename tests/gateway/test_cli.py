"""`stockade new` and `stockade serve` from the command line."""

from __future__ import annotations

from pathlib import Path

import httpx

from ..conftest import stockade
from .conftest import Gateway, gateway_env

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_new_writes_the_example_and_refuses_to_overwrite(tmp_path: Path) -> None:
    created = stockade("new", str(tmp_path / "app"))
    assert created.returncode == 0, created.stderr
    for name in ("stockade.toml", "hello.wat"):
        assert (tmp_path / "app" / name).read_text() == (EXAMPLES / name).read_text()
    again = stockade("new", str(tmp_path / "app"))
    assert again.returncode == 125 and b"--force" in again.stderr


def test_the_starter_serves_hello(tmp_path: Path, shared_cache: Path) -> None:
    stockade("new", str(tmp_path))
    gateway = Gateway(tmp_path / "stockade.toml", gateway_env(shared_cache, tmp_path / "s"),
                      ("--workers", "1"))
    try:
        assert httpx.get(f"{gateway.url}/hello").text == "Hello from Stockade!\n"
    finally:
        gateway.stop()


def test_serve_reports_a_bad_manifest_in_one_line(tmp_path: Path) -> None:
    missing = stockade("serve", "-c", str(tmp_path / "nope.toml"))
    assert missing.returncode == 125
    assert missing.stderr.decode().strip() == (
        f"stockade: {tmp_path / 'nope.toml'}: manifest not found (create one with `stockade new`)")
    (tmp_path / "stockade.toml").write_text(
        '[[function]]\nname = "f"\nroute = "/f"\nmodule = "missing.wasm"\n')
    absent = stockade("serve", "-c", str(tmp_path / "stockade.toml"))
    assert absent.returncode == 127 and b"function f: " in absent.stderr
    assert b"Traceback" not in absent.stderr
