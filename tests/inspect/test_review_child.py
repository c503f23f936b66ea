"""The review child (`inspect.validation.review` through `engine.compiler.run_child`):
the caller holds the module once while the child reads it, a refusal names the
address-space limit the child really had, and a child that is stopped is refused at
once rather than at its deadline minutes later."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

from stockade.binary import encode_leb as leb
from stockade.errors import ModuleError
from stockade.inspect.validation import review
from tests.engine.test_compiler import branch_table

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


def _with_custom_section(size: int) -> bytes:
    """A valid, empty module carrying `size` bytes in one custom section."""
    payload = b"\x01x" + bytes(size)
    return b"\0asm\x01\0\0\0" + b"\x00" + leb(len(payload)) + payload


def test_the_module_is_held_once_while_the_child_reads_it() -> None:
    # The child's input was built as header + module: a second copy of the module in
    # the caller for as long as the child ran.
    data = _with_custom_section(48 * MiB)
    tracemalloc.start()
    try:
        verdict = review(data, "big.wasm", price=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert verdict.error is None
    assert peak < len(data) // 4, peak


def test_a_lower_inherited_address_space_limit_is_the_one_reported() -> None:
    # Under `ulimit -v` below the child's budget the child had less than 768 MiB, and the
    # refusal still said 768 MiB.
    script = (
        "import resource\n"
        "from tests.inspect.test_hostile_modules_attack import _type_bomb\n"
        "from stockade.errors import ModuleError\n"
        "from stockade.inspect.validation import review\n"
        "data = _type_bomb(32_000)\n"
        "resource.setrlimit(resource.RLIMIT_AS, (700 << 20, 700 << 20))\n"
        "try:\n"
        "    review(data, 'types.wasm', price=False)\n"
        "except ModuleError as exc:\n"
        "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert message.startswith("types.wasm: validating it needed more than"), message
    assert "768MiB" not in message and "address-space limit" in message, message
    stated = message.split("more than ")[1].split("MiB")[0]
    assert 0 < float(stated) < 700, message


def _compiler_child(parent: int, within: float = 10.0) -> int:
    """The pid of `parent`'s compiler child, once it runs."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                command = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == parent and b"compilechild" in command:
                return int(entry)
        time.sleep(0.002)
    raise AssertionError("no compiler child started")


def test_a_stopped_child_is_refused_promptly() -> None:
    # A SIGSTOPped child spends no CPU, so only the wall deadline (250 s) ended it.
    data = branch_table(1000, 300_000)
    outcome: list[BaseException | None] = []

    def ask() -> None:
        try:
            review(data, "br.wasm", price=False)
            outcome.append(None)
        except ModuleError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    child = _compiler_child(os.getpid())
    os.kill(child, signal.SIGSTOP)
    stopped = time.monotonic()
    thread.join(20)
    try:
        assert not thread.is_alive(), "still waiting for a stopped child"
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
        thread.join(10)
    assert time.monotonic() - stopped < 10
    assert outcome and isinstance(outcome[0], ModuleError)
    assert "br.wasm" in str(outcome[0]) and "stopped" in str(outcome[0]), outcome
