"""`[state]`: backends, policies, timeouts; no credentials in the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade.errors import PolicyError
from stockade.gateway.manifest import parse_manifest
from stockade.state import StateSettings, parse_state
from stockade.state.settings import redis_password


def test_defaults_deny_and_stay_local() -> None:
    assert parse_state({}, "m.toml") == StateSettings("local", "fail_closed", 1.0)
    settings = parse_state({"backend": "redis://cache.internal:6380/2",
                            "on_unavailable": "fail_open", "timeout": "100ms"}, "m.toml")
    assert settings == StateSettings("redis://cache.internal:6380/2", "fail_open", 0.1)
    assert settings.shared and not StateSettings().shared
    assert parse_state({"backend": "rediss://h"}, "m").backend == "rediss://h/0"


@pytest.mark.parametrize(("table", "message"), [
    ({"backend": "redis://:hunter2@h:6379/0"}, "STOCKADE_REDIS_PASSWORD"),
    ({"backend": "redis://user:pw@h/0"}, "credentials do not belong in the manifest"),
    ({"backend": "http://h:6379"}, "redis://HOST:PORT/DB"),
    ({"backend": "redis://h:99999/0"}, "state.backend"),
    ({"backend": "redis://h/zero"}, "database number"),
    ({"backend": "redis://h/0?password=x"}, "database number"),
    ({"backend": 6379}, "state.backend"),
    ({"on_unavailable": "shrug"}, "fail_closed, fail_open"),
    ({"timeout": "1h"}, "at most 10s"),
    ({"timeout": "soon"}, "state.timeout"),
    ({"url": "redis://h"}, "unknown key state.url"),
])
def test_bad_state_settings_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError) as error:
        parse_state(table, "m.toml")
    assert message in str(error.value) and str(error.value).startswith("m.toml: ")
    assert "hunter2" not in str(error.value)


@pytest.mark.parametrize(("backend", "message"), [
    ("redis://127.0.0.1:6390/\u00b2", "database number"),  # '²'.isdigit(): a traceback
    ("redis://127.0.0.1:6390/\uff11", "database number"),  # full-width 1: was DB 1
    ("redis://127.0.0.1:6390/99999999999999999999999", "database number"),
    ("redis://127.0.0.1:6390/" + "9" * 5000, "database number"),  # past int()'s digits
    ("redis://127.0.0.1:6390/2147483647", "database number"),
    ("redis://127.0.0.1:0/0", "port"),  # redis-py took port 0 for 6379
    ("redis://127.0.0.1:\uff16\uff13\uff19\uff10/0", "state.backend"),
    ("redis://a b/0", "blanks or control characters"),
    ("redis://h\u0000st/0", "blanks or control characters"),
    ("redis://h\nst/0", "blanks or control characters"),  # urlsplit drops it: "hst"
    ("redis://h\tst:6390/0", "blanks or control characters"),
    (" redis://h/0", "blanks or control characters"),
    ("redis://h\u00a0st/0", "blanks or control characters"),
])
def test_a_backend_url_is_checked_when_the_manifest_is_read(backend: str,
                                                            message: str) -> None:
    """Each was accepted at load and failed only when a request or `breaker list` first
    used the store (a traceback for `/²`), or named another store than written (found
    by review)."""
    with pytest.raises(PolicyError) as error:
        parse_state({"backend": backend}, "m.toml")
    text = str(error.value)
    assert message in text and text.startswith("m.toml: state.backend")
    assert len(text.splitlines()) == 1 and text.isprintable(), text


@pytest.mark.parametrize(("backend", "kept"), [
    ("redis://h:1/2147483646", "redis://h:1/2147483646"),
    ("redis://h:65535/007", "redis://h:65535/7"),
    ("rediss://[::1]:6390", "rediss://[::1]:6390/0"),
])
def test_a_backend_url_in_range_is_kept(backend: str, kept: str) -> None:
    assert parse_state({"backend": backend}, "m.toml").backend == kept


def test_the_password_comes_from_the_environment() -> None:
    assert redis_password({"STOCKADE_REDIS_PASSWORD": "a", "REDIS_PASSWORD": "b"}) == "a"
    assert redis_password({"REDIS_PASSWORD": "b"}) == "b"
    assert redis_password({}) is None


def test_the_manifest_carries_state(tmp_path: Path) -> None:
    data = {"state": {"backend": "redis://r:6379/0"},
            "function": [{"name": "f", "route": "/f", "module": "f.wasm"}]}
    manifest = parse_manifest(data, tmp_path / "stockade.toml")
    assert manifest.state.backend == "redis://r:6379/0"
    with pytest.raises(PolicyError, match="state: expected a table"):
        parse_manifest({**data, "state": "redis"}, tmp_path / "stockade.toml")
