"""`stockade new` and `stockade serve` from the command line."""

from __future__ import annotations

import signal
import socket
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


def test_serve_refuses_an_unknown_telemetry_profile_before_starting(tmp_path: Path) -> None:
    # Both ways of naming one: each used to start the workers, which then died with it.
    (tmp_path / "stockade.toml").write_text(
        '[[function]]\nname = "f"\nroute = "/f"\nmodule = "missing.wasm"\n')
    flag = stockade("serve", "-c", str(tmp_path / "stockade.toml"), "--telemetry", "bogus")
    assert flag.returncode == 125 and b"'bogus' is not one of" in flag.stderr
    (tmp_path / "stockade.toml").write_text('[server]\ntelemetry = "bogus"\n')
    manifest = stockade("serve", "-c", str(tmp_path / "stockade.toml"))
    assert manifest.returncode == 125
    assert manifest.stderr.decode().strip().endswith(
        "server.telemetry: expected one of default, edge, cloud, on-prem, hybrid, off, "
        "not 'bogus'")


def test_serve_on_an_address_it_cannot_bind_is_one_line(tmp_path: Path) -> None:
    stockade("new", str(tmp_path))
    manifest = str(tmp_path / "stockade.toml")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for args in (("--port", port), ("--port", port, "--reuse-port"),
                     ("--host", "192.0.2.1"), ("--host", "no-such-host.invalid"),
                     ("--host", "::1x")):
            refused = stockade("serve", "-c", manifest, *args, timeout=60)
            lines = refused.stderr.decode().splitlines()
            assert refused.returncode == 125, (args, lines)
            assert len(lines) == 1 and lines[0].startswith("stockade: cannot listen on "), lines
            if args == ("--port", port):
                assert "address already in use" in lines[0]


def test_serve_logs_escape_names_from_modules(tmp_path: Path, shared_cache: Path) -> None:
    stockade("new", str(tmp_path))
    gateway = Gateway(tmp_path / "stockade.toml", gateway_env(shared_cache, tmp_path / "s"), ())
    try:
        # A reload naming a module whose file name would clear the screen and retitle it.
        manifest = tmp_path / "stockade.toml"
        manifest.write_text(manifest.read_text().replace(
            'module = "hello.wat"', 'module = "evil\\u001b[2J\\u001b]0;owned\\u0007.wasm"'))
        gateway.signal(signal.SIGHUP)
        gateway.wait_for_log(r"reload refused")
        log = gateway.log()
        assert "\x1b" not in log and "\x07" not in log
        assert "evil\\x1b[2J\\x1b]0;owned\\x07.wasm" in log
    finally:
        gateway.stop()


def test_serve_checks_its_flags_as_the_manifest_keys(tmp_path: Path) -> None:
    """`--host ''` listened on every interface (and announced `http://:PORT/`), while
    `[server] host = ""` was refused."""
    stockade("new", str(tmp_path))
    manifest = str(tmp_path / "stockade.toml")
    for host in ("", " ", "a\tb"):
        refused = stockade("serve", "-c", manifest, "--port", "0", "--host", host,
                           timeout=60)
        lines = refused.stderr.decode().splitlines()
        assert refused.returncode == 125, (host, lines)
        assert len(lines) == 1 and "expected a host name or an IP address" in lines[0], lines
