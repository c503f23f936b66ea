"""Circuit breakers in a real gateway, as an anonymous client would try to abuse them:
traps do not take a function offline, limit violations take only that function
offline, changing the module's bytes does not escape, refusals do not fill the audit
log, and `telemetry = "off"` keeps breakers and audit."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade.telemetry import verify

from ..conftest import stockade
from .conftest import Gateway, client_at, gateway_env, module, violate

Serve = Callable[..., Gateway]


@pytest.fixture
def serve(tmp_path: Path, shared_cache: Path) -> Iterator[Serve]:
    """Start gateways on one state directory. A breaker's cooldown is an hour unless a
    test needs it to end, so that nothing depends on how fast this machine answers."""
    started: list[Gateway] = []

    def start(manifest: str, cooldown: str = "1h") -> Gateway:
        path = tmp_path / "stockade.toml"
        path.write_text(manifest)
        env = {**gateway_env(shared_cache, tmp_path / "state"),
               "STOCKADE_BREAKER_COOLDOWN": cooldown}
        gateway = Gateway(path, env, ())
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def manifest(fail: str, server: str = "") -> str:
    return f"""
[server]
workers = 1
{server}

[[function]]
name = "fail"
route = "/fail"
module = "{fail}"
max_response = "64KiB"

[[function]]
name = "twin"
route = "/twin"
module = "{fail}"
max_response = "64KiB"

[[function]]
name = "hello"
route = "/hello"
module = "{module("hello")}"
"""


def audit(state: Path) -> list[dict[str, Any]]:
    path = state / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def is_breaker(response: Any) -> bool:
    return response.status_code == 503 and response.json().get("reason") == "breaker"


def test_traps_do_not_open_it_limit_violations_open_only_that_function(
        serve: Serve, tmp_path: Path) -> None:
    gateway = serve(manifest(module("fail")))
    client = gateway.client
    for _ in range(5):  # a client that can make a function trap
        assert client.get("/fail", params={"kind": "trap"}).status_code == 502
    assert client.get("/fail", params={"kind": "none"}).status_code == 200
    violate(gateway.url)  # three clients' limit violations (the output cap)
    with client_at(gateway.url, "127.0.0.40") as newcomer:  # never served: refused
        assert is_breaker(newcomer.get("/fail", params={"kind": "none"}))
    # Served before: in standing, not refused (standing.py).
    assert client.get("/fail", params={"kind": "none"}).status_code == 200
    # Only that function: another function built from the same module still answers.
    assert client.get("/twin", params={"kind": "none"}).status_code == 200
    assert client.get("/hello").status_code == 200
    (opened,) = [r for r in audit(tmp_path / "state") if r["kind"] == "breaker_transition"]
    assert (opened["breaker"], opened["tenant"], opened["new"]) == (
        "function:fail", "default", "open")


def test_one_client_hitting_limits_is_refused_alone_and_opens_no_breaker(
        serve: Serve, tmp_path: Path) -> None:
    """Attack: one client sends inputs that make a function hit a limit. Counted per
    function, three such requests took it offline for every client for the cooldown,
    again at every cooldown's end. Now that client alone is refused (429), without a run,
    and the function's breaker stays closed for everyone else."""
    gateway = serve(manifest(module("fail")))
    with client_at(gateway.url, "127.0.0.66") as attacker:
        for _ in range(3):
            assert attacker.get("/fail", params={"kind": "flood"}).status_code == 502
        for _ in range(20):
            refused = attacker.get("/fail", params={"kind": "flood"})
            assert refused.status_code == 429, refused.text
        assert refused.json()["limit"] == "client_breaker"
        assert int(refused.headers["retry-after"]) >= 1
        assert attacker.get("/twin", params={"kind": "none"}).status_code == 200
    assert gateway.client.get("/fail", params={"kind": "none"}).status_code == 200
    metrics = gateway.client.get("/metrics").text
    assert 'reason="client_breaker"} 20' in metrics, metrics
    assert not [r for r in audit(tmp_path / "state") if r["kind"] == "breaker_transition"]


def test_a_refused_client_takes_no_slot_from_its_tenant(serve: Serve) -> None:
    """A client refused by its own breaker is refused before the tenant's quotas: its
    refusals spend none of the rate its tenant shares with other clients (nor a shared
    store's breaker probe, granted with the same admission)."""
    gateway = serve(f"""
[server]
workers = 1

[tenant.metered]
rate = 0.001
burst = 5

[[function]]
name = "fail"
route = "/fail"
module = "{module("fail")}"
tenant = "metered"
max_response = "64KiB"
""")
    with client_at(gateway.url, "127.0.0.66") as attacker:
        for _ in range(3):
            assert attacker.get("/fail", params={"kind": "flood"}).status_code == 502
        for _ in range(10):
            refused = attacker.get("/fail", params={"kind": "flood"})
            assert refused.json()["limit"] == "client_breaker", refused.text
    # Two of the burst's five are left for everyone else.
    for _ in range(2):
        assert gateway.client.get("/fail", params={"kind": "none"}).status_code == 200
    assert gateway.client.get("/fail", params={"kind": "none"}).json()["limit"] == "rate"


def test_a_client_that_opened_the_breaker_cannot_hold_it_open_with_probes(
        serve: Serve, tmp_path: Path) -> None:
    """Attack: three addresses open the breaker; then one of them sends its failing input
    the moment the breaker half-opens, so the probe violates and the function is offline
    for everyone for another cooldown, and again after it. That client's violation is
    already counted: it is refused while the breaker is half-open (its probe freed at
    once), and another client's request probes."""
    gateway = serve(manifest(module("fail")), cooldown="1s")
    violate(gateway.url)
    assert is_breaker(gateway.client.get("/fail", params={"kind": "none"}))
    deadline = time.monotonic() + 30
    with client_at(gateway.url, "127.0.0.11") as attacker:
        while True:  # the cooldown ends; the attacker asks for the probe, and again
            response = attacker.get("/fail", params={"kind": "flood"})
            assert is_breaker(response), response.text  # never run
            if "half-open" in response.json()["detail"]:
                break
            assert time.monotonic() < deadline, "the breaker never half-opened"
            time.sleep(0.1)
        for _ in range(5):
            assert "half-open" in attacker.get("/fail", params={"kind": "flood"}).text
    served = gateway.client.get("/fail", params={"kind": "none"})
    assert served.status_code == 200, served.text
    kinds = [(r["old"], r["new"]) for r in audit(tmp_path / "state")
             if r["kind"] == "breaker_transition"]
    assert kinds == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_timeouts_answered_by_the_backstop_count_for_the_client(serve: Serve) -> None:
    """Attack: a client whose runs start late (it holds the only guest thread with a slow
    clean request first) is answered 504 by the gateway's backstop before its run's own
    timeout ends it. Those timeouts count for its breaker as answered ones do."""
    gateway = serve(f"""
[server]
workers = 1
threads = 1
inline = false

[[function]]
name = "hold"
route = "/hold"
module = "{module("fail")}"
isolate = "none"
[function.limits]
timeout = "5s"

[[function]]
name = "fail"
route = "/fail"
module = "{module("fail")}"
isolate = "none"
[function.limits]
timeout = "1s"
""")
    with client_at(gateway.url, "127.0.0.66") as attacker:
        for _ in range(3):
            holding = threading.Thread(  # the only guest thread, for 2 s
                target=attacker.get, args=("/hold",),
                kwargs={"params": {"kind": "sleep", "s": "2"}})
            holding.start()
            time.sleep(0.2)
            late = attacker.get("/fail", params={"kind": "sleep", "s": "100"})
            holding.join()
            assert late.status_code == 504, late.text
            assert "no response within" in late.text, late.text  # the backstop's answer
        refused = attacker.get("/fail", params={"kind": "sleep", "s": "100"})
        assert refused.status_code == 429 and refused.json()["limit"] == "client_breaker"
    assert gateway.client.get("/fail", params={"kind": "none"}).status_code == 200


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """A real HAProxy that adds `X-Forwarded-For`, in front of a gateway's URL; returns
    its own URL. Its connections to the gateway come from 127.0.0.1."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        pytest.skip("haproxy is not installed (Debian: haproxy)")
    started: list[subprocess.Popen[bytes]] = []

    def front(url: str) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        config = tmp_path / "haproxy.cfg"
        config.write_text(f"""\
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{port}
    option forwardfor
    default_backend gateway
backend gateway
    server g {url.removeprefix("http://")}
""")
        process = subprocess.Popen([binary, "-db", "-f", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(process)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return f"http://127.0.0.1:{port}"
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, \
                    "haproxy did not start"
                time.sleep(0.05)

    yield front
    for process in started:
        process.terminate()
        process.wait(10)


def test_behind_a_trusted_proxy_clients_are_counted_apart(
        serve: Serve, haproxy: Callable[[str], str]) -> None:
    """Attack, behind a load balancer: every request came from the balancer's address, so
    one client's violations refused every client (429) on that worker. With the balancer
    in `trusted_proxies`, the client is the address the balancer appended to
    `X-Forwarded-For`: the attacker alone is refused, and three clients, not one, open
    the function's breaker."""
    gateway = serve(manifest(module("fail"), 'trusted_proxies = ["127.0.0.1"]'))
    assert "clients behind 127.0.0.1/32 are told apart by X-Forwarded-For" in gateway.log()
    proxy = haproxy(gateway.url)
    with client_at(proxy, "127.0.0.66") as attacker:
        for _ in range(3):
            # A forged entry is the client's own word, left of the balancer's.
            sent = attacker.get("/fail", params={"kind": "flood"},
                                headers={"x-forwarded-for": f"203.0.113.{_}"})
            assert sent.status_code == 502, sent.text
        refused = attacker.get("/fail", params={"kind": "flood"},
                               headers={"x-forwarded-for": "203.0.113.99"})
        assert refused.json()["limit"] == "client_breaker", refused.text
    with client_at(proxy, "127.0.0.20") as other:
        assert other.get("/fail", params={"kind": "none"}).status_code == 200
    violate(proxy, clients=2)  # with the attacker, three clients through the balancer
    with client_at(proxy, "127.0.0.21") as newcomer:  # the first never served: refused
        assert is_breaker(newcomer.get("/fail", params={"kind": "none"}))
    with client_at(proxy, "127.0.0.20") as other:  # its address, told apart: in standing
        assert other.get("/fail", params={"kind": "none"}).status_code == 200


def test_appending_bytes_to_the_module_does_not_escape(serve: Serve, tmp_path: Path) -> None:
    wasm = tmp_path / "fail.wasm"
    shutil.copyfile(module("fail"), wasm)
    gateway = serve(manifest(str(wasm)))
    violate(gateway.url)
    assert is_breaker(gateway.client.get("/fail"))
    gateway.stop()
    # A custom section appended: a valid module with a new digest.
    with open(wasm, "ab") as file:
        file.write(b"\x00\x04\x01xab")
    again = serve(manifest(str(wasm)))
    assert is_breaker(again.client.get("/fail", params={"kind": "none"}))


def test_three_thousand_refusals_add_nothing_to_the_audit_log_and_are_counted(
        serve: Serve, tmp_path: Path) -> None:
    state = tmp_path / "state"
    gateway = serve(manifest(module("fail")))
    client = gateway.client
    violate(gateway.url)
    size = (state / "audit.jsonl").stat().st_size
    refused = sum(is_breaker(client.get("/fail")) for _ in range(3000))
    assert refused == 3000
    assert gateway.stop() == 0  # writes the worker's pending refusal count
    # Refusals are counted, and reported with the breaker's next transition.
    assert (state / "audit.jsonl").stat().st_size == size
    assert verify(state / "audit.jsonl").ok
    listed = stockade("breaker", "list", "--json")
    (entry,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (entry["key"], entry["state"], entry["denied"]) == ("function:fail", "open", 3000)


def test_telemetry_off_keeps_breakers_and_audit(serve: Serve, tmp_path: Path) -> None:
    state = tmp_path / "state"
    gateway = serve(manifest(module("fail"), 'telemetry = "off"'))
    violate(gateway.url)
    assert is_breaker(gateway.client.get("/fail"))
    gateway.stop()
    assert [r["kind"] for r in audit(state)] == ["quota_hit"] * 3 + ["breaker_transition"]
    assert verify(state / "audit.jsonl").ok
    assert not (state / "telemetry.jsonl").exists()


def test_breakers_can_be_turned_off_on_their_own(serve: Serve, tmp_path: Path) -> None:
    gateway = serve(manifest(module("fail"), "breakers = false"))
    violate(gateway.url, clients=4)
    assert gateway.client.get("/fail").status_code == 200


def test_an_audit_key_others_can_read_stops_the_server_with_one_line(
        tmp_path: Path, shared_cache: Path) -> None:
    key = tmp_path / "config" / "stockade" / "audit.key"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"k" * 32)
    key.chmod(0o644)
    path = tmp_path / "stockade.toml"
    path.write_text(manifest(module("fail")))
    proc = subprocess.run(
        [sys.executable, "-m", "stockade", "serve", "-c", str(path), "--port", "0"],
        env=gateway_env(shared_cache, tmp_path / "state"), capture_output=True, timeout=120,
        check=False)
    assert proc.returncode == 125 and b"0644" in proc.stderr
    assert b"Traceback" not in proc.stderr


def pool_manifest(server: str = "") -> str:
    """`fail` and `hog` in one cordon of a single pool worker."""
    return f"""
[server]
workers = 1
pool_workers = 1
{server}

[[function]]
name = "fail"
route = "/fail"
module = "{module("fail")}"
isolate = "process"
max_response = "64KiB"
[function.limits]
timeout = "2s"

[[function]]
name = "hog"
route = "/hog"
module = "{module("fail")}"
isolate = "process"
[function.limits]
timeout = "10s"
"""


def probe_while_the_pool_is_busy(url: str, client: Any) -> None:
    """Open `fail`'s breaker, wait until it half-opens, and have an honest request probe
    while an attacker holds the cordon's only pool worker: refused 503 before it ran.
    Then the honest client's next request must probe again and close the breaker. The
    honest client was never served (one in standing asks no breaker, and probes none)."""
    with client_at(url, "127.0.0.51") as warm:
        assert warm.get("/fail", params={"kind": "none"}).status_code == 200  # pool up
    violate(url)
    assert is_breaker(client.get("/fail", params={"kind": "none"}))
    time.sleep(2.5)  # the cooldown (2 s) ends: the next request probes
    def hold_the_pool() -> None:
        with client_at(url, "127.0.0.50") as attacker:
            attacker.get("/hog", params={"kind": "sleep", "s": "4"})

    hog = threading.Thread(target=hold_the_pool)
    hog.start()
    time.sleep(0.5)
    refused = client.get("/fail", params={"kind": "none"})
    hog.join()
    assert refused.status_code == 503 and "pool workers" in refused.text, refused.text
    served = client.get("/fail", params={"kind": "none"})
    assert served.status_code == 200, served.text


@pytest.mark.parametrize("inline", ["true", "false"])
def test_a_probe_refused_by_a_busy_pool_is_freed_not_failed(serve: Serve,
                                                            inline: str) -> None:
    """Attack: hold a cordon's pool workers when the breaker half-opens. The probe's run
    was refused before it started (503), counted as a failed probe, and the breaker
    re-opened for another cooldown, each time."""
    gateway = serve(pool_manifest(f"inline = {inline}"), cooldown="2s")
    probe_while_the_pool_is_busy(gateway.url, gateway.client)
