from __future__ import annotations

from pathlib import Path

import pytest

from stockade import PolicyError
from stockade.policy import DirGrant, Policy, load_policy, profile


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_profiles_match_design() -> None:
    strict, default, permissive = (profile(n).limits for n in ("strict", "default", "permissive"))
    assert (strict.fuel, strict.timeout, strict.max_memory) == (10**9, 30.0, 16 * 1024**2)
    assert (strict.max_output, strict.disk_quota, strict.max_files) == (1024**2, 0, 0)
    # No instruction budget by default: the timeout stops a runaway guest (epochs only).
    assert (default.fuel, default.timeout, default.max_memory) == (None, 60.0, 128 * 1024**2)
    assert (default.disk_quota, default.max_files) == (64 * 1024**2, 1000)
    assert (permissive.fuel, permissive.timeout, permissive.max_memory) == (None, 600.0, 1024**3)
    assert (permissive.disk_quota, permissive.max_files) == (1024**3, 100_000)


def test_unknown_profile_names_choices() -> None:
    with pytest.raises(PolicyError, match="strict, default, permissive"):
        Policy.from_profile("lenient")


def test_load_full_policy(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    path = write(tmp_path, """
profile = "strict"
[limits]
timeout = "2s"
max_memory = "32MiB"
fuel = "unlimited"
sync = "limit:5"
[capabilities]
dirs = ["data:/data", {host = "/tmp", guest = "/tmp", mode = "rw"}]
env = {GREETING = "hi"}
env_allow = ["LANG"]
""")
    policy = load_policy(path)
    assert policy.profile == "strict"
    assert policy.limits.timeout == 2.0
    assert policy.limits.max_memory == 32 * 1024**2
    assert policy.limits.fuel is None
    assert policy.limits.sync_limit() == 5
    assert policy.limits.max_output == 1024**2  # from the profile
    assert policy.capabilities.dirs == (
        DirGrant(tmp_path / "data", "/data", False), DirGrant(Path("/tmp"), "/tmp", True))
    assert policy.capabilities.env == (("GREETING", "hi"),)
    assert policy.capabilities.env_allow == ("LANG",)


@pytest.mark.parametrize(("text", "message"), [
    ("[limits]\ntimeout = 'soon'", r"policy.toml: limits.timeout: not a duration"),
    ("[limits]\nmax_memroy = '1MiB'", r"limits.max_memroy: unknown limit"),
    ("[limits]\nmax_files = -3", r"limits.max_files: must not be negative"),
    ("[capabilities]\ndirs = [{host = 'x', mode = 'rwx'}]", r"capabilities.dirs\[0\].mode"),
    ("[capabilities]\nnetwork = true", r"unknown key capabilities.network"),
    ("wat = 1", r"unknown key 'wat'"),
    ("profile = 'lenient'", r"profile: unknown profile"),
    ("[limits\ntimeout = 1", r"invalid TOML"),
])
def test_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message) as info:
        load_policy(write(tmp_path, text))
    assert str(tmp_path / "policy.toml") in info.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "absent.toml")


@pytest.mark.parametrize(("spec", "grant"), [
    ("/srv", DirGrant(Path("/srv"), "/srv", False)),
    ("/srv:/data", DirGrant(Path("/srv"), "/data", False)),
    ("/srv:/data:rw", DirGrant(Path("/srv"), "/data", True)),
    ("/srv:rw", DirGrant(Path("/srv"), "/srv", True)),
])
def test_dir_grant_parse(spec: str, grant: DirGrant) -> None:
    assert DirGrant.parse(spec) == grant


def test_hostcall_caps_from_toml(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "[limits.hostcall_caps]\nrandom_get = 5\n"))
    assert policy.limits.hostcall_caps == (("random_get", 5),)
    with pytest.raises(PolicyError, match="limits.hostcall_caps: 'clock_time_get' is not"):
        load_policy(write(tmp_path, "[limits.hostcall_caps]\nclock_time_get = 5\n"))
