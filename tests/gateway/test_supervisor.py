"""The `stockade serve` process: workers sharing a port, SIGTERM drain, SIGHUP reload."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .conftest import Gateway, Start, gateway_env, module
from .test_limits import in_background, wait_in_flight

FUNCTIONS = f"""
[[function]]
name = "sleep"
route = "/sleep"
module = "{module("fail")}"

[[function]]
name = "{{name}}"
route = "/{{name}}"
module = "{module("hello")}"
"""
MANIFEST = '[server]\nworkers = {workers}\ntelemetry = "off"\n' + FUNCTIONS


def test_sigterm_drains_in_flight_requests(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST.format(workers=1, name="hello"))
    thread, statuses = in_background(gateway.client, "/sleep?kind=sleep&s=2")
    wait_in_flight(gateway.client, "sleep")
    gateway.signal(signal.SIGTERM)
    thread.join()
    assert statuses == [200]  # finished, not cut
    assert gateway.process.wait(30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{gateway.url}/hello")


def test_sighup_reloads_without_dropping_requests(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST.format(workers=2, name="hello"))
    thread, statuses = in_background(gateway.client, "/sleep?kind=sleep&s=2")
    stop = threading.Event()
    during: list[int] = []

    def hammer() -> None:
        with httpx.Client(base_url=gateway.url) as client:
            while not stop.is_set():
                during.append(client.get("/sleep?kind=none").status_code)

    def wait_for(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.02)

    hammering = threading.Thread(target=hammer)
    hammering.start()
    wait_for(lambda: len(during) > 0)
    gateway.manifest.write_text(MANIFEST.format(workers=2, name="hi"))
    gateway.signal(signal.SIGHUP)
    wait_for(lambda: gateway.client.get("/hi").status_code == 200)
    for _ in range(10):  # both workers now serve the new manifest
        assert gateway.client.get("/hi").status_code == 200
        assert gateway.client.get("/hello").status_code == 404
    seen = len(during)
    wait_for(lambda: len(during) > seen + 3)
    stop.set()
    hammering.join()
    thread.join()
    assert statuses == [200] and during and set(during) == {200}


def test_a_broken_manifest_is_not_applied(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST.format(workers=1, name="hello"))
    gateway.manifest.write_text(MANIFEST.format(workers=1, name="hello") + "oops = [\n")
    gateway.signal(signal.SIGHUP)
    gateway.wait_for_log(r"reload refused, still serving the previous manifest: .*invalid TOML")
    assert gateway.client.get("/hello").status_code == 200


@pytest.mark.parametrize(("change", "key"), [
    (('route = "/hello"', 'route = "/x/../hello"'), "route"),
    (('route = "/hello"', 'route = "/hello"\nmethods = []'), "methods"),
    (('route = "/hello"', 'route = "/hello"\nrate = inf'), "rate"),
], ids=["dot-route", "no-methods", "infinite-rate"])
def test_a_value_no_request_could_use_is_not_applied(
        start_gateway: Start, change: tuple[str, str], key: str) -> None:
    """Each was accepted: a route no request can reach (400 for a dot segment), an empty
    `methods` meaning any method, a rate of no limit."""
    text = MANIFEST.format(workers=1, name="hello")
    gateway = start_gateway(text)
    gateway.manifest.write_text(text.replace(*change))
    gateway.signal(signal.SIGHUP)
    gateway.wait_for_log(rf"reload refused, still serving the previous manifest: .*\(hello\)"
                         rf"\.{key}: ")
    assert gateway.client.get("/hello").status_code == 200


def test_a_reload_names_the_changes_that_wait_for_a_restart(start_gateway: Start) -> None:
    """`max_body` is read into each function: it applies at once. The message said
    every [server] change waited, named none, and said nothing of `header_timeout`."""
    text = MANIFEST.format(workers=1, name="hello")
    gateway = start_gateway(text)
    assert gateway.client.post("/hello", content=b"x" * 2048).status_code == 200
    gateway.manifest.write_text(text.replace(
        'telemetry = "off"', 'telemetry = "off"\nmax_body = "1KiB"\nheader_timeout = "3s"'
        '\n[state]\ntimeout = "2s"'))
    gateway.signal(signal.SIGHUP)
    gateway.wait_for_log(r"take effect at the next restart: server\.header_timeout, "
                         r"state\.timeout\n")
    deadline = time.monotonic() + 30
    while gateway.client.post("/hello", content=b"x" * 2048).status_code != 413:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "max_body" not in gateway.log()


def test_a_changed_port_is_reported(tmp_path: Path, shared_cache: Path) -> None:
    """The bound port became a command-line setting, so a changed [server] port was
    hidden: a reload printed nothing."""
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    manifest = tmp_path / "stockade.toml"
    text = MANIFEST.format(workers=1, name="hello") + "\n"
    manifest.write_text(text.replace("[server]", f"[server]\nport = {ports[0]}"))
    gateway = Gateway(manifest, gateway_env(shared_cache, tmp_path / "state"), (), port=None)
    try:
        assert gateway.url.endswith(f":{ports[0]}")
        manifest.write_text(text.replace("[server]", f"[server]\nport = {ports[1]}"))
        gateway.signal(signal.SIGHUP)
        gateway.wait_for_log(r"take effect at the next restart: server\.port\n")
        assert gateway.client.get("/hello").status_code == 200
    finally:
        gateway.stop()


def test_workers_share_the_port_and_metrics(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST.format(workers=2, name="hello"))
    for _ in range(20):
        with httpx.Client(base_url=gateway.url) as fresh:  # a new connection each time
            assert fresh.get("/hello").status_code == 200
    series = 'stockade_gateway_requests_total{function="hello",tenant="default",code="200"} 20'
    deadline = time.monotonic() + 10  # the other worker's snapshot lags up to a second
    while series not in gateway.client.get("/metrics").text:
        assert time.monotonic() < deadline, gateway.client.get("/metrics").text
        time.sleep(0.2)


def test_a_killed_worker_is_restarted(start_gateway: Start) -> None:
    gateway = start_gateway(MANIFEST.format(workers=1, name="hello"))
    pid = gateway.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    os.kill(int(children.split()[0]), signal.SIGKILL)
    gateway.wait_for_log(r"worker 0 exited with -9; restarting it")
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{gateway.url}/hello").status_code == 200:
                break
        except httpx.HTTPError:
            pass  # the connection may have gone to the dying worker
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _fresh_statuses(url: str, path: str, seconds: float) -> set[int]:
    """The statuses of `path` asked on a new connection each time for `seconds` (each
    worker gets some of them)."""
    seen = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with httpx.Client(base_url=url) as fresh:
                seen.add(fresh.get(path).status_code)
        except httpx.HTTPError:
            pass  # the connection may have gone to the dying worker
        time.sleep(0.02)
    return seen


@pytest.mark.parametrize("change", ["refused", "not-reloaded"])
def test_a_restarted_worker_serves_the_manifest_the_others_do(
        start_gateway: Start, change: str) -> None:
    """A replacement read the file on disk: after a refused reload it died on the broken
    manifest until the supervisor gave up (exit 1); after an edit nobody reloaded it
    served another manifest than its siblings."""
    gateway = start_gateway(MANIFEST.format(workers=2, name="hello"))
    if change == "refused":
        gateway.manifest.write_text("garbage = [\n")
        gateway.signal(signal.SIGHUP)
        gateway.wait_for_log(r"reload refused, still serving the previous manifest")
    else:
        gateway.manifest.write_text(MANIFEST.format(workers=2, name="hi"))
    pid = gateway.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    os.kill(int(children.split()[0]), signal.SIGKILL)
    gateway.wait_for_log(r"exited with -9; restarting it")
    assert _fresh_statuses(gateway.url, "/hi", 8.0) == {404}
    assert _fresh_statuses(gateway.url, "/hello", 1.0) == {200}
    assert gateway.process.poll() is None
    log = gateway.log()
    assert "Traceback" not in log and log.count("restarting it") == 1, log


def test_workers_load_the_manifest_text_the_supervisor_accepted(tmp_path: Path) -> None:
    """Workers read the file again after the supervisor's check: one replaced in between
    (a few ms) was served unchecked. Module paths stay relative to the manifest."""
    from stockade.gateway.server import Supervisor
    from stockade.gateway.service import GatewayService

    (tmp_path / "hello.wasm").write_bytes(Path(module("hello")).read_bytes())
    path = tmp_path / "stockade.toml"
    text = '[server]\ntelemetry = "off"\n[[function]]\nname = "{name}"\nroute = "/{name}"\n' \
           'module = "hello.wasm"\n'
    path.write_text(text.format(name="hello"))
    supervisor = Supervisor(path)
    try:
        supervisor.manifest = supervisor.prepare()
        path.write_text(text.format(name="hi"))  # after the check, before any worker
        loaded = GatewayService(path, snapshot=supervisor.snapshot).load()
        assert [spec.name for spec in loaded.functions] == ["hello"]
        assert loaded.functions[0].module == tmp_path / "hello.wasm"
        assert loaded.source == path.resolve()
        path.write_text("garbage = [\n")
        assert not supervisor.reload()
        assert [spec.name for spec in GatewayService(path, snapshot=supervisor.snapshot)
                .load().functions] == ["hello"]
    finally:
        supervisor.stop()


def test_sigterm_during_a_slow_reload_drains_at_once(start_gateway: Start) -> None:
    """The supervisor checked a reload on its signal loop: against a registry that never
    answers, SIGTERM waited for the registry's timeout (~30 s) and nothing drained."""
    text = MANIFEST.format(workers=1, name="hello")
    gateway = start_gateway(text)
    with socket.socket() as registry:
        registry.bind(("127.0.0.1", 0))
        registry.listen()
        held: list[socket.socket] = []
        accepting = threading.Thread(target=lambda: held.append(registry.accept()[0]),
                                     daemon=True)
        accepting.start()
        port = registry.getsockname()[1]
        gateway.manifest.write_text(text + f'\n[[function]]\nname = "img"\nroute = "/img"\n'
                                           f'module = "oci://127.0.0.1:{port}/app:v1"\n')
        gateway.signal(signal.SIGHUP)
        accepting.join(30)
        assert held, "the reload never asked the registry"
        began = time.monotonic()
        gateway.signal(signal.SIGTERM)
        assert gateway.process.wait(15) == 0
        assert time.monotonic() - began < 10
        for connection in held:
            connection.close()
    assert "draining 1 workers" in gateway.log()
