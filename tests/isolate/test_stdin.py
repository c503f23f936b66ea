"""Standard input as large as the docs allow (256 MiB) reaches an isolated guest: the
worker's memory allowance covers what it is handed, so it never reads as the guest's
memory violation."""

from __future__ import annotations

import pytest

from stockade import Invocation, Outcome, Policy
from stockade.invocation import MAX_STDIN
from stockade.isolate import IsolatedSandbox
from tests.conftest import guest


@pytest.mark.slow
def test_the_largest_standard_input_allowed_is_no_memory_violation() -> None:
    """256 MiB that the guest never reads ended `memory_limit` (137): "the worker was
    killed by the kernel OOM killer: its cgroup memory limit of 512MiB was reached"."""
    with IsolatedSandbox(Policy.from_profile("default")) as sandbox:
        large = sandbox.run(guest("exitcode.wasm"),
                            Invocation(args=("0",), stdin=b"\0" * MAX_STDIN))
        assert large.outcome is Outcome.EXITED and large.exit_code == 0, large.message
        small = sandbox.run(guest("hello.wasm"), Invocation(stdin=b"after\n"))
        assert small.ok and small.stdout.endswith(b"after\n")


def test_standard_input_reaches_the_guest_whole() -> None:
    data = bytes(range(256)) * 4096 + b"end\n"  # 1 MiB and a tail
    with IsolatedSandbox(Policy.from_profile("default")) as sandbox:
        result = sandbox.run(guest("hello.wasm"), Invocation(stdin=data))
        assert result.ok and result.stdout.endswith(data)
        again = sandbox.run(guest("hello.wasm"), Invocation(args=("x",)))
        assert again.ok and again.stdout.endswith(b"arg 1: x\n")
