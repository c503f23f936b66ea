"""One real gateway serving the example functions: routing, CGI both ways, isolation,
every error status and its problem+json body, the gateway's own endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import GUESTS
from .conftest import FUNCTIONS, Gateway, Start, gateway_env, module

MANIFEST = f"""
[server]
workers = 1
threads = 4
telemetry = "off"
max_body = "4KiB"

[tenant.web]

[[function]]
name = "hello"
route = "/hello"
methods = ["GET"]
module = "{module("hello")}"
tenant = "web"

[[function]]
name = "echo"
route = "/echo"
module = "{module("echo")}"
env = {{ FROM_MANIFEST = "yes" }}

[[function]]
name = "status"
route = "/status"
module = "{module("status")}"

[[function]]
name = "counter"
route = "/counter"
module = "{module("counter")}"

[[function]]
name = "big"
route = "/big"
module = "{module("big")}"
max_response = "64KiB"

[[function]]
name = "fail"
route = "/fail"
module = "{module("fail")}"
[function.limits]
timeout = "1s"
max_memory = "8MiB"

[[function]]
name = "spin"
route = "/spin"
module = "{module("spin")}"
[function.limits]
timeout = "300ms"
fuel = "unlimited"

[[function]]
name = "budget"
route = "/budget"
module = "{module("spin")}"
[function.limits]
fuel = 50_000_000

[[function]]
name = "denied"
route = "/denied"
module = "{GUESTS / "needs_sockets.wasm"}"
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gateway")
    manifest = root / "stockade.toml"
    manifest.write_text(MANIFEST)
    server = Gateway(manifest, gateway_env(shared_cache, root / "state"), ())
    yield server
    server.stop()


@pytest.fixture
def client(gateway: Gateway) -> httpx.Client:
    return gateway.client


def problem(response: httpx.Response, status: int) -> dict[str, object]:
    """The problem+json body of an error response, checked for status and leaks."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert str(FUNCTIONS.parent) not in response.text and "/tmp/" not in response.text
    body: dict[str, object] = response.json()
    assert body["status"] == status and str(body["type"]).startswith("urn:stockade:problem:")
    return body


def test_routes_by_path_prefix(client: httpx.Client) -> None:
    assert client.get("/hello").text == "Hello, world!\n"
    response = client.get("/hello/sub/path", params={"name": "ann"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "Hello, ann!\n"
    assert problem(client.get("/hellothere"), 404)["instance"] == "/hellothere"
    assert problem(client.get("/"), 404)["title"] == "No such function"


def test_method_not_allowed_names_the_allowed(client: httpx.Client) -> None:
    response = client.post("/hello", content=b"x")
    problem(response, 405)
    assert response.headers["allow"] == "GET, HEAD"
    head = client.head("/hello")
    assert head.status_code == 200 and head.content == b""


def test_request_becomes_cgi_environment_and_stdin(client: httpx.Client) -> None:
    response = client.post(
        "/echo/a%20b/c", params={"x": "1", "y": "two"}, content=b"the body",
        headers={"Content-Type": "text/x-test", "X-Thing": "yes", "Authorization": "secret",
                 "Proxy": "http://evil"})
    assert response.status_code == 200
    assert response.headers["x-echo-method"] == "POST"
    head, _, body = response.text.partition("\n\n")
    env = dict(line.split("=", 1) for line in head.splitlines())
    port = str(httpx.URL(str(client.base_url)).port)
    assert {k: env[k] for k in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING",
                                "CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_X_THING", "SERVER_NAME",
                                "SERVER_PORT", "GATEWAY_INTERFACE", "FROM_MANIFEST")} == {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "/echo", "PATH_INFO": "/a b/c",
        "QUERY_STRING": "x=1&y=two", "CONTENT_LENGTH": "8", "CONTENT_TYPE": "text/x-test",
        "HTTP_X_THING": "yes", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": port,
        "GATEWAY_INTERFACE": "CGI/1.1", "FROM_MANIFEST": "yes"}
    assert env["X_RAW_PATH_INFO"] == "/a%20b/c"
    assert "HTTP_AUTHORIZATION" not in env and "HTTP_PROXY" not in env
    assert not {"PATH", "HOME", "USER"} & env.keys()  # nothing from the host
    assert body == "the body"


def test_cgi_headers_set_status_and_location(client: httpx.Client) -> None:
    created = client.get("/status", params={"code": "201"})
    assert created.status_code == 201 and created.headers["x-function"] == "status"
    assert created.text == "status 201\n"
    moved = client.get("/status?code=302&location=/hello")
    assert moved.status_code == 302 and moved.headers["location"] == "/hello"
    detail = problem(client.get("/status", params={"raw": "1"}), 502)["detail"]
    assert "no CGI header block" in str(detail)


def test_every_request_gets_a_fresh_instance(client: httpx.Client) -> None:
    answers = {client.get("/counter").text for _ in range(3)}
    assert answers == {"count=1 seen=0\n"}


def test_large_response_within_its_limit(client: httpx.Client) -> None:
    response = client.get("/big", params={"bytes": str(60_000)})
    assert response.status_code == 200 and response.content == b"x" * 60_000
    assert "64" in str(problem(client.get("/big", params={"bytes": str(70_000)}), 502)["detail"])


@pytest.mark.parametrize(("query", "status", "outcome"), [
    ({"kind": "trap"}, 502, "trap"),
    ({"kind": "memory"}, 502, "memory_limit"),
    ({"kind": "exit"}, 502, "exited"),
    ({"kind": "flood"}, 502, "output_limit"),
    ({"kind": "sleep", "s": "5"}, 504, "timeout"),
])
def test_guest_failures_map_to_statuses(client: httpx.Client, query: dict[str, str],
                                        status: int, outcome: str) -> None:
    assert problem(client.get("/fail", params=query), status)["outcome"] == outcome


def test_cpu_limits_timeout_504_and_fuel_502(client: httpx.Client) -> None:
    assert problem(client.get("/spin"), 504)["outcome"] == "timeout"
    assert problem(client.get("/budget"), 502)["outcome"] == "fuel_exhausted"
    assert client.get("/budget", params={"n": "1000"}).text.startswith("spun ")


def test_denied_module_is_403(client: httpx.Client) -> None:
    body = problem(client.get("/denied"), 403)
    assert "sock_open" in str(body["detail"])


def test_oversized_bodies_are_413(client: httpx.Client) -> None:
    problem(client.post("/echo", content=b"x" * 5000), 413)
    chunks = iter([b"x" * 3000, b"y" * 3000])  # no Content-Length: counted as it arrives
    problem(client.post("/echo", content=chunks), 413)
    assert client.post("/echo", content=b"x" * 4000).status_code == 200


def test_health_readiness_and_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    client.get("/hello")
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'stockade_gateway_requests_total{function="hello",tenant="web",code="200"}' \
        in metrics.text
    assert "# TYPE stockade_gateway_request_duration_seconds histogram" in metrics.text


def test_host_paths_never_reach_a_body(tmp_path: Path, start_gateway: Start) -> None:
    # A granted directory with spaces, '=', commas and non-ASCII letters in its path,
    # removed while the gateway runs: every run then fails naming it.
    parent = tmp_path / "tenant data, v=2 ünïcødé"
    granted = parent / "my files"
    granted.mkdir(parents=True)
    gateway = start_gateway(f"""
[server]
telemetry = "off"
[[function]]
name = "reader"
route = "/reader"
module = "{module("echo")}"
dirs = ["{granted}:/data"]
""")
    assert gateway.client.get("/reader").status_code == 200
    granted.rmdir()
    response = gateway.client.get("/reader")
    assert response.status_code >= 400
    detail = str(response.json()["detail"])
    for shown in (response.text, detail):
        for part in (str(tmp_path), parent.name, "tenant data", "ünïcødé", "v=2"):
            assert part not in shown, (part, shown)
    assert "my files" in detail  # the last part is kept: it names what failed
