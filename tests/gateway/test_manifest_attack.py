"""Hostile manifest values (found by review): refused when the manifest is loaded, with
one line naming the file and the key (exit 125 from `stockade check --manifest` and
`stockade serve`), never served into every request's 400/500 or a start-up traceback."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from stockade.errors import PolicyError
from stockade.gateway import load_manifest
from tests.conftest import refused, stockade

HUGE = "9" * 310
BASE = """
[[function]]
name = "hello"
route = "/hello"
module = "hello.wasm"
profile = "default"
"""
WHERE = "function[0] (hello)"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stockade.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("extra", "key"), [
    ('env = { X = "a\\u0000b" }', f"{WHERE}.env"),
    ('env = { "A\\u0000B" = "x" }', f"{WHERE}.env"),
    ('env = { "A=B" = "x" }', f"{WHERE}.env"),
    ('env = { "" = "x" }', f"{WHERE}.env"),
    ('env = { X = 1 }', f"{WHERE}.env"),
    ('env_allow = ["A\\u0000B"]', f"{WHERE}.env_allow"),
    ('env_allow = ["X=Y"]', f"{WHERE}.env_allow"),
    ('dirs = ["/tmp\\u0000x:/d"]', f"{WHERE}.dirs[0]"),
    ('dirs = ["/tmp:/d\\u0000"]', f"{WHERE}.dirs[0]"),
    ('tenant = ["a"]', f"{WHERE}.tenant"),
    ('tenant = 5', f"{WHERE}.tenant"),
    (f'max_body = "{HUGE}"', f"{WHERE}.max_body"),
    (f'max_response = "{HUGE}"', f"{WHERE}.max_response"),
    (f'[function.limits]\nmax_output = "{HUGE}"', f"{WHERE}.limits.max_output"),
    (f'[function.limits]\nmax_memory = "{2**64}"', f"{WHERE}.limits.max_memory"),
    (f"[function.limits]\nfuel = {2**64 + 5}", f"{WHERE}.limits.fuel"),
    # Emptied to lock the function down, the list meant any method.
    ("methods = []", f"{WHERE}.methods"),
    ("rate = inf", f"{WHERE}.rate"),
    ("rate = 1e-310", f"{WHERE}.rate"),  # the wait for its next request was infinite: 500
])
def test_function_values_are_checked_at_load(tmp_path: Path, extra: str, key: str) -> None:
    path = write(tmp_path, BASE + extra + "\n")
    with pytest.raises(PolicyError) as info:
        load_manifest(path)
    assert info.value.message.startswith(f"{path}: {key}: "), info.value.message


@pytest.mark.parametrize("module", ["hel\\u0000lo.wasm"])
def test_a_module_path_with_nul_is_refused(tmp_path: Path, module: str) -> None:
    path = write(tmp_path, BASE.replace('"hello.wasm"', f'"{module}"'))
    with pytest.raises(PolicyError, match=rf"{re.escape(WHERE)}.module: .*NUL"):
        load_manifest(path)


@pytest.mark.parametrize("route", ["/he\\u0000llo", "/he llo\\r\\n", "/a\\tb", "/x\\u007f",
                                   "/x/../y", "/./a", "/a/..;x", "/a//b"])
def test_a_route_no_request_can_reach_is_refused(tmp_path: Path, route: str) -> None:
    path = write(tmp_path, BASE.replace('"/hello"', f'"{route}"'))
    with pytest.raises(PolicyError, match=rf"{re.escape(WHERE)}.route: "):
        load_manifest(path)


@pytest.mark.parametrize(("server", "key"), [
    ('host = "x\\u0000"', "server.host"),
    ('host = "not a host"', "server.host"),
    (f'max_body = "{HUGE}"', "server.max_body"),
    (f'max_response = "{HUGE}"', "server.max_response"),
    (f'request_timeout = "{HUGE}"', "server.request_timeout"),
    (f'drain_timeout = "{HUGE}"', "server.drain_timeout"),
])
def test_server_values_are_checked_at_load(tmp_path: Path, server: str, key: str) -> None:
    path = write(tmp_path, f"[server]\n{server}\n" + BASE)
    with pytest.raises(PolicyError) as info:
        load_manifest(path)
    assert info.value.message.startswith(f"{path}: {key}: "), info.value.message


def test_an_infinite_tenant_rate_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[tenant.acme]\nrate = inf\n" + BASE + 'tenant = "acme"\n')
    with pytest.raises(PolicyError) as info:
        load_manifest(path)
    assert info.value.message.startswith(f"{path}: tenant.acme.rate: "), info.value.message


def test_serve_refuses_an_empty_methods_list_at_start(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 0\n" + BASE + "methods = []\n")
    refused(stockade("serve", "-c", str(path), "--workers", "1", timeout=60),
            f"{WHERE}.methods")


def test_ordinary_values_still_load(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    manifest = load_manifest(write(tmp_path, '[server]\nhost = "::1"\n' + BASE
                                   + 'env = { GREETING = "hi", "A.B" = "" }\n'
                                   + 'env_allow = ["LANG"]\ndirs = ["data:/data"]\n'))
    spec = manifest.functions[0]
    assert spec.policy.capabilities.env == (("GREETING", "hi"), ("A.B", ""))
    assert spec.policy.capabilities.dirs[0].host == tmp_path / "data"


def test_check_refuses_a_nul_in_env(tmp_path: Path) -> None:
    # It passed the checklist, then every request was a 400 blaming the client.
    path = write(tmp_path, BASE + 'env = { X = "a\\u0000b" }\n')
    refused(stockade("check", "--manifest", str(path), "--no-host", timeout=60),
            str(path), f"{WHERE}.env")


def test_check_refuses_a_list_as_tenant(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + 'tenant = ["a"]\n')
    refused(stockade("check", "--manifest", str(path), "--no-host", timeout=60),
            f"{WHERE}.tenant")


def test_serve_refuses_a_nul_in_the_host_at_start(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 0\nhost = "x\\u0000"\n' + BASE)
    refused(stockade("serve", "-c", str(path), "--workers", "1", timeout=60), "server.host")


def test_a_fifo_as_manifest_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "stockade.toml"
    os.mkfifo(fifo)
    refused(stockade("check", "--manifest", str(fifo), "--no-host", timeout=30),
            str(fifo), "regular file")
