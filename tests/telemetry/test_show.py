"""`stockade telemetry show` for people: full ids, refusals apart from the latency
percentiles, monitor warnings shown, filters and --follow; through real runs and a
real gateway."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import guest, stockade

from ..gateway.conftest import Gateway, gateway_env, module

ID = re.compile(r"^[0-9a-f]{32}$")


def show(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "stockade", "telemetry", "show", "--json",
                           *args], capture_output=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path,
             shared_config: Path) -> dict[str, str]:
    """Two hello runs, a timeout and a run that came close to its timeout (a warning)."""
    state = tmp_path_factory.mktemp("state")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKADE_", "OTEL_"))}
    # The shared cache with its own key: under the user's, its entries were refused (and
    # audited) by every later test that ran the same modules.
    env.update(STOCKADE_STATE_DIR=str(state), STOCKADE_CACHE_DIR=str(shared_cache),
               STOCKADE_CONFIG_DIR=str(shared_config / "stockade"))
    runs: list[tuple[tuple[str, ...], str, tuple[str, ...]]] = [
        ((), "hello.wasm", ()), ((), "hello.wasm", ()),
        (("--timeout", "200ms"), "spin.wasm", ()),
        (("--timeout", "1200ms"), "sleeper.wasm", ("1",))]
    for options, name, rest in runs:
        subprocess.run([sys.executable, "-m", "stockade", "run", *options, str(guest(name)),
                        *rest], capture_output=True, timeout=120, env=env)
    return env


def test_full_ids_and_warnings_shown(recorded: dict[str, str]) -> None:
    data = show(env=recorded)
    assert data["invocations"] == 4
    recent = data["recent"]
    assert isinstance(recent, list) and len(recent) == 4
    assert all(ID.match(row["invocation_id"]) for row in recent)
    assert "?" not in {row["outcome"] for row in recent}
    warned_rows = data["warned"]
    assert isinstance(warned_rows, list)
    # The sleeper woke up at 84 % of its timeout (the spin may have been warned too).
    (warned,) = [row for row in warned_rows if row["name"] == "sleeper.wasm"]
    assert warned["outcome"] == "exited"
    assert warned["warning_list"][0]["kind"] == "time"
    assert 0.8 <= warned["warning_list"][0]["ratio"] < 1.0
    text = subprocess.run([sys.executable, "-m", "stockade", "telemetry", "show"],
                          capture_output=True, env=recorded, timeout=60).stdout.decode()
    assert "Monitor warnings" in text and warned["invocation_id"] in text
    assert all(row["invocation_id"] in text for row in recent)


def test_filters(recorded: dict[str, str]) -> None:
    timeouts = show("--outcome", "timeout", env=recorded)
    assert [row["name"] for row in timeouts["recent"]] == ["spin.wasm"]  # type: ignore[index]
    assert timeouts["invocations"] == 1 and timeouts["violations"] == {"timeout": 1}
    hellos = show("--function", "hello.wasm", env=recorded)
    assert hellos["invocations"] == 2 and hellos["outcomes"] == {"exited": 2}
    assert show("--since", "1h", env=recorded)["invocations"] == 4
    future = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 3600))
    assert show("--since", future, env=recorded)["invocations"] == 0
    assert show("--tenant", "nobody", env=recorded)["invocations"] == 0
    bad = subprocess.run([sys.executable, "-m", "stockade", "telemetry", "show", "--since",
                          "yesterday-ish"], capture_output=True, env=recorded, timeout=60)
    assert bad.returncode == 125 and len(bad.stderr.splitlines()) == 1


def test_follow_prints_new_invocations(recorded: dict[str, str]) -> None:
    follower = subprocess.Popen([sys.executable, "-m", "stockade", "telemetry", "show",
                                 "--follow", "--json", "--function", "hello.wasm", "-n", "1"],
                                stdout=subprocess.PIPE, env=recorded)
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())  # the summary
        assert first["invocations"] == 2
        subprocess.run([sys.executable, "-m", "stockade", "run", "--timeout", "200ms",
                        str(guest("spin.wasm"))], env=recorded, capture_output=True,
                       timeout=60)  # filtered out
        run = subprocess.run([sys.executable, "-m", "stockade", "run", "--json",
                              str(guest("hello.wasm"))], env=recorded, capture_output=True,
                             timeout=60)
        line = json.loads(follower.stdout.readline())
        assert line["kind"] == "invocation" and line["name"] == "hello.wasm"
        assert line["outcome"] == "exited" and ID.match(line["invocation_id"])
        assert json.loads(run.stdout)["outcome"] == "exited"
    finally:
        follower.terminate()
        follower.wait(10)
        if follower.stdout is not None:
            follower.stdout.close()


def test_gateway_refusals_are_apart_from_latency(tmp_path: Path, shared_cache: Path) -> None:
    manifest = tmp_path / "stockade.toml"
    manifest.write_text(f'''
[server]
telemetry = "cloud"
[tenant.acme]
[[function]]
name = "hello"
route = "/hello"
module = "{module("hello")}"
tenant = "acme"
rate = 1
burst = 1
[[function]]
name = "echo"
route = "/echo"
module = "{module("echo")}"
''')
    env = gateway_env(shared_cache, tmp_path / "state")
    gateway = Gateway(manifest, env, ())
    try:
        statuses = [gateway.client.get("/hello").status_code for _ in range(6)]
        assert gateway.client.get("/echo").status_code == 200
    finally:
        gateway.stop()
    refused = statuses.count(429)
    assert refused >= 3 and statuses[0] == 200, statuses
    data = show(env=env)
    assert data["rejections"] == {"hello 429": refused}
    assert data["spans"] == 6 - refused + 1  # invocations only: no server spans listed
    recent = data["recent"]
    assert isinstance(recent, list)
    assert {row["outcome"] for row in recent} == {"exited"}
    acme = show("--tenant", "acme", env=env)
    assert {row["name"] for row in acme["recent"]} == {"hello"}  # type: ignore[union-attr]
    assert {row["tenant"] for row in acme["recent"]} == {"acme"}  # type: ignore[union-attr]
    rejected = show("--outcome", "rejected", env=env)
    assert rejected["rejections"] == {"hello 429": refused} and rejected["spans"] == 0
    assert stockade("telemetry", "show", "--file", str(tmp_path / "none")).returncode == 0
