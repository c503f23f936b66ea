"""Invocation ids are unique within and across processes; what an Invocation holds is
checked when it is built."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable

import pytest

from stockade import UsageError
from stockade.invocation import Invocation, new_invocation_id


def test_ids_are_32_hex_digits_and_unique() -> None:
    ids = {Invocation().invocation_id for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_a_forked_child_draws_a_new_prefix() -> None:
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        pid = os.fork()
    if pid == 0:
        os.write(write, new_invocation_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child[:16] != new_invocation_id()[:16]


@pytest.mark.parametrize("build", [
    lambda: Invocation(args=("ok", "\ud800")),
    lambda: Invocation(args=["\udc80x"]),
    lambda: Invocation(env={"\ud800": "x"}),
    lambda: Invocation(env=(("A", "x\udfff"),)),
    lambda: Invocation(stdin="\ud800"),
], ids=["args", "args-list", "env-name", "env-value", "stdin"])
def test_text_that_is_not_unicode_is_a_usage_error(build: Callable[[], Invocation]) -> None:
    """A lone surrogate was a raw UnicodeEncodeError from deep in a run in process (the
    isolated worker said "is not valid Unicode text"): one check, when built."""
    with pytest.raises(UsageError, match="not valid Unicode text"):
        build()


def test_text_beyond_ascii_is_kept() -> None:
    invocation = Invocation(args=("héllo", "日本"), env={"CLÉ": "välue"}, stdin="ß")
    assert invocation.args == ("héllo", "日本") and invocation.stdin == "ß".encode()
    assert invocation.env == (("CLÉ", "välue"),)


@pytest.mark.parametrize("value", [5, b"id", 1.5])
def test_an_invocation_id_is_text(value: object) -> None:
    with pytest.raises(UsageError, match="invocation_id"):
        Invocation(invocation_id=value)  # type: ignore[arg-type]
    assert Invocation(invocation_id="abc").invocation_id == "abc"
