"""The Python API's inputs are checked when given, as the CLI's and the policy file's
are: one documented exception (UsageError, PolicyError) with one line, never a raw
TypeError, AttributeError or a setting read some other way than it says."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade import (
    AsyncSandbox,
    Invocation,
    Policy,
    PolicyError,
    Sandbox,
    SandboxPool,
    UsageError,
)
from stockade.invocation import MAX_STDIN
from stockade.isolate import IsolatedSandbox
from stockade.isolate.factory import make_sandbox

from ..conftest import guest

STRICT = Policy.from_profile("strict")


@pytest.mark.parametrize("changes", [
    {"allow_precompiled": "false"},  # truthy: native code was accepted
    {"allow_precompiled": 1},
    {"keep_scratch": "no"},
    {"env_allow": "PATH"},  # read as the names P, A, T, H: host variables passed
    {"env_allow": ("A=B",)},
    {"env": {"A": "x\0y"}},  # the guest saw A=x
    {"env": {"A=B": "x"}},
    {"env": {"": "e"}},
    {"env": {1: 2}},  # a raw AttributeError at the run
    {"env": "A=1"},
    {"dirs": "/tmp"},
])
def test_capabilities_are_checked_when_built(changes: dict[str, Any]) -> None:
    with pytest.raises(PolicyError, match="capabilities"):
        STRICT.with_capabilities(**changes)


def test_a_policy_s_environment_still_takes_pairs_and_mappings() -> None:
    pairs = STRICT.with_capabilities(env=(("A", "1"),), env_allow=["HOME"]).capabilities
    mapping = STRICT.with_capabilities(env={"A": "1"}).capabilities
    assert pairs.env == mapping.env == (("A", "1"),) and pairs.env_allow == ("HOME",)


class _BytesPath:
    """A path-like whose `__fspath__` gives bytes, as `os.PathLike[bytes]` may."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __fspath__(self) -> bytes:
        return bytes(self.path)


class _NoPath:
    def __fspath__(self) -> int:
        return 7


@pytest.fixture(params=["none", "process"])
def any_sandbox(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The in-process sandbox and the isolated one: one check of what a module is."""
    with make_sandbox(STRICT, request.param) as sandbox:
        yield sandbox


@pytest.mark.parametrize("module", [123, None, ["hello.wasm"], "/tmp/a\0b.wasm", _NoPath()])
def test_a_module_that_is_no_path_or_bytes_is_a_usage_error(any_sandbox: Any,
                                                            module: Any) -> None:
    # The isolated sandbox raised ValueError for the NUL, the in-process one TypeError
    # for a path-like that is no path.
    with pytest.raises(UsageError, match="Sandbox: a module"):
        any_sandbox.run(module)


def test_module_bytes_in_any_buffer_and_any_path_like_run(any_sandbox: Any) -> None:
    # The isolated sandbox refused buffers and path-likes; bytes from `__fspath__` were
    # a raw TypeError in both.
    data = guest("hello.wasm").read_bytes()
    for module in (bytearray(data), memoryview(data), _BytesPath(guest("hello.wasm")),
                   _Bytes(data)):
        assert any_sandbox.run(module).ok


class _Bytes(bytes):
    """A subclass of bytes defined here: an isolated worker could not unpickle it, and
    died (an `error` where the in-process sandbox ran the module)."""


def test_a_sandbox_wants_a_policy_and_an_invocation() -> None:
    with pytest.raises(UsageError, match="expected a Policy"):
        Sandbox("strict")  # type: ignore[arg-type]
    with Sandbox(STRICT) as sandbox, pytest.raises(UsageError, match="expected an Invocation"):
        sandbox.run(guest("hello.wasm"), {"args": ["x"]})  # type: ignore[arg-type]


def test_a_closed_sandbox_runs_nothing(tmp_path: Path) -> None:
    sandbox = Sandbox(STRICT)
    assert sandbox.run(guest("hello.wasm")).ok
    sandbox.close()
    with pytest.raises(UsageError, match="closed"):
        sandbox.run(guest("hello.wasm"))


def test_standard_input_past_the_cli_s_bound_is_refused() -> None:
    # The CLI refused it; the API held 300 MB (935 MB of peak memory as a bytearray).
    with pytest.raises(UsageError, match="larger than 256 MiB"):
        Invocation(stdin=b"x" * (MAX_STDIN + 1))
    assert len(Invocation(stdin=b"x" * 1024).stdin) == 1024


def test_python_arguments_given_as_one_string_are_refused() -> None:
    # ("-c", code, *args) passed "abc" as the arguments a, b and c.
    from stockade.sandbox.python import python_invocation

    with pytest.raises(UsageError, match="not one str"):
        python_invocation("print(1)", args="abc")  # type: ignore[arg-type]
    assert python_invocation("print(1)", args=["abc"]).args == ("-c", "print(1)", "abc")


class _Lying(str):
    """A str whose `in` says no: checked by it, `A=B` passed as a name."""

    def __contains__(self, item: object) -> bool:
        return False


class _Changing(tuple):  # type: ignore[type-arg]
    """A tuple that gives other items each time it is read."""

    reads = 0

    def __iter__(self) -> Any:
        type(self).reads += 1
        return iter(("HOME",) if type(self).reads == 1 else ("A=B", "X\0Y"))


def test_values_are_checked_as_kept_not_as_they_answer() -> None:
    with pytest.raises(PolicyError, match="capabilities.env"):
        STRICT.with_capabilities(env=[(_Lying("A=B"), "v")])
    with pytest.raises(UsageError, match="Invocation env"):
        Invocation(env=[(_Lying("A=B"), "v")])
    with pytest.raises(UsageError, match="NUL"):
        Invocation(args=(_Lying("a\0b"),))
    _Changing.reads = 0
    kept = STRICT.with_capabilities(env_allow=_Changing()).capabilities.env_allow
    assert kept == ("HOME",) and type(kept[0]) is str


@pytest.mark.parametrize("policy", ["strict", 5, {"timeout": 1}])
@pytest.mark.parametrize("make", [
    lambda policy: Sandbox(policy),
    lambda policy: IsolatedSandbox(policy),
    lambda policy: AsyncSandbox(policy),
    lambda policy: AsyncSandbox(policy, isolate="process"),
    lambda policy: SandboxPool(policy, size=1),
    lambda policy: make_sandbox(policy, "process"),
    lambda policy: make_sandbox(policy),
], ids=["Sandbox", "IsolatedSandbox", "AsyncSandbox", "AsyncSandbox-process", "SandboxPool",
        "make_sandbox-process", "make_sandbox"])
def test_every_sandbox_wants_a_policy(make: Callable[[Any], object], policy: object) -> None:
    # Only the in-process Sandbox said so: the others raised AttributeError from inside.
    with pytest.raises(UsageError, match="expected a Policy"):
        make(policy)


@pytest.mark.parametrize("invocation", ["x", {"args": ["x"]}, ("x",)])
def test_every_sandbox_wants_an_invocation(any_sandbox: Any, invocation: object) -> None:
    # The isolated sandbox sent it to its worker: WorkerError ("'str' object has no
    # attribute 'env'").
    with pytest.raises(UsageError, match="expected an Invocation"):
        any_sandbox.run(guest("hello.wasm"), invocation)


def test_a_closed_isolated_sandbox_runs_nothing() -> None:
    # A WorkerError, where the README promises UsageError as for `Sandbox`.
    sandbox = IsolatedSandbox(STRICT)
    assert sandbox.run(guest("hello.wasm")).ok
    sandbox.close()
    with pytest.raises(UsageError, match="closed"):
        sandbox.run(guest("hello.wasm"))
    with pytest.raises(UsageError, match="closed"):
        sandbox.protections()


@pytest.mark.parametrize("arguments", [
    {"code": "print('\ud800')"},
    {"code": "1", "files": {"a.txt": "\ud800"}},
    {"code": "1", "files": {"\ud800.txt": "x"}},
    {"code": "1", "args": ["\udc80"]},
    {"code": "1", "env": {"A": "\ud800"}},
    {"code": "1", "stdin": "\ud800"},
], ids=["code", "file-text", "file-name", "args", "env", "stdin"])
def test_python_text_that_is_not_unicode_is_a_usage_error(arguments: dict[str, Any]) -> None:
    # Raw UnicodeEncodeError tracebacks, from wasmtime-py's WASI or `write_files`.
    with Sandbox(STRICT) as sandbox, pytest.raises(UsageError, match="not valid Unicode text"):
        sandbox.run_python(**arguments)


@pytest.mark.parametrize(("arguments", "words"), [
    ({"files": [("a.txt", "b")]}, "files: expected a mapping"),  # AttributeError
    ({"files": "a.txt"}, "files: expected a mapping"),
    ({"env": 5}, "env: expected a mapping"),  # TypeError
    ({"env": [("A",)]}, "env: expected a mapping"),
    ({"code": "print(1)\0"}, "code: contains a NUL"),
])
def test_python_arguments_of_the_wrong_kind_are_usage_errors(arguments: dict[str, Any],
                                                             words: str) -> None:
    arguments = {"code": "1", **arguments}
    with Sandbox(STRICT) as sandbox, pytest.raises(UsageError, match=words):
        sandbox.run_python(**arguments)


def test_every_sandbox_says_whether_it_is_closed_and_runs_nothing_after() -> None:
    """The second fix review: `closed` was on two of five, so `run_python` on a
    `CapiSandbox` raised AttributeError, and a closed `CapiSandbox` made its engine
    again and ran on."""
    import asyncio

    from stockade.sandbox.capi import CapiSandbox
    from stockade.sandbox.python import run_python

    hello = guest("hello.wasm")
    for sandbox in (Sandbox(STRICT), IsolatedSandbox(STRICT), CapiSandbox(STRICT)):
        assert not sandbox.closed
        sandbox.close()
        assert sandbox.closed
        with pytest.raises(UsageError, match="closed"):
            sandbox.run(hello)
        with pytest.raises(UsageError, match="closed"):
            run_python(sandbox, "print(1)")  # type: ignore[arg-type]

    async def pooled() -> None:
        for made in (AsyncSandbox(STRICT), SandboxPool(STRICT, size=1)):
            assert not made.closed
            await made.aclose()
            assert made.closed

    asyncio.run(pooled())
