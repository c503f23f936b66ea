"""Fixtures for worker isolation: one strict isolated sandbox per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stockade import Policy
from stockade.isolate import IsolatedSandbox, Protection


@pytest.fixture(scope="module")
def strict_sandbox() -> Iterator[IsolatedSandbox]:
    """An isolated sandbox under the strict profile (its worker starts on first use)."""
    with IsolatedSandbox(Policy.from_profile("strict")) as sandbox:
        yield sandbox


def protection(sandbox: IsolatedSandbox, name: str) -> Protection:
    """The named protection of the sandbox's worker."""
    found = [item for item in sandbox.protections() if item.name == name]
    if not found:
        pytest.fail(f"no protection named {name!r} in {sandbox.protections()}")
    return found[0]


def require(sandbox: IsolatedSandbox, name: str) -> None:
    """Skip, printing the reason, when this machine cannot provide the protection."""
    item = protection(sandbox, name)
    if not item.active:
        pytest.skip(f"{name} unavailable on this machine: {item.detail}")


def gone(pid: int) -> bool:
    """True when `pid` neither runs nor lingers as a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state not in ("R", "S", "D", "Z", "T", "t")
