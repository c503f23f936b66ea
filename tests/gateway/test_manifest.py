"""Manifest loading: defaults, resolution, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade.errors import PolicyError
from stockade.gateway import load_manifest
from stockade.gateway.manifest import HEADER_ALLOWANCE

ROOT = Path(__file__).resolve().parents[2]
BASE = """
[[function]]
name = "hello"
route = "/hello/"
module = "hello.wasm"
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "stockade.toml"
    path.write_text(text)
    return load_manifest(path)


def test_defaults_and_resolution(tmp_path: Path) -> None:
    manifest = load(tmp_path, BASE)
    spec = manifest.functions[0]  # type: ignore[attr-defined]
    assert (spec.route, spec.methods, spec.tenant) == ("/hello", (), "default")
    assert spec.module == tmp_path / "hello.wasm"
    assert spec.policy.profile == "strict"
    assert spec.policy.limits.max_output == spec.max_response + HEADER_ALLOWANCE
    assert manifest.server.workers == 1  # type: ignore[attr-defined]


def test_limits_env_dirs_quota_and_server(tmp_path: Path) -> None:
    manifest = load(tmp_path, """
[server]
workers = 2
request_timeout = "5s"
max_body = "2KiB"
[tenant.acme]
concurrency = 4
rate = 10
cpu_per_minute = "3s"
""" + BASE + """
tenant = "acme"
methods = ["get", "POST"]
max_concurrency = 2
dirs = ["data:/data"]
env = { A = "1" }
[function.limits]
max_memory = "8MiB"
timeout = "1m"
""")
    spec = manifest.functions[0]  # type: ignore[attr-defined]
    assert spec.methods == ("GET", "POST", "HEAD")
    assert spec.quota.concurrency == 2 and spec.max_body == 2048
    assert spec.policy.limits.max_memory == 8 * 1024**2
    assert spec.policy.limits.timeout == 5.0  # capped by the server's request_timeout
    assert spec.policy.capabilities.env == (("A", "1"),)
    assert spec.policy.capabilities.dirs[0].host == tmp_path / "data"
    quota = manifest.tenants["acme"]  # type: ignore[attr-defined]
    assert (quota.concurrency, quota.rate, quota.cpu_per_minute) == (4, 10.0, 3.0)


@pytest.mark.parametrize(("text", "message"), [
    (BASE + 'tenant = "nobody"\n', "function[0] (hello).tenant: 'nobody' has no [tenant.nobody]"),
    (BASE + "[function.limits]\ntimeout = \"soon\"\n",
     "function[0] (hello).limits.timeout: not a duration"),
    (BASE + 'colour = "red"\n', "unknown key function[0] (hello).colour"),
    (BASE.replace('"/hello/"', '"/metrics"'), "route: /metrics is reserved"),
    (BASE.replace('"/hello/"', '"hello"'), "function[0] (hello).route: required"),
    (BASE + 'methods = ["FETCH"]\n', "methods: unknown method 'FETCH'"),
    (BASE + BASE.replace('"hello"', '"other"', 1), "route /hello is already used by 'hello'"),
    ("[server]\nworkers = 0\n" + BASE, "server.workers: expected an integer from 1 to 64"),
    ("[server]\nspeed = 1\n" + BASE, "unknown key server.speed"),
    ("[tenant.t]\nrate = -1\n" + BASE, "tenant.t.rate: expected a positive number"),
    ('[tenant.t]\ncpu_per_minute = "1us"\n' + BASE,
     "tenant.t.cpu_per_minute: '1us' is less than 1ms of CPU a minute"),
    ("[tenant.t]\ncpu_per_minute = 1e-300\n" + BASE,
     "tenant.t.cpu_per_minute: 1e-300 is less than 1ms of CPU a minute"),
    # `$` matched before a final newline: a name is whole or refused.
    (BASE.replace('name = "hello"', 'name = "hello\\n"'), "name"),
    ('[tenant."t\\n"]\n' + BASE, "tenant"),
    ("[server]\n", "function: add at least one [[function]]"),
    ("[[function]\n", "invalid TOML"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PolicyError) as error:
        load(tmp_path, text)
    assert error.value.message.startswith(f"{tmp_path / 'stockade.toml'}: ")
    assert message in error.value.message


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="manifest not found"):
        load_manifest(tmp_path / "nope.toml")


def test_the_example_manifest_loads() -> None:
    manifest = load_manifest(ROOT / "examples" / "stockade.toml")
    assert [f.name for f in manifest.functions] == ["hello"]
    assert manifest.functions[0].module.exists()


@pytest.mark.parametrize("asked", ['"none"', '"unlimited"', '"inf"', '"100000h"'])
def test_a_function_cannot_ask_for_an_unbounded_timeout(tmp_path: Path, asked: str) -> None:
    # A function (a tenant's) asking for no timeout, under a profile without fuel, still
    # gets the server's request_timeout: nothing a manifest function says runs unbounded.
    manifest = load(tmp_path, BASE + f'profile = "default"\n[function.limits]\n'
                                      f'timeout = {asked}\nfuel = "unlimited"\n')
    spec = manifest.functions[0]  # type: ignore[attr-defined]
    assert spec.policy.limits.timeout == 30.0 and spec.policy.limits.fuel is None
    with pytest.raises(PolicyError, match="server.request_timeout"):
        load(tmp_path, '[server]\nrequest_timeout = "none"\n' + BASE)


def test_a_response_larger_than_the_answers_budget_is_refused(tmp_path: Path) -> None:
    """`max_response` had no ceiling: a function allowed 1 GiB grew a worker to 934 MB
    for one 300 MB answer (a guest writes the same block in a loop), and the send budget
    then reset such answers anyway (found by review). Like `max_body` against the bodies'
    budget, it may not exceed what a worker holds of unsent answers."""
    with pytest.raises(PolicyError, match="response_buffer"):
        load(tmp_path, BASE + 'max_response = "1GiB"\n')
    with pytest.raises(PolicyError, match="response_buffer"):
        load(tmp_path, '[server]\nmax_response = "100MiB"\n' + BASE)
    spec = load(tmp_path, '[server]\nresponse_buffer = "256MiB"\n' + BASE
                + 'max_response = "100MiB"\n').functions[0]  # type: ignore[attr-defined]
    assert spec.max_response == 100 * 1024**2


@pytest.mark.parametrize("name", ['"bogus"', '"Edge"', '"sdk"'])
def test_an_unknown_telemetry_profile_is_refused_at_load(tmp_path: Path, name: str) -> None:
    # It passed `check --manifest` and stopped `serve` at start, once the workers opened
    # their telemetry.
    with pytest.raises(PolicyError, match="server.telemetry.*expected one of"):
        load(tmp_path, f"[server]\ntelemetry = {name}\n" + BASE)


@pytest.mark.parametrize("name", ["default", "off", "edge", "cloud", "on-prem", "hybrid"])
def test_every_telemetry_profile_loads(tmp_path: Path, name: str) -> None:
    manifest = load(tmp_path, f'[server]\ntelemetry = "{name}"\n' + BASE)
    assert manifest.server.telemetry == name  # type: ignore[attr-defined]


def test_a_tenant_naming_its_signers_requires_their_signature(tmp_path: Path) -> None:
    """README's `[tenant.acme] trust = { keys = ["acme.pub"] }`, the tenant's own
    signers, served acme's unsigned modules when the manifest required no signature
    (found by review): keys listed require one, for that tenant's functions only."""
    (tmp_path / "acme.pub").write_text("read when a module is checked")
    manifest = load(tmp_path, BASE + 'tenant = "acme"\n' + """
[[function]]
name = "other"
route = "/other"
module = "hello.wasm"

[tenant.acme]
trust = { keys = ["acme.pub"] }
""")
    acme, other = manifest.functions  # type: ignore[attr-defined]
    assert acme.policy.trust.require_signature
    assert acme.policy.trust.keys == (tmp_path / "acme.pub",)
    assert not other.policy.trust.require_signature
