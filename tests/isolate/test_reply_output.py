"""A result's stdout and stderr come back as raw frames after its reply, read into the size
the reply announced: pickled with the reply, a 16 MiB output cost the caller two more
copies of it (the frame read, copied to bytes, then unpickled). A worker that announces
more than the reply's bound, sends a frame of another size, or lets its output stall is a
broken worker (WorkerError), never a hang nor memory beyond the bound; output that keeps
coming has until the caller's deadline, which nothing the worker sends moves; a worker
that dies partway through is told as any death is (its cause, a cancellation)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import signal
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stockade import Invocation, Outcome, Policy, Result, Usage, WorkerError
from stockade.cancel import CANCELLED, CancelToken, cancellable
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
    "a truncated frame, then silence": ((MiB, 0), _HEADER.pack(MiB) + b"x" * 1000, False,
                                        "stalled"),
    "a frame that never comes": ((64, 0), b"", False, "stalled"),
}


@pytest.fixture
def short_wait(monkeypatch: pytest.MonkeyPatch) -> float:
    """A short `OUTPUT_WAIT`: a frame that never comes is told within it."""
    monkeypatch.setattr(protocol, "OUTPUT_WAIT", 0.5)
    return 0.5


@pytest.fixture
def trickle() -> Iterator[Callable[..., int]]:
    """Start a writer thread sending a reply of `kind` announcing `sizes`, then its output
    `chunk` bytes every `pause` seconds, until it is all sent or the test ends; returns
    the pipe's read end."""
    stop = threading.Event()
    started: list[tuple[threading.Thread, int, int]] = []

    def send(write_fd: int, kind: str, sizes: tuple[int, int], chunk: int,
             pause: float) -> None:
        with contextlib.suppress(BrokenPipeError):  # the reader gave up
            write_frame(write_fd, (kind, _wire(), sizes))
            for size in sizes:
                os.write(write_fd, _HEADER.pack(size))
                sent = 0
                while sent < size and not stop.wait(pause):
                    sent += os.write(write_fd, b"x" * min(chunk, size - sent))

    def start(kind: str, sizes: tuple[int, int], chunk: int, pause: float) -> int:
        read_fd, write_fd = os.pipe()
        writer = threading.Thread(target=send, args=(write_fd, kind, sizes, chunk, pause))
        writer.start()
        started.append((writer, read_fd, write_fd))
        return read_fd

    yield start
    stop.set()
    for writer, read_fd, write_fd in started:
        os.close(read_fd)  # first: a writer blocked on a full pipe gets EPIPE
        writer.join()
        os.close(write_fd)


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


@pytest.mark.parametrize("deadline", [30.0, None])
def test_output_that_keeps_coming_is_read_whole(
        short_wait: float, trickle: Callable[..., int], deadline: float | None) -> None:
    """A parent whose other threads hold the GIL reads each pipeful late (16 MiB took 20 s
    with 8 spinning): what counts is that the output keeps coming, not how long it takes."""
    size = 24 * 64 * 1024
    read_fd = trickle("result", (size, 0), 64 * 1024, short_wait / 5)
    begun = time.monotonic()
    kind, payload = read_reply(
        read_fd, None if deadline is None else begun + deadline, 2 * size)
    assert kind == "result" and payload["stdout"] == b"x" * size
    assert time.monotonic() - begun > 4 * short_wait  # a whole copy well past the wait


def test_output_without_a_deadline_is_bounded_by_its_size(
        monkeypatch: pytest.MonkeyPatch, short_wait: float,
        trickle: Callable[..., int]) -> None:
    monkeypatch.setattr(protocol, "OUTPUT_RATE", 64)  # 64 bytes: 1 s more than the wait
    read_fd = trickle("result", (0, 64), 1, short_wait / 5)
    begun = time.monotonic()
    with pytest.raises(WorkerError, match=r"did not arrive within 1\.5 s"):
        read_reply(read_fd, None, 1 << 20)
    assert time.monotonic() - begun < short_wait + 1 + 1


def test_output_does_not_move_the_callers_deadline(trickle: Callable[..., int]) -> None:
    """A worker taken over by its guest answers just before the deadline, then trickles its
    output: it is held to the deadline (a little later: the reply came before it), as it
    would be to send the reply at all."""
    read_fd = trickle("result", (0, 64), 1, 0.2)  # 13 s in all, never stalled
    deadline = time.monotonic() + 0.5
    with pytest.raises(TimeoutError):
        read_reply(read_fd, deadline, 1 << 20)
    assert time.monotonic() - deadline < protocol.OUTPUT_MARGIN + 1


@pytest.mark.parametrize("kind", ["started", "error", "failed", "fallback", "retire"])
def test_only_a_result_carries_output(pipe: tuple[int, int], kind: str) -> None:
    """On `started` (whose arrival starts the guest's time) output would hold the caller
    past its deadline: refused before a byte of it is read."""
    write_frame(pipe[1], (kind, {"module": "m.wasm"}, (0, 9)))
    with pytest.raises(WorkerError, match=f"after a '{kind}' reply"):
        read_reply(pipe[0], time.monotonic() + 5, 1 << 20)


def test_an_overran_result_carries_its_output(pipe: tuple[int, int]) -> None:
    result = _result(stdout=b"partial", stderr=b"timeout\n")
    write_reply(pipe[1], "overran", result)
    kind, payload = read_reply(pipe[0], time.monotonic() + 5, 1 << 20)
    assert kind == "overran" and result_from_wire(payload) == result


def test_a_worker_gone_mid_output_is_an_end_of_pipe() -> None:
    """As before its reply: the caller asks the worker why it ended (killed, CPU limit,
    OOM killer, a cancellation) rather than calling it broken."""
    read_fd, write_fd = os.pipe()
    try:
        write_frame(write_fd, ("result", _wire(), (MiB, 0)))
        os.write(write_fd, _HEADER.pack(MiB) + b"x" * 1000)
        os.close(write_fd)
        write_fd = -1
        with pytest.raises(EOFError, match="after 1000 of"):
            read_reply(read_fd, time.monotonic() + 5, 2 * MiB)
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


# Stands for a worker its guest took over that answers its run's result, then sends its
# output a few bytes at a time and never all of it.
TRICKLE = '''
import os, sys, time
from stockade.isolate.protocol import result_to_wire, write_frame

def write_reply(fd, kind, payload, wait=None):
    wire = result_to_wire(payload)
    del wire["stdout"], wire["stderr"]
    write_frame(fd, (kind, wire, (0, 1 << 20)))
    os.write(fd, (0).to_bytes(8, "big") + (1 << 20).to_bytes(8, "big"))
    while True:
        os.write(fd, b"x" * 100)
        time.sleep(0.2)

sys.modules["__main__"].write_reply = write_reply
result = {}
'''


def _taken_over(sandbox: IsolatedSandbox) -> Any:
    """`sandbox`'s worker, once it ran `TRICKLE`."""
    sandbox.protections()
    taken = sandbox._worker
    assert taken is not None
    taken.send(("probe",))
    assert taken.receive(time.monotonic() + 30, 1 << 20)[0] == "probed"
    return taken


@pytest.fixture
def trickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolated workers whose plan's probe is `TRICKLE`."""
    planned = process.plan_for
    monkeypatch.setattr(process, "plan_for", lambda policy, config: dataclasses.replace(
        planned(policy, config), probe=TRICKLE))


@pytest.mark.usefixtures("trickling")
def test_an_isolated_worker_trickling_its_output_times_out() -> None:
    policy = Policy.from_profile("default").with_limits(max_output=2 * MiB, timeout=1.0)
    with IsolatedSandbox(policy) as sandbox:
        taken = _taken_over(sandbox)
        begun = time.monotonic()
        result = sandbox.run(guest("hello.wasm"), Invocation(args=("x",)))
        took = time.monotonic() - begun
        assert result.outcome is Outcome.TIMEOUT and "killed (SIGKILL)" in result.message, \
            result
        # Its deadline: the guest's timeout + grace from `started`, then the margin.
        assert took < 1.0 + sandbox.config.grace + protocol.OUTPUT_MARGIN + 3, took
        assert not taken.alive
        after = sandbox.run(guest("hello.wasm"), Invocation(args=("next",)))
        assert after.ok, after


# How a worker is ended as its output comes in, and what its run then reports.
ENDED = {
    "SIGKILL": (Outcome.ERROR, "the worker was killed (SIGKILL)"),
    "SIGXCPU": (Outcome.TIMEOUT, "CPU time limit"),
    "cancelled": (CANCELLED.outcome, CANCELLED.message),
}


@pytest.mark.usefixtures("trickling")
@pytest.mark.parametrize("how", ENDED)
def test_an_isolated_worker_ended_mid_output_reports_why(
        monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    outcome, said = ENDED[how]
    token = CancelToken()
    policy = Policy.from_profile("default").with_limits(max_output=2 * MiB, timeout=30.0)
    with IsolatedSandbox(policy) as sandbox:
        taken = _taken_over(sandbox)
        read_into = protocol._read_into

        def ended_as_it_reads(fd: int, size: int, *args: Any) -> bytes:
            if size:  # the output, its reply read: end the worker now
                if how == "cancelled":
                    token.cancel()
                else:
                    os.kill(taken.pid, getattr(signal, how))
            return read_into(fd, size, *args)

        with monkeypatch.context() as patch, cancellable(token):
            patch.setattr(protocol, "_read_into", ended_as_it_reads)
            result = sandbox.run(guest("hello.wasm"), Invocation(args=("x",)))
        assert result.outcome is outcome and said in result.message, result
        assert not taken.alive
        after = sandbox.run(guest("hello.wasm"), Invocation(args=("next",)))
        assert after.ok, after
