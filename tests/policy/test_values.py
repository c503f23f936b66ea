"""Limits and invocations are checked when built: human units in, clear errors out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stockade import DirGrant, Invocation, Limits, Policy, PolicyError, UsageError


def test_human_units_are_accepted() -> None:
    limits = Policy().with_limits(timeout="2s", max_memory="32MiB", fuel=1e9,
                                  max_output="1MiB").limits
    assert (limits.timeout, limits.max_memory, limits.fuel, limits.max_output) == (
        2.0, 32 * 1024**2, 10**9, 1024**2)
    assert type(limits.fuel) is int
    assert Policy().with_limits(timeout="1d").limits.timeout == 86_400.0


@pytest.mark.parametrize(("changes", "names"), [
    ({"timeout": -1}, "timeout"),
    ({"timeout": "2 parsecs"}, "timeout"),
    ({"timeout": "2d"}, "more than a day"),  # a unit it knows, past the ceiling
    ({"timeout": "10us"}, "less than 1ms"),  # shown as 0 ms: no timeout, to a reader
    ({"fuel": 1.5}, "fuel"),
    ({"fuel": "lots"}, "fuel"),
    ({"max_memory": 16}, "max_memory"),
    ({"max_memory": None}, "max_memory"),
    ({"max_output": -3}, "max_output"),
    ({"max_files": True}, "max_files"),
    ({"hostcall_caps": {"random_gte": 3}}, "did you mean 'random_get'"),
    ({"timout": 3}, "did you mean 'timeout'"),
])
def test_bad_values_raise_naming_the_parameter(changes: dict[str, Any], names: str) -> None:
    with pytest.raises(PolicyError, match=names):
        Policy().with_limits(**changes)


def test_limits_built_directly_are_checked() -> None:
    with pytest.raises(PolicyError, match="max_memory"):
        Limits(max_memory="lots")  # type: ignore[arg-type]


def test_a_string_of_arguments_is_refused_not_split() -> None:
    with pytest.raises(UsageError, match="sequence of strings"):
        Invocation(args="-c print(1)")  # type: ignore[arg-type]


def test_invocation_inputs_are_normalised() -> None:
    invocation = Invocation(args=["-c", "x"], stdin="text", env={"A": "1"})  # type: ignore[arg-type]
    assert (invocation.args, invocation.stdin, invocation.env) == (
        ("-c", "x"), b"text", (("A", "1"),))


@pytest.mark.parametrize("bad", [{"args": [1]}, {"stdin": 5}, {"env": {"A=B": "1"}},
                                 {"env": {"A": 1}}, {"name": 3}])
def test_bad_invocation_inputs(bad: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Invocation(**bad)


@pytest.mark.parametrize(("spec", "grant"), [
    ("./data::/data", DirGrant(host=Path("data"), guest="/data")),
    ("/srv::/srv:rw", DirGrant(host=Path("/srv"), guest="/srv",
                               writable=True)),
])
def test_wasmtime_dir_form(spec: str, grant: DirGrant) -> None:
    assert DirGrant.parse(spec) == grant


@pytest.mark.parametrize("stack", ["0", "3MiB", 2 * 1024**2 + 1])
def test_a_stack_wasmtime_would_abort_on_is_a_policy_error(tmp_path: Path,
                                                           stack: object) -> None:
    """wasmtime panics (SIGABRT: the whole process, nothing to catch) building an engine
    whose guest stack is 0 or above 2 MiB: a policy file or an API caller took the host
    down (found by review)."""
    from stockade.engine import EngineConfig
    from tests.conftest import guest, stockade

    with pytest.raises(PolicyError, match="max_stack"):
        Limits(max_stack=stack)
    policy = tmp_path / "stack.toml"
    policy.write_text(f'[limits]\nmax_stack = "{stack}"\n')
    done = stockade("run", "--policy", str(policy), str(guest("hello.wasm")))
    assert done.returncode == 125 and b"max_stack" in done.stderr, done.stderr
    with pytest.raises(UsageError, match="guest stack"):
        EngineConfig(max_stack=3 * 1024**2).settings()


@pytest.mark.parametrize("bad", [
    {"args": ("a\0b",)}, {"env": (("A=B", "c"),)}, {"env": {"A": "b\0c"}},
    {"env": (("", "x"),)}])
def test_what_no_backend_can_pass_is_refused_when_built(bad: dict[str, Any]) -> None:
    """A NUL in an argument or a variable, or a name with `=`: the in-process backend cut
    the text at the NUL and gave `A=B`'s value to `A`, silently, where a worker refused
    them (found by review)."""
    with pytest.raises(UsageError, match="Invocation"):
        Invocation(**bad)


@pytest.mark.parametrize("files", [{".": "x"}, {"a": "x", "a/b": "y"}, {"a\0b": "x"}])
def test_files_that_cannot_be_written_are_one_usage_error(tmp_path: Path,
                                                          files: dict[str, str]) -> None:
    from stockade.cpython import write_files

    with pytest.raises(UsageError, match="files"):
        write_files(tmp_path, files)


@pytest.mark.parametrize("env", [None, "", 0, False])
def test_an_environment_of_no_shape_is_refused(env: object) -> None:
    """`if env:` let `None`, `""` and `0` through, to fail deep in a run (found by
    review); empty mappings and sequences are no variables."""
    with pytest.raises(UsageError, match="Invocation env"):
        Invocation(env=env)  # type: ignore[arg-type]
    assert Invocation(env={}).env == () and Invocation(env=[]).env == ()


@pytest.mark.parametrize("scratch", ["/x", "/x/", "//x", "/y/../x"])
def test_a_scratch_directory_at_a_granted_guest_path_is_refused(tmp_path: Path,
                                                                scratch: str) -> None:
    """`--scratch /x --dir D:/x`: the scratch directory, preopened last, hid the grant
    (the host file was not there for the guest), where two grants at one path are
    refused (found by review)."""
    grants = (DirGrant.parse(f"{tmp_path}:/x"),)
    with pytest.raises(PolicyError, match="scratch directory's guest path .* also granted"):
        Policy().with_capabilities(dirs=grants, scratch=scratch)
    assert Policy().with_capabilities(dirs=grants, scratch="/y").capabilities.scratch == "/y"


def test_two_grants_at_one_guest_path_are_refused(tmp_path: Path) -> None:
    # Which of two preopens at one guest path the guest resolves is the backend's luck.
    for other in ("/data/", "//data", "data", "./data", "/x/../data"):
        grants = (DirGrant.parse(f"{tmp_path}:/data"), DirGrant.parse(f"{tmp_path}:{other}:rw"))
        with pytest.raises(PolicyError, match="two directory grants at guest path /data"):
            Policy().with_capabilities(dirs=grants)
