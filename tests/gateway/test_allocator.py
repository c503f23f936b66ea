"""The allocator settings of the processes that run guests (`stockade.allocator`): a
gateway worker and an isolated worker start with them; a user's own are kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stockade.allocator import TCACHE_COUNT, run_tunables
from stockade.isolate.config import IsolationConfig
from stockade.isolate.handle import worker_environment
from stockade.isolate.plan import plan_for
from stockade.policy import Policy

from .conftest import Start, module

OURS = f"glibc.malloc.tcache_count={TCACHE_COUNT}"


@pytest.mark.parametrize(("given", "expected"), [
    (None, OURS),
    ("", OURS),
    ("glibc.malloc.mxfast=0", f"glibc.malloc.mxfast=0:{OURS}"),
    ("glibc.malloc.tcache_count=7", "glibc.malloc.tcache_count=7"),
    ("glibc.malloc.mxfast=0:glibc.malloc.tcache_count=0",
     "glibc.malloc.mxfast=0:glibc.malloc.tcache_count=0"),
])
def test_a_users_tunables_are_kept(monkeypatch: pytest.MonkeyPatch, given: str | None,
                                   expected: str) -> None:
    if given is None:
        monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    else:
        monkeypatch.setenv("GLIBC_TUNABLES", given)
    assert run_tunables() == {"GLIBC_TUNABLES": expected}


def test_an_isolated_worker_gets_ours_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its environment is an allow-list: a parent's tunables (8 arenas, say) could undo
    # the arena limit its address-space limit counts on (found by review).
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=8")
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    env = worker_environment(plan_for(Policy(), IsolationConfig()))
    assert env["GLIBC_TUNABLES"] == OURS
    assert env["MALLOC_ARENA_MAX"] == "2"


def _environ(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().partition("=")[::2] for entry in entries if entry)


def test_a_gateway_worker_starts_with_them(start_gateway: Start) -> None:
    if os.environ.get("GLIBC_TUNABLES"):
        pytest.skip("GLIBC_TUNABLES is set for the tests: the worker keeps it as given")
    gateway = start_gateway(f'[server]\ntelemetry = "off"\n[[function]]\nname = "hello"\n'
                            f'route = "/hello"\nmodule = "{module("hello")}"\n')
    assert gateway.client.get("/hello").status_code == 200
    pid = gateway.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert children, "the gateway has no worker"
    assert _environ(int(children[0])).get("GLIBC_TUNABLES") == OURS
    assert "GLIBC_TUNABLES" not in _environ(pid)  # the supervisor runs no guest
