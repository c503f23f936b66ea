"""The pipe protocol between a parent and its worker: length-prefixed pickled frames.

Writes go to blocking or non-blocking pipes alike: on a full non-blocking pipe a
writer calls the `wait` it was given (the parent's, which watches a worker that stopped
reading: `WorkerProcess`), or else waits for room.
Requests (parent -> worker) are ordinary pickles: the worker trusts its parent.
Replies (worker -> parent) are unpickled with *no* globals allowed, so they can hold
only plain data (dicts, lists, tuples, str, bytes, numbers): a worker taken over by its
guest cannot make the parent build arbitrary objects. `Result`s and errors are turned
into plain data and checked field by field on the way back. A result's stdout and stderr
follow its reply as raw frames of the sizes it announces (`write_reply`, `read_reply`):
pickled, a 16 MiB output cost the parent two more copies of it.
"""

from __future__ import annotations

import ctypes
import io
import os
import pickle
import select
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any

from .. import errors
from ..errors import StockadeError, WorkerError
from ..result import Outcome, Result, Usage

__all__ = ["DeadlineExceeded", "SourceUnreadable", "Wait", "write_frame", "write_file_frame",
           "write_bytes_frame", "write_reply", "read_frame", "read_raw_frame",
           "loads_plain", "read_reply", "OUTPUT_WAIT", "OUTPUT_MARGIN", "OUTPUT_RATE",
           "result_to_wire", "result_from_wire", "error_to_wire", "error_from_wire",
           "PICKLED_REPLY", "bounded_message", "text_of"]

_HEADER = struct.Struct(">Q")
# The fields of a result sent as raw frames after its reply, in this order.
_STREAMS = ("stdout", "stderr")
# The reply kinds that carry a result, the only ones whose output may follow them: on any
# other (`started`), sizes would let a worker hold the caller past its deadline.
_WITH_OUTPUT = frozenset({"result", "overran"})
# Seconds a result's output may go without a byte once its reply has come: the guest is
# done, and a working worker writes as fast as the pipe drains. Progress, not the whole
# copy, is bounded by it: under a parent whose other threads are busy each pipeful waits
# for the GIL, and 16 MiB took 20 s with 8 of them spinning.
OUTPUT_WAIT = 10.0
# Seconds past the caller's deadline that output whose reply came before it may take.
OUTPUT_MARGIN = 2.0
# Without a deadline, the output's bound: `OUTPUT_WAIT` and a second for each this many
# bytes (a pipeful a second: 8 busy threads still let the parent read 0.8 MiB a second).
OUTPUT_RATE = 64 * 1024
# Bytes a reply's pickle may have (its output follows as raw frames): a pickle builds
# ~240 bytes of objects from each byte (an empty set from one opcode), and a taken-over
# worker's 10 MB reply took its parent to 2.4 GB (found by review); at this bound, 60 MB.
PICKLED_REPLY = 256 * 1024
# Characters of a message a worker sends (a trap's, an error's): well within that bound.
MESSAGE_CHARS = 16 * 1024
_ERRORS: dict[str, type[StockadeError]] = {
    cls.__name__: cls for cls in (errors.StockadeError, errors.UsageError, errors.PolicyError,
                                  errors.ModuleNotFound, errors.ModuleError, WorkerError,
                                  errors.UntrustedModule)
}


class DeadlineExceeded(Exception):
    """No complete frame arrived before the deadline."""


class _Idle(Exception):
    """No byte came for the `idle` seconds a read allowed."""


class SourceUnreadable(Exception):
    """The file a raw frame is sent from could not be read to the frame's announced
    length (`write_file_frame`; the message says why): the frame is cut short, and its
    reader, waiting for the rest, must be handed nothing more."""


# Called when a non-blocking pipe is full; returns once it may take more, or raises.
Wait = Callable[[], None]


def _blocked(fd: int, wait: Wait | None) -> None:
    """`fd`, a non-blocking pipe, is full: return once it may take more (or its reader
    is gone), by `wait` when given (raising what it raises), else without bound."""
    if wait is not None:
        wait()
        return
    poller = select.poll()
    poller.register(fd, select.POLLOUT | select.POLLERR)
    poller.poll()


def _write_all(fd: int, data: bytes | memoryview, wait: Wait | None) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            _blocked(fd, wait)


def write_frame(fd: int, message: Any, wait: Wait | None = None) -> None:
    """Pickle `message` and write it as one frame (`wait`: see the module docstring)."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    _write_all(fd, _HEADER.pack(len(data)) + data, wait)


def write_file_frame(fd: int, source: int, size: int, wait: Wait | None = None) -> None:
    """Write `size` bytes of the file `source` (from its start) as one raw frame, by
    sendfile: the bytes never enter this process's memory. Raises SourceUnreadable when
    the file cannot be read (an I/O error) or holds fewer bytes than `size` (it shrank
    since its size was taken): the frame is then cut short."""
    _write_all(fd, _HEADER.pack(size), wait)
    offset = 0
    while offset < size:
        try:
            sent = os.sendfile(fd, source, offset, min(size - offset, 1 << 24))
        except BlockingIOError:
            _blocked(fd, wait)
            continue
        except BrokenPipeError:
            raise  # the reader is gone, not the file
        except OSError as exc:
            raise SourceUnreadable(f"cannot read: {exc.strerror or exc}") from None
        if sent == 0:
            raise SourceUnreadable(f"it shrank to {offset} bytes as it was read (it held "
                                   f"{size} when it was opened)")
        offset += sent


def write_bytes_frame(fd: int, data: bytes, wait: Wait | None = None) -> None:
    """Write `data` as one raw frame (`read_raw_frame`), from where it lies: a standard
    input of hundreds of MiB is not copied into a pickle, nor that into a frame."""
    _write_all(fd, _HEADER.pack(len(data)), wait)
    _write_all(fd, data, wait)


def write_reply(fd: int, kind: str, payload: Any, wait: Wait | None = None) -> None:
    """Write a worker's reply `(kind, payload)`. A `Result` payload goes as plain data
    (`result_to_wire`) less its stdout and stderr, whose sizes the reply announces; each
    then follows as a raw frame, from where it lies (`read_reply` puts them back)."""
    if not isinstance(payload, Result):
        write_frame(fd, (kind, payload), wait)
        return
    wire = result_to_wire(payload)
    streams = [wire.pop(name) for name in _STREAMS]
    write_frame(fd, (kind, wire, tuple(len(data) for data in streams)), wait)
    for data in streams:
        write_bytes_frame(fd, data, wait)


def _await_bytes(poller: select.poll, deadline: float | None, idle: float | None) -> None:
    """Return once `poller`'s pipe has bytes (or is closed). Raises DeadlineExceeded at
    `deadline`, or _Idle when nothing came for `idle` seconds first (None: no bound)."""
    wait = idle
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded
        wait = left if wait is None else min(wait, left)
    if wait is None or poller.poll(wait * 1000):
        return
    if deadline is not None and (idle is None or left <= idle):
        raise DeadlineExceeded
    raise _Idle


def _read_exact(fd: int, size: int, deadline: float | None,
                idle: float | None = None) -> bytes:
    chunks = bytearray()
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while len(chunks) < size:
        _await_bytes(poller, deadline, idle)
        chunk = os.read(fd, min(size - len(chunks), 1 << 20))
        if not chunk:
            raise EOFError("the worker closed its pipe")
        chunks += chunk
    return bytes(chunks)


# A bytes object filled in place (as os.read fills its result): a module frame of tens of
# MiB then costs its size once, not twice (a bytearray copied into bytes).
_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
_BYTES_DATA = sys.getsizeof(b"") - 1  # offset of a bytes object's data (CPython)


def _read_into(fd: int, size: int, deadline: float | None,
               idle: float | None = None) -> bytes:
    """The next `size` bytes of `fd`, read into a single bytes object. Raises
    DeadlineExceeded, _Idle (no byte for `idle` seconds), or EOFError (saying how many
    bytes came) at the end of the pipe."""
    if size == 0:
        return b""
    data: bytes = _new_bytes(None, size)
    view = memoryview((ctypes.c_char * size).from_address(id(data) + _BYTES_DATA)).cast("B")
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    done = 0
    while done < size:
        _await_bytes(poller, deadline, idle)
        count = os.readv(fd, [view[done:]])
        if not count:
            raise EOFError(f"the pipe closed after {done} of the frame's {size} bytes")
        done += count
    return data


def read_raw_frame(fd: int, limit: int) -> bytes:
    """Read one raw frame (`write_file_frame`) of at most `limit` bytes, blocking, into
    a single bytes object. Raises EOFError or WorkerError (over `limit`)."""
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, None))
    if size > limit:
        raise WorkerError(f"a {size}-byte frame, over the {limit}-byte bound")
    return _read_into(fd, size, None)


def read_frame(fd: int, deadline: float | None = None, limit: int = 1 << 30) -> bytes:
    """Read one frame's payload. `deadline` is a `time.monotonic()` value (None: wait).

    Raises DeadlineExceeded, EOFError (the other side is gone) or WorkerError (a frame
    larger than `limit` bytes).
    """
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if size > limit:
        raise WorkerError(f"the worker sent a {size}-byte reply, over the {limit}-byte bound")
    return _read_exact(fd, size, deadline)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"worker replies may not name {module}.{name}")


def loads_plain(data: bytes) -> Any:
    """Unpickle a worker's reply, refusing any class or function reference."""
    try:
        return _PlainUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # noqa: BLE001 - any malformed reply is the worker's fault
        raise WorkerError(f"the worker sent a malformed reply: {exc}") from None


def read_reply(fd: int, deadline: float | None, limit: int) -> tuple[str, Any]:
    """A worker's next reply as (kind, payload), a result's stdout and stderr read back
    into its payload (`write_reply`), all of it within `limit` bytes. Raises TimeoutError
    at `deadline` (`time.monotonic()`), or, for output whose reply came before it,
    `OUTPUT_MARGIN` seconds later: nothing the worker sends moves the caller's deadline.
    Raises EOFError when the worker is gone (mid-output too: its callers tell why it
    ended), WorkerError when malformed, over `limit`, output on a reply that carries no
    result, or output that stalls `OUTPUT_WAIT` seconds or, without a deadline, takes
    longer than its size allows (`OUTPUT_RATE`)."""
    try:
        frame = read_frame(fd, deadline, min(limit, PICKLED_REPLY))
    except DeadlineExceeded:
        raise TimeoutError from None
    reply = loads_plain(frame)
    if not (isinstance(reply, tuple) and len(reply) in (2, 3) and isinstance(reply[0], str)):
        raise WorkerError("the worker sent a reply of the wrong shape")
    if len(reply) == 2:
        return reply[0], reply[1]
    kind, payload, sizes = reply
    if kind not in _WITH_OUTPUT:
        raise WorkerError(f"the worker sent output after a {kind!r} reply, which carries "
                          "no result")
    return kind, _with_output(fd, payload, sizes, limit - len(frame), deadline)


def _with_output(fd: int, payload: Any, sizes: Any, room: int,
                 deadline: float | None) -> dict[str, Any]:
    """`payload` with the streams whose `sizes` its reply announced, read from `fd`:
    at most `room` bytes in all, each into a bytes object of its announced size, by the
    caller's `deadline` (plus `OUTPUT_MARGIN`) or, without one, the output's own."""
    if not (isinstance(payload, dict) and isinstance(sizes, tuple)
            and len(sizes) == len(_STREAMS)
            and all(type(size) is int and size >= 0 for size in sizes)):
        raise WorkerError("the worker sent a malformed result (its output's sizes)")
    if sum(sizes) > room:
        raise WorkerError(f"the worker announced {sum(sizes)} bytes of output, over the "
                          f"{room} bytes left of the reply's bound")
    # The reply came, so the guest is done: output that stops coming is a broken worker
    # (the host's error). Its whole copy is bounded too, as the reply was: by the
    # caller's deadline (a little later, for a reply that came just before it), else by
    # its size, so that a worker trickling bytes cannot hold the caller.
    allowed = OUTPUT_WAIT + sum(sizes) / OUTPUT_RATE
    ends = time.monotonic() + allowed if deadline is None else deadline + OUTPUT_MARGIN
    for name, size in zip(_STREAMS, sizes, strict=True):
        try:
            (sent,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, ends, OUTPUT_WAIT))
            if sent != size:
                raise WorkerError(f"the worker sent a {sent}-byte {name} where its reply "
                                  f"announced {size} bytes")
            payload[name] = _read_into(fd, size, ends, OUTPUT_WAIT)
        except _Idle:
            raise WorkerError(f"the worker's {name} ({size} bytes) stalled: no byte of it "
                              f"came for {OUTPUT_WAIT:g} s") from None
        except DeadlineExceeded:
            if deadline is not None:
                raise TimeoutError from None
            raise WorkerError(f"the worker's {name} ({size} bytes) did not arrive within "
                              f"{allowed:.1f} s of its reply") from None
        # EOFError goes to the caller as it would before the reply: the worker died (a
        # cancellation's kill, the CPU limit, the OOM killer), which only it can tell.
    return payload


def result_to_wire(result: Result) -> dict[str, Any]:
    """A `Result` as plain data (bytes kept as bytes), its message within
    `MESSAGE_CHARS`."""
    data = {f.name: getattr(result, f.name) for f in fields(Result)}
    data["message"] = bounded_message(result.message)
    data["outcome"] = result.outcome.value
    data["usage"] = asdict(result.usage)
    return data


_RESULT_TYPES: dict[str, tuple[type, ...]] = {
    "module": (str,), "sha256": (str,), "exit_code": (int,), "guest_exit_code": (int, type(None)),
    "message": (str,), "stdout": (bytes,), "stderr": (bytes,), "stdout_truncated": (bool,),
    "stderr_truncated": (bool,), "limits": (dict,), "coldstart": (bool,),
    "scratch": (str, type(None)), "cleanup_error": (str, type(None)),
}
_RESULT_FIELDS = {f.name for f in fields(Result)} - {"outcome", "usage"}
_USAGE_FIELDS = {f.name for f in fields(Usage)}
_USAGE_TYPES: dict[str, tuple[type, ...]] = {
    "wall_ms": (float, int), "cpu_ms": (float, int), "fuel_consumed": (int, type(None)),
    "peak_memory_bytes": (int,), "files_created": (int,), "bytes_written": (int,),
    "hostcalls": (dict,),
}


_SCALARS = (str, bytes, int, float, bool, type(None))


def _checked(data: Any, types: dict[str, tuple[type, ...]], known: set[str],
             what: str) -> dict[str, Any]:
    """The fields of `known` present in `data`, of the types in `types` (fields
    without an entry there must be scalars)."""
    if not isinstance(data, dict):
        raise WorkerError(f"the worker sent a malformed {what}")
    checked = {}
    for key in known & data.keys():
        if not isinstance(data[key], types.get(key, _SCALARS)):
            raise WorkerError(f"the worker sent a malformed {what} ({key})")
        checked[key] = data[key]
    return checked


def result_from_wire(data: Any) -> Result:
    """Rebuild and check a `Result` from plain data. Raises WorkerError when malformed."""
    fields_ = _checked(data, _RESULT_TYPES, _RESULT_FIELDS, "result")
    usage = _checked(data.get("usage", {}), _USAGE_TYPES, _USAGE_FIELDS, "usage")
    if not all(isinstance(k, str) and isinstance(v, int) for k, v in
               usage.get("hostcalls", {}).items()):
        raise WorkerError("the worker sent malformed host-call counts")
    try:
        outcome = Outcome(data.get("outcome"))
    except ValueError:
        raise WorkerError(f"the worker sent an unknown outcome {data.get('outcome')!r}") from None
    missing = {"module", "sha256", "exit_code"} - fields_.keys()
    if missing:
        raise WorkerError(f"the worker's result lacks {', '.join(sorted(missing))}")
    return Result(outcome=outcome, usage=Usage(**usage), **fields_)


def error_to_wire(exc: StockadeError) -> dict[str, Any]:
    """A Stockade error as plain data, its message within `MESSAGE_CHARS`."""
    return {"type": type(exc).__name__, "message": bounded_message(exc.message),
            "import_name": getattr(exc, "import_name", None),
            "sha256": getattr(exc, "sha256", None)}


def bounded_message(text: str) -> str:
    """`text`, its end cut to `MESSAGE_CHARS` characters (a trap's backtrace may be
    longer than the reply it goes in may be)."""
    if len(text) <= MESSAGE_CHARS:
        return text
    return f"{text[:MESSAGE_CHARS]} [{len(text) - MESSAGE_CHARS} more characters]"


def text_of(value: Any, key: str = "message") -> str:
    """The text at `key` of a worker's payload (a dict), bounded; "" when it is no text.
    A worker's value, whatever it is, never reaches `str()`: a deeply nested one raised
    RecursionError in its parent (found by review)."""
    text = value.get(key) if isinstance(value, dict) else None
    return bounded_message(text) if isinstance(text, str) else ""


def error_from_wire(data: Any) -> StockadeError:
    """The Stockade error a worker reported (its class from a fixed list)."""
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        return WorkerError("the worker reported a malformed error")
    name, message = data.get("type"), data["message"]
    if name == "DeniedImport" and isinstance(data.get("import_name"), str):
        return errors.DeniedImport(message, data["import_name"])
    if name == "PrecompiledRefused":  # 126 / 403, as in process
        sha = data.get("sha256")
        return errors.PrecompiledRefused(message, sha if isinstance(sha, str) else "")
    cls = _ERRORS.get(name, StockadeError) if isinstance(name, str) else StockadeError
    return cls(message)
