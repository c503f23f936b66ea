"""A worker's life around its signal handlers, and the supervisor's reload thread.

A replacement worker unblocked SIGHUP as its first step and set its handler only once
serving: a reload asked for meanwhile (or already pending when it started) killed it with
the default action, counted as a crash. A reload check that raised anything but a
Stockade error printed a bare traceback from its thread.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .conftest import Gateway, Start, gateway_env, module

MANIFEST = f"""
[server]
workers = 1
telemetry = "off"

[[function]]
name = "{{name}}"
route = "/{{name}}"
module = "{module("hello")}"
"""


def _children(pid: int) -> set[int]:
    """The children forked by `pid`'s main thread (the supervisor spawns from it)."""
    try:
        return {int(child) for child in
                Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except FileNotFoundError:
        return set()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _compiling(pid: int) -> bool:
    """Whether `pid` runs its compile child (`engine.compilechild`) now."""
    for child in _children(pid):
        try:
            if b"stockade.engine.compilechild" in Path(f"/proc/{child}/cmdline").read_bytes():
                return True
        except FileNotFoundError:
            pass
    return False


def _serves(gateway: Gateway, path: str, status: int, timeout: float = 30.0) -> None:
    """Wait until `path`, asked on a fresh connection, answers `status`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with httpx.Client(base_url=gateway.url, timeout=10.0) as fresh:
                if fresh.get(path).status_code == status:
                    return
        except httpx.HTTPError:
            pass  # a connection to the worker that just died
        assert time.monotonic() < deadline, gateway.log()
        time.sleep(0.05)


def test_a_fresh_worker_survives_sighup_from_its_first_instant(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST.format(name="hello"))
    supervisor = gateway.process.pid
    (worker,) = _children(supervisor)
    before = set(_children(supervisor))
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 30
    fresh: int | None = None
    while fresh is None:  # the replacement, as soon as it is forked (before its exec)
        assert time.monotonic() < deadline, gateway.log()
        new = _children(supervisor) - before
        fresh = min(new) if new else None
        time.sleep(0.0005)
    # Through its exec, its interpreter's start, its loading, until it says it reloads.
    while gateway.log().count("SIGHUP: reloading") == 0:
        assert time.monotonic() < deadline, gateway.log()
        if not _alive(fresh):
            break
        os.kill(fresh, signal.SIGHUP)
        time.sleep(0.01)
    log = gateway.log()
    assert _alive(fresh), log
    assert "exited with -1" not in log and log.count("restarting it") == 1, log
    _serves(gateway, "/hello", 200)
    assert _children(supervisor) == {fresh}


def test_a_stop_while_a_worker_starts_drains_it_at_once(start_gateway: Start) -> None:
    """The supervisor's SIGTERM to a replacement that does not serve yet is noted and
    acted on once it does: the server stops within seconds, not after the
    drain_timeout + 5 s the supervisor waits before it kills a worker."""
    gateway = start_gateway(MANIFEST.format(name="hello"))
    supervisor = gateway.process.pid
    (worker,) = _children(supervisor)
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not _children(supervisor) - {worker}:
        assert time.monotonic() < deadline, gateway.log()
        time.sleep(0.0005)
    began = time.monotonic()
    gateway.signal(signal.SIGTERM)
    assert gateway.process.wait(60) == 0
    assert time.monotonic() - began < 15, gateway.log()


def test_an_unexpected_error_in_a_reload_check_is_one_line(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST.format(name="hello"))
    (worker,) = _children(gateway.process.pid)
    argv = Path(f"/proc/{worker}/cmdline").read_bytes().decode().split("\0")
    runtime = Path(argv[argv.index("--metrics-dir") + 1])
    # Where the check copies the manifest: a directory there makes that copy fail with
    # an OSError, no Stockade error.
    blocker = runtime / "manifest.toml.new"
    blocker.mkdir()
    gateway.manifest.write_text(MANIFEST.format(name="hi"))
    gateway.signal(signal.SIGHUP)
    gateway.wait_for_log(r"reload failed, still serving the previous manifest: "
                         r"IsADirectoryError: .*manifest\.toml\.new")
    time.sleep(0.5)  # a traceback would follow that line at once
    log = gateway.log()
    assert "Traceback" not in log and "Exception in thread" not in log, log
    assert gateway.client.get("/hello").status_code == 200
    assert gateway.client.get("/hi").status_code == 404
    blocker.rmdir()
    gateway.signal(signal.SIGHUP)  # the next reload is checked and applied
    _serves(gateway, "/hi", 200)
    assert gateway.client.get("/hello").status_code == 404
    assert "Traceback" not in gateway.log()
    assert gateway.process.poll() is None


def test_a_reload_asked_while_the_server_compiles_waits_for_it(tmp_path: Path) -> None:
    """The supervisor blocked its signals only once its modules were compiled: a SIGHUP
    (a config tool's reload) during that compile killed it with the default action."""
    manifest = tmp_path / "stockade.toml"
    manifest.write_text(MANIFEST.format(name="hello"))
    env = gateway_env(tmp_path / "cache", tmp_path / "state")  # empty: it compiles
    server = subprocess.Popen([sys.executable, "-m", "stockade", "serve", "-c", str(manifest),
                               "--port", "0"], stderr=subprocess.PIPE, env=env)
    assert server.stderr is not None
    os.set_blocking(server.stderr.fileno(), False)
    said = b""
    deadline = time.monotonic() + 60
    sent = 0
    try:
        # While it compiles (in a child of its own), then until it listens.
        while b"listening on" not in said and server.poll() is None:
            assert time.monotonic() < deadline, said.decode(errors="replace")
            time.sleep(0.002)
            if sent or _compiling(server.pid):
                server.send_signal(signal.SIGHUP)
                sent += 1
            said += server.stderr.read() or b""
        log = said.decode(errors="replace")
        assert sent, log
        assert server.poll() is None, f"exit {server.returncode}: {log}"
        url = re.search(r"listening on (http://\S+)", log)
        assert url is not None, log
        assert httpx.get(f"{url.group(1)}/hello", timeout=30).status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stderr.close()
