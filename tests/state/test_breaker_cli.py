"""`stockade breaker list|reset --config MANIFEST` on the breakers replicas share in a
real redis-server: listed and reset there, not in this host's database; an unreachable
or refusing store is one line and exit 69, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from stockade.state import GateSpec, LocalState, Quota, StateSettings
from stockade.state.errors import BreakerOpen
from stockade.state.keys import TenantKeys
from stockade.state.redisstate import RedisState
from stockade.telemetry.breaker import BreakerConfig
from tests.conftest import refused, stockade

from .conftest import RedisServer

HOSTILE = "evil\x1b[2J\x07"  # a tenant name that would clear a terminal


def manifest(tmp_path: Path, url: str, timeout: str = "500ms") -> Path:
    path = tmp_path / "stockade.toml"
    path.write_text(f'[state]\nbackend = "{url}"\ntimeout = "{timeout}"\n')
    return path


def open_breaker(url: str, tenant: str, function: str = "f",
                 env: dict[str, str] | None = None) -> RedisState:
    """Trip `function:FUNCTION` of `tenant` in Redis the way a replica does."""
    state = RedisState(StateSettings(url), LocalState(), env=env or {})
    store = state.breakers(BreakerConfig(threshold=1, window=60, cooldown=300), None)
    transition = store.record(f"function:{function}", tenant, True)
    assert transition is not None and transition.new == "open"
    return state


def test_list_and_reset_act_on_the_shared_breakers(redis_server: RedisServer,
                                                   tmp_path: Path) -> None:
    path = manifest(tmp_path, redis_server.url)
    replica = open_breaker(redis_server.url, "acme")
    open_breaker(redis_server.url, HOSTILE, "g").close()
    try:
        listed = stockade("breaker", "list", "--config", str(path))
        assert listed.returncode == 0, listed.stderr
        text = listed.stdout.decode()
        assert "function:f" in text and "acme" in text and "open" in text
        assert "\x1b" not in text and "\x07" not in text  # escaped, not obeyed
        rows = [json.loads(line) for line in stockade(
            "breaker", "list", "--json", "--manifest", str(path)).stdout.splitlines()]
        assert {(r["key"], r["tenant"], r["state"]) for r in rows} == {
            ("function:f", "acme", "open"), ("function:g", HOSTILE, "open")}
        # This host's own database knows none of them.
        assert stockade("breaker", "list").stdout == b"no circuit breakers recorded\n"

        gate = replica.gate(GateSpec("f", "acme", Quota(), Quota(), 30.0, "function:f"))
        with pytest.raises(BreakerOpen):
            gate.admit()
        reset = stockade("breaker", "reset", "function:f", "--tenant", "acme", "-c", str(path))
        assert reset.returncode == 0, reset.stderr
        assert reset.stdout.decode() == f"reset 1 circuit breaker in {redis_server.url}\n"
        time.sleep(0.15)  # the refusal this replica cached runs out
        gate.admit().release()  # closed for every replica
        rows = [json.loads(line) for line in stockade(
            "breaker", "list", "--json", "-c", str(path)).stdout.splitlines()]
        assert [(r["key"], r["tenant"]) for r in rows] == [("function:g", HOSTILE)]
        last = json.loads((tmp_path / "state" / "audit.jsonl").read_text().splitlines()[-1])
        assert last["kind"] == "breaker_reset" and redis_server.url in last["message"]
        assert stockade("audit", "verify").returncode == 0
        everything = stockade("breaker", "reset", "--all", "-c", str(path))
        assert everything.stdout.decode().startswith("reset 1 circuit breaker in ")
        assert redis_server.client().keys("stockade:*:b:*") == []
    finally:
        replica.close()


def test_an_unreachable_store_is_one_line_and_exit_69(redis_server: RedisServer,
                                                      tmp_path: Path) -> None:
    path = manifest(tmp_path, redis_server.url)
    redis_server.stop()
    for args in (("list",), ("list", "--json"), ("reset", "--all")):
        start = time.monotonic()
        done = stockade("breaker", *args, "--config", str(path))
        assert done.returncode == 69, done
        (line,) = done.stderr.decode().splitlines()
        # Under --json the refusal is one JSON object too (cli.main).
        assert done.stdout == b"" if "--json" not in args else json.loads(done.stdout) == {
            "error": line.removeprefix("stockade: "), "exit_code": 69}
        assert line.startswith(f"stockade: shared state {redis_server.url} is unreachable")
        assert "Traceback" not in line
        assert time.monotonic() - start < 30  # a timeout, not a hang


def test_a_silent_store_times_out(tmp_path: Path) -> None:
    import socket

    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        path = manifest(tmp_path, f"redis://127.0.0.1:{silent.getsockname()[1]}/0", "300ms")
        done = stockade("breaker", "list", "--config", str(path))
    assert done.returncode == 69, done
    assert "is unreachable" in done.stderr.decode()


def test_credentials_come_from_the_environment_only(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", password="s3cret-for-test")
    try:
        path = manifest(tmp_path, server.url)
        open_breaker(server.url, "acme", env={"STOCKADE_REDIS_PASSWORD": "s3cret-for-test"}
                     ).close()
        refused = stockade("breaker", "list", "--config", str(path))
        assert refused.returncode == 69, refused
        assert "s3cret" not in refused.stderr.decode()
        os.environ["STOCKADE_REDIS_PASSWORD"] = "s3cret-for-test"  # isolated_env restores
        listed = stockade("breaker", "list", "--json", "--config", str(path))
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["tenant"] == "acme"
    finally:
        server.stop()


def test_a_local_or_broken_manifest(tmp_path: Path) -> None:
    local = tmp_path / "local.toml"
    local.write_text('[state]\nbackend = "local"\n')
    assert stockade("breaker", "list", "-c", str(local)).stdout == (
        b"no circuit breakers recorded\n")
    spoiled = tmp_path / "spoiled.toml"
    spoiled.write_text('[state]\nbackend = "redis://user:pw@127.0.0.1:1/0"\n')
    done = stockade("breaker", "list", "-c", str(spoiled))
    assert done.returncode == 125 and b"credentials do not belong" in done.stderr
    missing = stockade("breaker", "reset", "--all", "-c", str(tmp_path / "none.toml"))
    assert missing.returncode == 125 and b"manifest not found" in missing.stderr


@pytest.mark.parametrize("backend", [
    "redis://127.0.0.1:6390/\u00b2", "redis://127.0.0.1:0/0", "redis://a b/0",
    "redis://127.0.0.1:6390/99999999999999999999999"])
def test_a_bad_backend_url_is_refused_at_load(tmp_path: Path, backend: str) -> None:
    """`/²` was a ValueError traceback; port 0 reached Redis's default port; a database
    past any Redis's, or a host with a blank, failed only at the first use (found by
    review). Each is one line, exit 125, before anything is started."""
    path = tmp_path / "m.toml"
    path.write_text(f"[state]\nbackend = {json.dumps(backend)}\n")  # TOML reads JSON's
    refused(stockade("breaker", "list", "-c", str(path)), "state.backend")
    refused(stockade("serve", "-c", str(path), timeout=60), "state.backend")


@pytest.mark.parametrize("until", ["soon", "1e20", "inf", "-inf", "nan"])
def test_a_breaker_with_a_bad_field_is_listed_and_reset(redis_server: RedisServer,
                                                        tmp_path: Path, until: str) -> None:
    # One non-numeric field (a stray write) made `list` and `reset` fail for every
    # breaker, so the broken one could not be reset from here (found by review); a time
    # past what a date can show made the listing fail with OverflowError, and `--json`
    # print `Infinity`, which is not JSON (the next review).
    path = manifest(tmp_path, redis_server.url)
    keys = TenantKeys.of("alpha", "-", "function:ahello")
    redis_server.client().hset(keys.breaker, mapping={
        "key": "function:ahello", "tenant": "alpha", "state": "open", "trips": "x",
        "updated": "1", "until": until, "opened_at": until})
    listed = stockade("breaker", "list", "--json", "--config", str(path))
    assert listed.returncode == 0, listed.stderr.decode()
    [row] = [json.loads(line, parse_constant=pytest.fail) for line in listed.stdout.splitlines()]
    assert row["key"] == "function:ahello" and row["trips"] == 0
    shown = stockade("breaker", "list", "--config", str(path))
    assert shown.returncode == 0 and b"function:ahello" in shown.stdout, shown.stderr.decode()
    reset = stockade("breaker", "reset", "function:ahello", "--tenant", "alpha",
                     "-c", str(path))
    assert reset.returncode == 0, reset.stderr.decode()
    assert not redis_server.client().exists(keys.breaker)


def test_a_stray_write_breaks_neither_list_nor_another_tenants_reset(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """A field that is not UTF-8 made `list` and `reset` fail for every breaker; a stray
    `tenant` field made `reset --tenant` delete the breaker that tenant's name pointed
    at, another tenant's, and keep its own (found by review). Breakers are chosen and
    deleted by their key names."""
    import redis as redis_py

    path = manifest(tmp_path, redis_server.url)
    open_breaker(redis_server.url, "alpha").close()
    open_breaker(redis_server.url, "beta").close()
    alpha = TenantKeys.of("alpha", "-", "function:f").breaker
    beta = TenantKeys.of("beta", "-", "function:f").breaker
    raw = redis_py.Redis(port=redis_server.port, password=redis_server.password or None)
    raw.hset(alpha, mapping={"tenant": "beta", "state": b"\xff\xfeopen"})
    listed = stockade("breaker", "list", "--json", "--config", str(path))
    assert listed.returncode == 0, listed.stderr.decode()
    assert len(listed.stdout.splitlines()) == 2
    reset = stockade("breaker", "reset", "function:f", "--tenant", "alpha", "-c", str(path))
    assert reset.returncode == 0, reset.stderr.decode()
    assert not raw.exists(alpha) and raw.exists(beta)


def test_a_breaker_is_shown_and_audited_as_its_key_names_it(
        redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`list` and the audit record of a reset took the breaker's key and tenant from
    fields a stray write can change: alpha's breaker was listed as beta's, and its reset
    audited as the reset of another breaker (found by review)."""
    import redis as redis_py

    path = manifest(tmp_path, redis_server.url)
    open_breaker(redis_server.url, "alpha").close()
    alpha = TenantKeys.of("alpha", "-", "function:f").breaker
    raw = redis_py.Redis(port=redis_server.port, password=redis_server.password or None)
    raw.hset(alpha, mapping={"tenant": "beta", "key": "function:pay"})
    listed = stockade("breaker", "list", "--json", "--config", str(path))
    assert listed.returncode == 0, listed.stderr.decode()
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["key"], row["tenant"]) == ("function:f", "alpha")
    monkeypatch.setenv("STOCKADE_STATE_DIR", str(tmp_path / "state"))
    reset = stockade("breaker", "reset", "function:f", "--tenant", "alpha", "-c", str(path))
    assert reset.returncode == 0, reset.stderr.decode()
    audit = [json.loads(line) for line in
             (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    [record] = [r for r in audit if r.get("kind") == "breaker_reset"]
    assert (record["breaker"], record["tenant"]) == ("function:f", "alpha"), record


def test_a_key_of_the_wrong_type_blocks_no_other_breaker(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """One key under a breaker's name that is no hash (a stray SET) made `list` exit 69
    WRONGTYPE, and `reset` of another breaker fail with it, that one not reset (found
    by review). It is skipped, with a line saying so; so is a breaker whose violations
    are no sorted set, listed without them."""
    path = manifest(tmp_path, redis_server.url)
    raw = redis_server.client()
    raw.hset("stockade:{t}:b:function:good", "state", "open")
    raw.hset("stockade:{u}:b:function:other", "state", "open")
    raw.set("stockade:{u}:v:function:other", "junk")
    raw.set("stockade:{x}:b:function:bad", "junk")
    listed = stockade("breaker", "list", "--json", "-c", str(path))
    assert listed.returncode == 0, listed.stderr.decode()
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted((r["key"], r["tenant"], r["violations"]) for r in rows) == [
        ("function:good", "t", 0), ("function:other", "u", 0)]
    [note] = listed.stderr.decode().splitlines()
    assert "1 key of the wrong type" in note and "stockade:{x}:b:function:bad" in note, note
    assert "violations" in note, note
    reset = stockade("breaker", "reset", "function:good", "-c", str(path))
    assert reset.returncode == 0, reset.stderr.decode()
    assert reset.stdout.decode().startswith("reset 1 circuit breaker in ")
    assert not raw.exists("stockade:{t}:b:function:good")
    assert raw.get("stockade:{x}:b:function:bad") == "junk"  # not a breaker: left alone
    everything = stockade("breaker", "reset", "--all", "-c", str(path))
    assert everything.stdout.decode().startswith("reset 1 circuit breaker in "), everything
    assert raw.keys("stockade:*") == ["stockade:{x}:b:function:bad"]
