"""The pipe protocol: frames, bounds, deadlines, and replies that can hold only data."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest

from stockade import DeniedImport, ModuleError, Outcome, Result, Usage, WorkerError
from stockade.isolate.protocol import (
    DeadlineExceeded,
    error_from_wire,
    error_to_wire,
    loads_plain,
    read_frame,
    result_from_wire,
    result_to_wire,
    write_frame,
)


def test_frames_round_trip(pipe: tuple[int, int]) -> None:
    write_frame(pipe[1], ("result", {"stdout": b"\xff\x00"}))
    assert loads_plain(read_frame(pipe[0])) == ("result", {"stdout": b"\xff\x00"})


def test_replies_may_not_name_classes() -> None:
    with pytest.raises(WorkerError, match="pathlib"):
        loads_plain(pickle.dumps(("result", Path("/etc"))))
    with pytest.raises(WorkerError, match="os.system"):
        loads_plain(b"cos\nsystem\n(S'true'\ntR.")


def test_oversized_frames_are_refused(pipe: tuple[int, int]) -> None:
    write_frame(pipe[1], b"x" * 4096)
    with pytest.raises(WorkerError, match="over the 1024-byte bound"):
        read_frame(pipe[0], limit=1024)


def test_a_silent_pipe_hits_the_deadline(pipe: tuple[int, int]) -> None:
    with pytest.raises(DeadlineExceeded):
        read_frame(pipe[0], deadline=time.monotonic() + 0.01)


def test_a_closed_pipe_is_end_of_file() -> None:
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    try:
        with pytest.raises(EOFError):
            read_frame(read_fd)
    finally:
        os.close(read_fd)


def test_results_round_trip_with_binary_output() -> None:
    result = Result(module="m.wasm", sha256="ab" * 32, outcome=Outcome.EXITED, exit_code=3,
                    guest_exit_code=3, stdout=b"\xff\xfe", stderr=b"err",
                    usage=Usage(wall_ms=1.5, fuel_consumed=7, hostcalls={"fd_write": 2}),
                    limits={"fuel": 10}, coldstart=True, scratch="/tmp/x")
    wire = loads_plain(pickle.dumps(result_to_wire(result)))
    assert result_from_wire(wire) == result


@pytest.mark.parametrize("change", [
    {"outcome": "escaped"},
    {"exit_code": "0"},
    {"stdout": ["not", "bytes"]},
    {"usage": {"hostcalls": {"fd_write": "many"}}},
])
def test_malformed_results_are_refused(change: dict[str, object]) -> None:
    wire = result_to_wire(Result(module="m", sha256="", outcome=Outcome.EXITED, exit_code=0))
    wire.update(change)
    with pytest.raises(WorkerError):
        result_from_wire(wire)


def test_errors_keep_their_class() -> None:
    denied = error_from_wire(error_to_wire(DeniedImport("no sockets", "wasix.sock_open")))
    assert isinstance(denied, DeniedImport) and denied.import_name == "wasix.sock_open"
    assert isinstance(error_from_wire(error_to_wire(ModuleError("bad"))), ModuleError)
    assert isinstance(error_from_wire({"type": "SystemExit", "message": "x"}), Exception)
    assert type(error_from_wire({"type": "SystemExit", "message": "x"})).__name__ == (
        "StockadeError")
