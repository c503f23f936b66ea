"""A result's stdout and stderr come back as raw frames after its reply, read into the size
the reply announced: pickled with the reply, a 16 MiB output cost the caller two more
copies of it (the frame read, copied to bytes, then unpickled). A worker that announces
more than the reply's bound, sends a frame of another size, cuts a frame short or never
sends it is a broken worker (WorkerError), never a hang nor memory beyond the bound."""

from __future__ import annotations

import dataclasses
import os
import pickle
import struct
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from stockade import Invocation, Outcome, Policy, Result, Usage, WorkerError
from stockade.isolate import IsolatedSandbox, process, protocol
from stockade.isolate.protocol import (
    read_reply,
    result_from_wire,
    result_to_wire,
    write_frame,
    write_reply,
)
from tests.conftest import guest

MiB = 1024**2
OUTPUT = 16 * MiB
_HEADER = struct.Struct(">Q")

# How a worker that took over its process answers a run: (the output sizes its reply
# announces, the bytes that follow, whether it then exits or stays silent), and what the
# parent says. The bound is the parent's reply limit; `limit` below stands for it.
HOSTILE = {
    "announces more than the bound": ((1 << 40, 0), b"", True, "over the"),
    "a frame of another size": ((16, 0), _HEADER.pack(1 << 30) + b"x" * 64, False,
                                "announced 16 bytes"),
    "a truncated frame, then gone": ((MiB, 0), _HEADER.pack(MiB) + b"x" * 1000, True,
                                     "stopped short"),
    "a frame that never comes": ((64, 0), b"", False, "did not arrive"),
}


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    os.close(read_fd)
    os.close(write_fd)


@pytest.fixture
def short_wait(monkeypatch: pytest.MonkeyPatch) -> float:
    """A short `OUTPUT_WAIT`: a frame that never comes is told within it."""
    monkeypatch.setattr(protocol, "OUTPUT_WAIT", 0.5)
    return 0.5


def _result(stdout: bytes = b"", stderr: bytes = b"") -> Result:
    return Result(module="m.wasm", sha256="ab" * 32, outcome=Outcome.EXITED, exit_code=0,
                  guest_exit_code=0, stdout=stdout, stderr=stderr,
                  usage=Usage(wall_ms=1.0, hostcalls={"fd_write": 2}), limits={"fuel": 1})


def _wire() -> dict[str, object]:
    wire = result_to_wire(_result())
    del wire["stdout"], wire["stderr"]
    return wire


def test_a_result_round_trips_with_its_output_as_frames(pipe: tuple[int, int]) -> None:
    result = _result(stdout=b"\xff\x00" * 1000, stderr=b"warning\n")
    write_reply(pipe[1], "result", result)
    kind, payload = read_reply(pipe[0], time.monotonic() + 5, 1 << 20)
    assert kind == "result" and result_from_wire(payload) == result
    write_reply(pipe[1], "failed", {"message": "no"})  # anything else: one plain frame
    assert read_reply(pipe[0], time.monotonic() + 5, 1 << 20) == ("failed", {"message": "no"})


def test_a_16_mib_output_is_read_into_one_bytes_object(pipe: tuple[int, int]) -> None:
    output = os.urandom(OUTPUT)
    writer = threading.Thread(target=write_reply,
                              args=(pipe[1], "result", _result(stdout=output)))
    writer.start()
    tracemalloc.start()
    try:
        kind, payload = read_reply(pipe[0], time.monotonic() + 30, 2 * OUTPUT + 16 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        writer.join()
    assert kind == "result" and payload["stdout"] == output
    # Pickled in the reply: 32 MiB (the frame, its bytes copy, then the unpickled bytes).
    assert peak < OUTPUT + OUTPUT // 4, peak


def test_output_over_the_reply_bound_is_refused_before_it_is_read(
        pipe: tuple[int, int]) -> None:
    write_frame(pipe[1], ("result", _wire(), (1 << 62, 1 << 62)))
    tracemalloc.start()
    try:
        with pytest.raises(WorkerError, match="over the"):
            read_reply(pipe[0], time.monotonic() + 5, 1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MiB, peak
    # The bound is the reply's as a whole: the frame and both streams.
    write_frame(pipe[1], ("result", _wire(), (512 * 1024, 512 * 1024)))
    with pytest.raises(WorkerError, match="over the"):
        read_reply(pipe[0], time.monotonic() + 5, 1 << 20)


@pytest.mark.parametrize("sizes", [(-1, 0), (True, 0), (1,), (1, 2, 3), ("1", 0), [1, 0]])
def test_malformed_output_sizes_are_refused(pipe: tuple[int, int], sizes: object) -> None:
    write_frame(pipe[1], ("result", _wire(), sizes))
    with pytest.raises(WorkerError, match="malformed"):
        read_reply(pipe[0], time.monotonic() + 5, 1 << 20)


@pytest.mark.parametrize("case", HOSTILE)
def test_a_lying_reply_is_a_worker_error(short_wait: float, case: str) -> None:
    sizes, tail, exits, said = HOSTILE[case]
    read_fd, write_fd = os.pipe()
    try:
        write_frame(write_fd, ("result", _wire(), sizes))
        os.write(write_fd, tail)
        if exits:
            os.close(write_fd)
            write_fd = -1
        begun = time.monotonic()
        with pytest.raises(WorkerError, match=said):
            read_reply(read_fd, None, 2 * MiB)  # no run deadline: the output's own holds
        assert time.monotonic() - begun < short_wait + 2
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


# Run in the worker through the plan's test-only probe, standing for code that took the
# worker over: from then on its run replies lie about their output (`HOSTILE`).
TAKE_OVER = '''
import os, sys, time
from stockade.isolate.protocol import result_to_wire, write_frame

def write_reply(fd, kind, payload, wait=None):
    wire = result_to_wire(payload)
    del wire["stdout"], wire["stderr"]
    write_frame(fd, (kind, wire, {sizes!r}))
    os.write(fd, {tail!r})
    if {exits!r}:
        os._exit(0)
    time.sleep(600)

sys.modules["__main__"].write_reply = write_reply
result = {{}}
'''


@pytest.mark.parametrize("case", HOSTILE)
def test_an_isolated_worker_lying_about_its_output_is_replaced(
        monkeypatch: pytest.MonkeyPatch, short_wait: float, case: str) -> None:
    sizes, tail, exits, said = HOSTILE[case]
    planned = process.plan_for
    source = TAKE_OVER.format(sizes=sizes, tail=tail, exits=exits)
    monkeypatch.setattr(process, "plan_for", lambda policy, config: dataclasses.replace(
        planned(policy, config), probe=source))
    policy = Policy.from_profile("default").with_limits(max_output=MiB // 4, timeout=30.0)
    with IsolatedSandbox(policy) as sandbox:
        sandbox.protections()
        taken = sandbox._worker
        assert taken is not None
        taken.send(("probe",))
        assert taken.receive(time.monotonic() + 30, 1 << 20)[0] == "probed"
        begun = time.monotonic()
        with pytest.raises(WorkerError, match=said):
            sandbox.run(guest("hello.wasm"), Invocation(args=("x",)))
        assert time.monotonic() - begun < short_wait + 10
        assert not taken.alive, "the lying worker lives on"
        after = sandbox.run(guest("hello.wasm"), Invocation(args=("next",)))
        assert after.ok and after.stdout.endswith(b"arg 1: next\n"), after
        assert sandbox.worker_pid != taken.pid


def test_a_16_mib_output_costs_the_isolated_caller_one_copy() -> None:
    stdin = os.urandom(OUTPUT)  # made before tracing: only copies of it are counted
    policy = Policy.from_profile("default").with_limits(max_output=OUTPUT + MiB)
    with IsolatedSandbox(policy) as sandbox:
        sandbox.run(guest("functions/echo.wasm"), Invocation(stdin=b"warm"))
        tracemalloc.start()
        try:
            result = sandbox.run(guest("functions/echo.wasm"), Invocation(stdin=stdin))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.outcome is Outcome.EXITED and result.stdout.endswith(stdin), result
    # The result's own stdout, once. Pickled in the reply: 34 MiB at its peak.
    assert peak < OUTPUT + OUTPUT // 4, peak


def test_a_plain_reply_still_reads_as_before(pipe: tuple[int, int]) -> None:
    """A worker may still send a whole result pickled (its output bound by the frame's)."""
    os.write(pipe[1], _HEADER.pack(len(data := pickle.dumps(
        ("result", result_to_wire(_result(stdout=b"out")))))) + data)
    kind, payload = read_reply(pipe[0], time.monotonic() + 5, 1 << 20)
    assert kind == "result" and result_from_wire(payload).stdout == b"out"
