"""The breaker and audit variables (`STOCKADE_BREAKER_*`, `STOCKADE_AUDIT_*`): checked
once, in one place, by every command that uses them, with one line of error; used as
checked; and ignored (with a warning) by commands whose feature is off."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from stockade.engine.cache import AotCache
from stockade.errors import UsageError
from stockade.paths import config_dir
from stockade.result import Outcome
from stockade.telemetry import Telemetry, open_telemetry, verify
from tests.conftest import guest, refused, stockade

from ..gateway.conftest import gateway_env, module
from .runs import DIGEST, make_run

MALFORMED = [("STOCKADE_AUDIT_MAX_BYTES", "abc"), ("STOCKADE_AUDIT_MAX_BYTES", "1500")]


def _kinds(path: Path) -> list[str]:
    return [json.loads(line)["kind"] for line in path.read_text().splitlines()]


def _violate(telemetry: Telemetry) -> None:
    info, result = make_run(Outcome.TIMEOUT)
    telemetry.observer.run_finished(info, result)


# -- one check for every reader -------------------------------------------------------


@pytest.mark.parametrize("name, value", MALFORMED)
def test_compile_refuses_a_malformed_audit_setting_as_run_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    # `compile` writes audit records through the AoT cache: a malformed size cost the
    # record (a warning, exit 0) where `run` stopped with one line.
    monkeypatch.setenv(name, value)
    compiled = stockade("compile", str(guest("hello.wasm")), "-o", str(tmp_path / "h.cwasm"))
    ran = stockade("run", str(guest("hello.wasm")))
    assert refused(compiled, name) == refused(ran, name)
    assert not (tmp_path / "h.cwasm").exists()


@pytest.mark.parametrize("name, value", MALFORMED)
def test_the_cache_checks_the_audit_settings_as_telemetry_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError) as opened:
        open_telemetry()
    with pytest.raises(UsageError) as cached:
        AotCache(tmp_path / "cache", key=lambda: b"k" * 32)
    assert cached.value.message == opened.value.message


def test_a_cache_refusal_is_audited_with_the_settings_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The cache's own audit record is written with what was checked when it was made,
    # whatever the variable says later: a record is never dropped over a setting.
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(0o777)  # ours, but others may write it: tightened, and audited
    cache = AotCache(root, key=lambda: b"k" * 32)
    monkeypatch.setenv("STOCKADE_AUDIT_MAX_BYTES", "abc")
    assert cache.store("fp", DIGEST, b"native code") is not None
    audit = tmp_path / "state" / "audit.jsonl"
    assert _kinds(audit) == ["cache_refused"]
    assert verify(audit).ok


# -- used as checked ------------------------------------------------------------------


def test_the_audit_log_uses_the_mapping_telemetry_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The mapping given was checked while the audit log read os.environ: a size refused
    # there lost every record of a telemetry opened with a good one.
    monkeypatch.setenv("STOCKADE_AUDIT_MAX_BYTES", "abc")
    key = tmp_path / "keys" / "audit.key"
    env = {"STOCKADE_AUDIT_MAX_BYTES": "8KiB", "STOCKADE_AUDIT_KEY": str(key)}
    with open_telemetry(env=env, breaker=False) as telemetry:
        assert telemetry.audit.max_bytes == 8192
        assert telemetry.audit.key_path == key
        _violate(telemetry)
    assert _kinds(tmp_path / "state" / "audit.jsonl") == ["violation"]
    assert key.exists() and verify(tmp_path / "state" / "audit.jsonl", key_path=key).ok


def test_settings_changed_after_opening_do_not_change_the_audit_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_AUDIT_MAX_BYTES", "4KiB")
    with open_telemetry(breaker=False) as telemetry:
        monkeypatch.setenv("STOCKADE_AUDIT_MAX_BYTES", "abc")
        monkeypatch.setenv("STOCKADE_AUDIT_KEY", str(tmp_path / "elsewhere.key"))
        _violate(telemetry)
        assert telemetry.audit.max_bytes == 4096
    assert _kinds(tmp_path / "state" / "audit.jsonl") == ["violation"]
    assert not (tmp_path / "elsewhere.key").exists()


def test_the_breakers_use_the_mapping_telemetry_checked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_BREAKER_THRESHOLD", "many")
    with open_telemetry(env={"STOCKADE_BREAKER_THRESHOLD": "1"}) as telemetry:
        assert telemetry.breaker.config.threshold == 1
        _violate(telemetry)
        assert not telemetry.admit("hello.wasm", DIGEST).allowed


def test_audit_settings_from_a_mapping() -> None:
    from stockade.telemetry.envsettings import AuditSettings

    settings = AuditSettings.from_env({"STOCKADE_AUDIT_MAX_BYTES": "1MiB",
                                       "STOCKADE_AUDIT_KEY": "/k/audit.key"})
    assert settings == AuditSettings(1024**2, Path("/k/audit.key"))
    # Directories come from `stockade.paths`, as everywhere else.
    assert AuditSettings.from_env({}) == AuditSettings(16 * 1024**2, config_dir() / "audit.key")
    with pytest.raises(UsageError, match="STOCKADE_AUDIT_MAX_BYTES='2KiB': use at least"):
        AuditSettings.from_env({"STOCKADE_AUDIT_MAX_BYTES": "2KiB"})


# -- a feature that is off ------------------------------------------------------------


@pytest.mark.parametrize("name, value, off", [
    ("STOCKADE_BREAKER_COOLDOWN", "soon", "breaker"),
    ("STOCKADE_BREAKER_TRAPS", "sometimes", "breaker"),
    ("STOCKADE_AUDIT_MAX_BYTES", "abc", "audit"),
])
def test_variables_of_a_feature_turned_off_are_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        name: str, value: str, off: str) -> None:
    monkeypatch.setenv(name, value)
    with caplog.at_level(logging.WARNING, "stockade.telemetry"):
        with open_telemetry(**{off: False}) as telemetry:  # type: ignore[arg-type]
            _violate(telemetry)
    (line,) = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert "ignored" in line and ("breakers are off" in line or "audit log is off" in line)
    with pytest.raises(UsageError, match=name):
        open_telemetry()  # and refused when the feature is on


def test_traps_can_be_counted_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a manifest's `breaker_traps` says wins over STOCKADE_BREAKER_TRAPS, without the
    # caller reading the variables itself.
    monkeypatch.setenv("STOCKADE_BREAKER_TRAPS", "off")
    with open_telemetry(breaker_traps=True) as telemetry:
        config = telemetry.breaker_config
        assert config is not None and config.count_traps
    with open_telemetry(breaker=False, breaker_traps=True) as telemetry:
        assert telemetry.breaker_config is None


def _serve(manifest: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "stockade", "serve", "-c", str(manifest),
                             "--port", "0"], stderr=subprocess.PIPE, env=env)


def _manifest(tmp_path: Path, breakers: bool) -> Path:
    path = tmp_path / "stockade.toml"
    path.write_text(f'[server]\nbreakers = {str(breakers).lower()}\n'
                    f'[[function]]\nname = "hello"\nroute = "/hello"\n'
                    f'module = "{module("hello")}"\n')
    return path


def test_serve_with_breakers_refuses_a_malformed_breaker_variable(
        tmp_path: Path, shared_cache: Path) -> None:
    env = {**gateway_env(shared_cache, tmp_path / "state"), "STOCKADE_BREAKER_COOLDOWN": "soon"}
    server = _serve(_manifest(tmp_path, breakers=True), env)
    _, err = server.communicate(timeout=60)
    said = err.decode()
    assert server.returncode == 125, said
    assert "STOCKADE_BREAKER_COOLDOWN" in said.splitlines()[0] and "Traceback" not in said


def test_serve_without_breakers_starts_despite_a_malformed_breaker_variable(
        tmp_path: Path, shared_cache: Path) -> None:
    env = {**gateway_env(shared_cache, tmp_path / "state"), "STOCKADE_BREAKER_COOLDOWN": "soon"}
    server = _serve(_manifest(tmp_path, breakers=False), env)
    try:
        assert server.stderr is not None
        said = []
        for raw in server.stderr:
            said.append(raw.decode(errors="replace"))
            if "listening on" in said[-1]:
                break
        assert any("listening on" in line for line in said), "".join(said)
        assert any("STOCKADE_BREAKER_COOLDOWN" in line and "ignored" in line
                   for line in said), "".join(said)
    finally:
        server.terminate()
        server.communicate(timeout=30)
