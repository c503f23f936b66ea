"""`config.json` values of the wrong type or range (`linux.resources`, `process.rlimits`,
`process.env`) and bind mounts of a missing source are refused at `create` in one line
(exit 78), as runc refuses them: skipped, the guest ran without the limit or the
directory the bundle asked for. Valid values keep working."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ..conftest import guest
from .direct import create, host_policy_env, runtime, wait_gone

MiB = 1024**2


def _config(**process: Any) -> dict[str, Any]:
    return {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"args": ["/hello.wasm"], "cwd": "/", **process}}


def _bundle(tmp_path: Path, config: dict[str, Any]) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
    (bundle / "rootfs" / "hello.wasm").write_bytes(guest("hello.wasm").read_bytes())
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def _refused(tmp_path: Path, env: dict[str, str], bundle: Path) -> str:
    """`create` of `bundle`: asserts it was refused (78) and returns its stderr; a
    container it made anyway is deleted (its process would wait for `start` for ever)."""
    created = create(tmp_path, env, bundle)
    if created.pid is not None:
        runtime(tmp_path, env, "delete", "--force", "c1")
        wait_gone(created.pid)
    errors = created.errors.read_text()
    assert created.returncode == 78 and created.pid is None, errors
    assert len(errors.strip().splitlines()) == 1, errors
    assert not (tmp_path / "root" / "c1").exists()
    return errors


def _memory(limit: Any) -> dict[str, Any]:
    return {**_config(), "linux": {"resources": {"memory": {"limit": limit}}}}


def _rlimit(**rlimit: Any) -> dict[str, Any]:
    return _config(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 64, "hard": 64, **rlimit}])


@pytest.mark.parametrize(("config", "said"), [
    (_memory("16777216"), "linux.resources.memory.limit: expected an integer"),
    (_memory(16777216.5), "linux.resources.memory.limit: expected an integer"),
    (_memory(-5), "linux.resources.memory.limit: expected an integer of at least -1"),
    (_memory(True), "linux.resources.memory.limit: expected an integer"),
    ({**_config(), "linux": {"resources": {"cpu": {"quota": "50000"}}}},
     "linux.resources.cpu.quota"),
    (_rlimit(hard="x"), "process.rlimits[0].hard: expected an integer"),
    (_rlimit(soft=-1), "process.rlimits[0].soft: expected an integer"),
    (_rlimit(soft=128), "soft 128 is above hard 64"),
    (_rlimit(type="RLIMIT_BOGUS"), "process.rlimits[0].type: not an rlimit"),
    (_config(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 64}]), "needs both soft and hard"),
    (_config(rlimits=["RLIMIT_NOFILE"]), "process.rlimits[0] is not an object"),
    (_config(env=["A=1", 5]), "process.env[1] is not a string"),
    (_config(env=["NOEQUALS"]), "process.env[0] 'NOEQUALS': expected KEY=VALUE"),
    (_config(env=["=v"]), "expected KEY=VALUE"),
    (_config(env="A=1"), "process: env is not an array"),
    # Empty values of the wrong type read as absent.
    (_config(env=""), "process: env is not an array"),
    (_config(rlimits={}), "process: rlimits is not an array"),
    ({**_config(), "linux": {"resources": 0}}, "resources is not an object"),
    ({**_config(), "linux": {"resources": {"memory": False}}}, "memory is not an object"),
], ids=["memory-string", "memory-float", "memory-negative", "memory-bool", "cpu-string",
        "rlimit-hard-string", "rlimit-negative", "rlimit-soft-above-hard", "rlimit-type",
        "rlimit-no-hard", "rlimit-not-object", "env-number", "env-no-equals",
        "env-no-name", "env-not-list", "env-empty-string", "rlimits-empty-object",
        "resources-zero", "memory-false"])
def test_a_malformed_value_is_refused_at_create(tmp_path: Path, config: dict[str, Any],
                                               said: str) -> None:
    errors = _refused(tmp_path, host_policy_env(tmp_path, tmp_path), _bundle(tmp_path, config))
    assert said in errors, errors


@pytest.mark.parametrize(("limit", "expected"), [(16 * MiB, 16 * MiB), (-1, 128 * MiB),
                                                 (0, 128 * MiB), (2**40, 128 * MiB)])
def test_a_valid_memory_limit_only_narrows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           limit: int, expected: int) -> None:
    """-1 is the spec's unlimited (and 0 unset): the profile's limit stays."""
    from stockade.runtime.bundle import read_bundle

    env = host_policy_env(tmp_path, tmp_path)
    monkeypatch.setenv("STOCKADE_RUNTIME_POLICY", env["STOCKADE_RUNTIME_POLICY"])
    with read_bundle(_bundle(tmp_path, _memory(limit))) as spec:
        assert spec.policy.limits.max_memory == expected


def test_valid_rlimits_and_env_are_applied(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from stockade.runtime.bundle import read_bundle

    env = host_policy_env(tmp_path, tmp_path)
    monkeypatch.setenv("STOCKADE_RUNTIME_POLICY", env["STOCKADE_RUNTIME_POLICY"])
    config = _config(env=["A=1", "EMPTY="], rlimits=[
        {"type": "RLIMIT_NOFILE", "soft": 12, "hard": 1024},
        {"type": "RLIMIT_NPROC", "soft": 2**64 - 1, "hard": 2**64 - 1}])
    with read_bundle(_bundle(tmp_path, config)) as spec:
        assert spec.policy.limits.max_open_files == 12
        assert ("A", "1") in spec.policy.capabilities.env
        assert ("EMPTY", "") in spec.policy.capabilities.env


def test_a_bind_mount_of_a_missing_source_is_refused(tmp_path: Path) -> None:
    env = host_policy_env(tmp_path, tmp_path)
    config = {**_config(), "mounts": [{"destination": "/data", "type": "bind",
                                       "source": str(tmp_path / "nonexistent"),
                                       "options": ["rbind", "rw"]}]}
    errors = _refused(tmp_path, env, _bundle(tmp_path, config))
    assert "nonexistent" in errors and "/data" in errors, errors


@pytest.mark.parametrize(("mount", "words"), [
    ({"destination": "/data", "type": "bind", "options": ["rbind"]}, "without a source"),
    ({"destination": "/data", "source": "", "type": "bind"}, "without a source"),
    ({"source": "SRC", "type": "bind"}, "absolute path"),
    ({"destination": "data", "source": "SRC", "type": "bind"}, "absolute path"),
])
def test_a_bind_mount_without_source_or_absolute_destination_is_refused(
        tmp_path: Path, mount: dict[str, Any], words: str) -> None:
    # An empty source was the runtime's working directory (Path("") is "."), and a
    # missing destination the guest path "None".
    env = host_policy_env(tmp_path, tmp_path)
    mount = {key: str(tmp_path) if value == "SRC" else value for key, value in mount.items()}
    errors = _refused(tmp_path, env, _bundle(tmp_path, {**_config(), "mounts": [mount]}))
    assert words in errors, errors


@pytest.mark.parametrize("how", ["a loop of links", "a path through a file"])
def test_a_bind_mount_no_directory_can_be_opened_at_is_refused(tmp_path: Path,
                                                              how: str) -> None:
    # Only a missing source was refused: these gave no grant and no error either.
    env = host_policy_env(tmp_path, tmp_path)
    (tmp_path / "file").write_text("x")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    source = tmp_path / ("loop" if how == "a loop of links" else "file/inside")
    config = {**_config(), "mounts": [{"destination": "/data", "type": "bind",
                                       "source": str(source), "options": ["rbind"]}]}
    errors = _refused(tmp_path, env, _bundle(tmp_path, config))
    assert "/data" in errors, errors


def test_a_bind_mount_of_a_file_is_still_skipped(tmp_path: Path) -> None:
    """Podman binds files (`/etc/hosts`, `/run/.containerenv`): not granted, not refused."""
    env = host_policy_env(tmp_path, tmp_path)
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    config = {**_config(), "mounts": [{"destination": "/etc/hosts", "type": "bind",
                                       "source": str(tmp_path / "hosts"),
                                       "options": ["rbind", "ro"]}]}
    created = create(tmp_path, env, _bundle(tmp_path, config))
    assert created.returncode == 0 and created.pid is not None, created.errors.read_text()
    try:
        runtime(tmp_path, env, "start", "c1")
        wait_gone(created.pid)
        assert "Hello" in created.output.read_text()
    finally:
        runtime(tmp_path, env, "delete", "--force", "c1")
