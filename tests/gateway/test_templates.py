"""`stockade new --lang wat|c|python`: each starter, served by a real `stockade serve`,
answers a real request, and uses the GREETING its manifest sets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import stockade
from .conftest import Gateway, gateway_env


def serve(directory: Path, cache: Path) -> Gateway:
    return Gateway(directory / "stockade.toml", gateway_env(cache, directory / "state"),
                   ("--workers", "1"))


def regreet(directory: Path, greeting: str) -> None:
    manifest = directory / "stockade.toml"
    text = manifest.read_text()
    assert 'GREETING = "Hello"' in text
    manifest.write_text(text.replace('GREETING = "Hello"', f'GREETING = "{greeting}"'))


def test_wat_starter_uses_its_greeting(tmp_path: Path, shared_cache: Path) -> None:
    assert stockade("new", "--lang", "wat", str(tmp_path)).returncode == 0
    regreet(tmp_path, "Howdy")
    gateway = serve(tmp_path, shared_cache)
    try:
        assert gateway.client.get("/hello").text == "Howdy from Stockade!\n"
    finally:
        gateway.stop()


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed")
def test_c_starter_is_built_and_served(tmp_path: Path, shared_cache: Path) -> None:
    created = stockade("new", "--lang", "c", str(tmp_path))
    assert created.returncode == 0, created.stderr
    assert b"built " in created.stdout and (tmp_path / "hello.wasm").exists()
    regreet(tmp_path, "Hej")
    gateway = serve(tmp_path, shared_cache)
    try:
        response = gateway.client.get("/hello", params={"name": "you"})
        assert (response.status_code, response.text) == (200, "Hej, you!\n")
        gateway.wait_for_log(r"\] stderr: hello: GET for you")
    finally:
        gateway.stop()


def test_c_starter_without_a_compiler_says_what_to_install(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "stockade", "new", "--lang", "c",
                           str(tmp_path)], capture_output=True, timeout=60,
                          env={**os.environ, "PATH": str(tmp_path / "empty")})
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().startswith("warning: clang not found: install clang")
    assert (tmp_path / "hello.c").exists() and not (tmp_path / "hello.wasm").exists()


def test_python_starter_answers_json(tmp_path: Path, shared_cache: Path,
                                     python_wasm: Path) -> None:
    created = stockade("new", "--lang", "python", "--python-wasm", str(python_wasm),
                       str(tmp_path))
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "app" / "handler.py").exists()
    regreet(tmp_path, "Ahoy")
    gateway = serve(tmp_path, shared_cache)
    try:
        response = gateway.client.post("/hello/items?x=1", json={"n": 1})
        assert response.status_code == 200, response.text
        assert response.json() == {"greeting": "Ahoy", "method": "POST", "path": "/items",
                                   "query": "x=1", "received": {"n": 1}}
        bad = gateway.client.post("/hello", content=b"{not json")
        assert bad.status_code == 400 and bad.json() == {"error": "the body is not JSON"}
        gateway.wait_for_log(r"\] stderr: handler: POST /items")
    finally:
        gateway.stop()


def test_python_starter_refuses_a_missing_interpreter(tmp_path: Path) -> None:
    refused = stockade("new", "--lang", "python", "--python-wasm", str(tmp_path / "nope.wasm"),
                       str(tmp_path / "app"))
    assert refused.returncode == 125 and b"no such file" in refused.stderr
    assert not (tmp_path / "app").exists()
