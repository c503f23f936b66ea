"""One fast-path run: a fresh store and instance, `_start`, captured output, an outcome.

Output goes to a pair of memfds. With the native library the owned standard streams
(`_native.c`) keep a stream's first 8 KiB in the slot's state (no system call per write
or read), then write the files at the offsets they count; they stop output at the cap
as it is written, and WASI's own stdio is left empty (no file opened per run; the files
are not truncated between runs, so only the bytes this run wrote are read). Without it the
guest's WASI stdout/stderr open them by path (`/proc/<pid>/fd/N`, truncating): writes
happen synchronously on the guest's thread, with no Python callback (wasmtime's
custom-stdout streams go through a tokio task and can abort the interpreter at exit),
and the cap holds while the guest runs because the engine's ticker seals a memfd
(`F_SEAL_GROW | F_SEAL_WRITE`) once the pair outgrows it: further writes fail in the
guest with EPERM.
"""

from __future__ import annotations

import ctypes
import fcntl
import operator
import os
import threading
import time
from collections.abc import Callable
from dataclasses import field

from ...envblock import EnvBlock
from ...errors import ModuleError
from ...hostcalls.poll import Stoppable
from ...policy.units import format_size
from ...records import FieldTuple, Record, record
from ...result import Outcome, Result, Usage, exit_status
from ..grow import EXPORT as GROW_EXPORT
from ..grow import refused_bytes
from ..traps import (
    EXITED_OK,
    TIMED_OUT,
    TRAP_INTERRUPT,
    Ending,
    ending_of_error,
    ending_of_trap,
    exited,
    fuel_consumed,
    memory_verdict,
)
from ..trip import EXPORT, NO_DEADLINE_THREAD, START, Tripwire, due_ns, tripped
from ..trip import available as tripwire_available
from ._capi import (
    EXTERN_FUNC,
    EXTERN_GLOBAL,
    EXTERN_MEMORY,
    ByteVec,
    C,
    Extern,
    Instance,
    Val,
    take_error,
    take_trap,
)
from ._native import (
    CALL_NAMES,
    MAX_STRINGS,
    NATIVE_RUN,
    RUN_BAD_STRINGS,
    RUN_NO_DEADLINE,
    RUN_NO_START,
    RUN_NO_TRIPWIRE,
    RUN_OK,
    RUN_WASI_FILES,
    STOP_HOSTCALLS,
    STOP_STDERR,
    STOP_STDOUT,
    WATCH,
    WATCH_TIMEOUT,
    EpochWatch,
    RunIn,
    RunOut,
    RunPlanC,
    RunState,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from ._metered import MeteredRun
    from ._module import FastModule

__all__ = ["FastResult", "RunSlot", "RunPlan", "StoreLimits", "NO_STORE_LIMITS", "conclude",
           "execute", "native_plan", "overdue"]

_SEALS = fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
# Outputs larger than this are truncated after reading, so an idle slot holds no memory.
_RELEASE_BYTES = 1 << 20
_UNLIMITED = (1 << 64) - 1  # a host-call budget of none
_TRIP_PAGE, _TRIP_START = EXPORT.encode(), START.encode()  # the tripwire's exports
_GROWN = GROW_EXPORT.encode()  # the refused grows' global (`engine.growwatch`)
# A store's limits besides memory: table elements, instances, tables, memories (-1: none).
StoreLimits = tuple[int, int, int, int]
NO_STORE_LIMITS: StoreLimits = (-1, -1, -1, -1)

# What a slot's stdin field holds between runs. Not None: ctypes keeps the object a
# `c_char_p` field was last given while it is None, so the last request's body (256 MiB
# in a worker, above its cgroup limit) stayed alive until the next run replaced it.
_NO_STDIN = b""


class RunPlan(FieldTuple):
    """A run's checked arguments and limits (`FastEngine.plan`), reused across runs:
    `argv` is `argc` NUL-terminated entries, `fuel` the budget (None: the engine does not
    meter fuel), `timeout_s` the wall-clock limit in seconds (None: none),
    `max_hostcalls` the budget of host calls Stockade serves (the standard streams and
    their syncs, `random_get` and `poll_oneoff`; None: unlimited), `owned_stdio` whether
    the engine serves them, `tripwire` whether the module's deadline is its tripwire (a
    tripwire engine's), `store_limits` the store's other limits (`StoreLimits`, a
    tripwire's page counted); `native` the same as the native run's `run_plan` (`native_plan`), and
    `native_at` its address: `_replace` builds them again from the copy's fields. (A
    named tuple: cheaper to define than a dataclass at start-up, and a `FieldTuple`:
    cheaper than a `NamedTuple`.)"""

    module: FastModule
    argv: bytes
    argc: int
    fuel: int | None
    timeout_s: float | None
    max_memory: int
    max_output: int | None
    capture_stderr: bool
    max_hostcalls: int | None = None
    owned_stdio: bool = False
    tripwire: bool = False
    store_limits: StoreLimits = NO_STORE_LIMITS
    native: Any = None
    native_at: int = 0


def native_plan(pre: int, argv: bytes, argc: int, fuel: int | None, max_memory: int,
                max_output: int | None, capture_stderr: bool, max_hostcalls: int | None,
                owned_stdio: bool, tripwire: bool,
                store_limits: StoreLimits = NO_STORE_LIMITS) -> RunPlanC:
    """A plan's fixed part as the native run takes it (kept by the `RunPlan`, which
    keeps `argv` alive with it)."""
    return RunPlanC(pre, max_memory, fuel or 0, fuel is not None, capture_stderr, argv, argc,
                    len(argv), -1 if max_output is None else max_output,
                    _UNLIMITED if max_hostcalls is None else max_hostcalls, owned_stdio,
                    tripwire, *store_limits)


_copy_plan = RunPlan._replace


def _replace_plan(self: RunPlan, /, **changes: Any) -> RunPlan:
    """`RunPlan._replace`: a copy whose native block is built again from the copy's own
    fields, so the C run never takes another plan's module, argv, cap or budget. A block
    given in `changes` is refused (TypeError): it could disagree with the fields."""
    if "native" in changes or "native_at" in changes:
        raise TypeError("a RunPlan's native block is made from its fields: replace those")
    plan = _copy_plan(self, **changes)
    if not isinstance(self.native, RunPlanC):  # a plan without a block stays without one
        return plan
    native = native_plan(plan.module._pre, plan.argv, plan.argc, plan.fuel, plan.max_memory,
                         plan.max_output, plan.capture_stderr, plan.max_hostcalls,
                         plan.owned_stdio, plan.tripwire, plan.store_limits)
    return _copy_plan(plan, native=native, native_at=ctypes.addressof(native))


RunPlan._replace = _replace_plan  # type: ignore[method-assign,assignment]


@record(init=False, repr=False, eq=False, slots=True)
class FastResult(Record):
    """What one fast-path run produced. Times in seconds, sizes in bytes.

    `guest_exit_code` is set when the guest exited (WASI `proc_exit`, any u32, or
    returning from `_start`, which is 0); `memory_bytes` is the final (= peak) size of
    its memory; `fuel_consumed` is None when the run was not metered (no budget, or an
    engine without fuel) or its count is not known (`traps.fuel_consumed`). A metered
    run (`FastEngine.run_metered`) also reports its meter's `files_created`,
    `bytes_written` and `hostcalls` (calls per owned WASI function).
    """

    outcome: Outcome
    guest_exit_code: int | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    message: str
    fuel_consumed: int | None
    wall_s: float
    cpu_s: float
    memory_bytes: int
    files_created: int = 0
    bytes_written: int = 0
    hostcalls: dict[str, int] = field(default_factory=dict)

    def __init__(self, outcome: Outcome, guest_exit_code: int | None, stdout: bytes,
                 stderr: bytes, stdout_truncated: bool, stderr_truncated: bool, message: str,
                 fuel_consumed: int | None, wall_s: float, cpu_s: float, memory_bytes: int,
                 files_created: int = 0, bytes_written: int = 0,
                 hostcalls: dict[str, int] | None = None) -> None:
        self.outcome = outcome
        self.guest_exit_code = guest_exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.stdout_truncated = stdout_truncated
        self.stderr_truncated = stderr_truncated
        self.message = message
        self.fuel_consumed = fuel_consumed
        self.wall_s = wall_s
        self.cpu_s = cpu_s
        self.memory_bytes = memory_bytes
        self.files_created = files_created
        self.bytes_written = bytes_written
        self.hostcalls = {} if hostcalls is None else hostcalls

    @property
    def exit_code(self) -> int:
        """The process exit code: the guest's own when it exited (`exit_status`), else
        the outcome's."""
        if self.outcome is Outcome.EXITED and self.guest_exit_code is not None:
            return exit_status(self.guest_exit_code)
        return self.outcome.exit_code

    def to_result(self, module: str, sha256: str, limits: dict[str, Any] | None = None) -> Result:
        """This run as the library's `Result` (what telemetry, the CLI and gateway render)."""
        usage = Usage(
            wall_ms=self.wall_s * 1000,
            cpu_ms=self.cpu_s * 1000,
            fuel_consumed=self.fuel_consumed,
            peak_memory_bytes=self.memory_bytes,
            files_created=self.files_created,
            bytes_written=self.bytes_written,
            hostcalls=dict(self.hostcalls),
        )
        return Result(
            module=module, sha256=sha256, outcome=self.outcome, exit_code=self.exit_code,
            guest_exit_code=self.guest_exit_code, message=self.message, stdout=self.stdout,
            stderr=self.stderr, stdout_truncated=self.stdout_truncated,
            stderr_truncated=self.stderr_truncated, usage=usage, limits=dict(limits or {}),
        )


class RunSlot(Stoppable):
    """What one run needs and the next may reuse: two memfds receiving stdout and
    stderr, and the ctypes out-parameters of the C calls. Reused until sealed.

    `cap` is the running guest's combined output limit, set once its files are open
    (None: unlimited, or not running); `sealed` is set by `seal_if_over` (the engine's
    ticker thread) and means the slot must be replaced. `exit_code` is the code the
    running guest gave `proc_exit` (`_exit`), None until it does. `deadline`
    (monotonic seconds) and `stopped` serve the owned `poll_oneoff`, which finds the
    slot through `live` by the store's data word. `trip` is the slot's tripwire (None
    without the native library, whose engines keep epochs); `watch` an epochs engine's
    deadline, which the native library keeps (None without it, or without epochs).
    """

    live: ClassVar[dict[int, RunSlot]] = {}

    __slots__ = ("out", "err", "out_path", "err_path", "cap_cell", "capture_err", "sealed",
                 "stopped", "clock_base", "instance", "item", "trap", "fuel_left",
                 "native_in", "native_out", "native_args", "env", "state", "key", "metered",
                 "plan", "trip", "watch", "out_kept", "err_kept", "interrupted", "exit_code",
                 "grown")

    def __init__(self, engine: int = 0, epochs: bool = False) -> None:
        flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
        self.out = os.memfd_create("stockade-stdout", flags)
        self.err = os.memfd_create("stockade-stderr", flags)
        # /proc/<pid> resolves faster than /proc/self; slots never cross a fork.
        self.out_path = f"/proc/{os.getpid()}/fd/{self.out}".encode()
        self.err_path = f"/proc/{os.getpid()}/fd/{self.err}".encode()
        # The cap lives in a C cell: the native run sets it once the files are open.
        self.cap_cell = ctypes.c_int64(-1)
        self.capture_err = True
        self.sealed = False
        self.deadline: float | None = None
        self.stopped = False
        self.wake = threading.Event()  # set by `stop_now`: the owned poll_oneoff returns
        self.interrupted = False  # Ctrl-C reached a host call: raised once the run ends
        self.exit_code: int | None = None
        self.grown = Val()  # the refused grows' global, read after a ctypes run
        self.clock_base = 0
        self.instance = Instance()
        self.item = Extern()
        self.trap = ctypes.c_void_p()
        self.fuel_left = ctypes.c_uint64()
        # What the owned standard streams share with C; the store's data points at it.
        self.trip = Tripwire() if tripwire_available() else None
        # An epochs engine's run deadline, kept by the native library (`WATCH`): None
        # without it, or on an engine without epochs.
        self.watch = EpochWatch(deadline_ns=-1) if epochs and WATCH is not None else None
        self.state = RunState(out_fd=self.out, err_fd=self.err,
                              trip=None if self.trip is None else self.trip.address)
        self.out_kept = memoryview(self.state.out_inline).cast("B")  # read with no copy
        self.err_kept = memoryview(self.state.err_inline).cast("B")
        self.key = ctypes.addressof(self.state)
        self.native_in = RunIn(engine=engine, state=self.key, out_path=self.out_path,
                               err_path=self.err_path, cap=ctypes.pointer(self.cap_cell),
                               out_fd=self.out, err_fd=self.err,
                               trip=None if self.trip is None else self.trip.address,
                               watch=None if self.watch is None
                               else ctypes.addressof(self.watch))
        self.native_out = RunOut()
        # The native run's arguments, made once: a `byref` per call costs more than the call.
        self.native_args = (ctypes.byref(self.native_in), ctypes.byref(self.native_out))
        self.env: EnvBlock | None = None  # the block native_in holds
        self.metered: MeteredRun | None = None
        self.plan: RunPlan | None = None  # the running guest's (for `overdue`)
        RunSlot.live[self.key] = self

    @property
    def cap(self) -> int | None:
        """The running guest's combined output limit in bytes (None: none, or idle)."""
        value = self.cap_cell.value
        return None if value < 0 else value

    @cap.setter
    def cap(self, value: int | None) -> None:
        self.cap_cell.value = -1 if value is None else value

    def seal_if_over(self) -> None:
        """Stop further writes once stdout + stderr exceed the cap (ticker thread). Not
        for the owned standard streams: they stop at the cap as they write, and their
        files may hold an earlier run's bytes."""
        plan = self.plan
        if self.cap is None or self.sealed or plan is None or plan.owned_stdio:
            return
        if sum(self.sizes()) > self.cap:
            fcntl.fcntl(self.out, fcntl.F_ADD_SEALS, _SEALS)
            fcntl.fcntl(self.err, fcntl.F_ADD_SEALS, _SEALS)
            self.sealed = True

    def sizes(self) -> tuple[int, int]:
        """Bytes written to stdout and stderr (0 for a discarded stderr)."""
        return (os.lseek(self.out, 0, os.SEEK_END),
                os.lseek(self.err, 0, os.SEEK_END) if self.capture_err else 0)

    def written(self, plan: RunPlan) -> tuple[int, int]:
        """Bytes this run of `plan` wrote to stdout and stderr: what the owned streams
        counted (their first bytes are kept in the state, and their files keep earlier
        runs' bytes), else the files' sizes."""
        if plan.owned_stdio:
            state = self.state
            return state.out_size, state.err_size if plan.capture_stderr else 0
        return self.sizes()

    def collect(self, n_out: int, n_err: int, owned: bool) -> tuple[bytes, bytes, bool, bool]:
        """(stdout, stderr, stdout_truncated, stderr_truncated) within the cap, given the
        streams' sizes; stdout keeps its bytes first. `owned`: the run's standard streams
        were the native ones, which keep a stream's first bytes in the slot's state (see
        `RunState`); else the files hold all (`sizes`), and the next run's open truncates
        them."""
        keep_out, keep_err = n_out, n_err
        cap = self.cap_cell.value  # -1: none
        if cap >= 0:
            keep_out = min(n_out, cap)
            keep_err = min(n_err, cap - keep_out)
        state = self.state
        out = _head(self.out, self.out_kept, keep_out, owned and not state.out_spilled)
        err = _head(self.err, self.err_kept, keep_err, owned and not state.err_spilled)
        if not self.sealed and max(n_out, n_err) > _RELEASE_BYTES:
            os.ftruncate(self.out, 0)
            os.ftruncate(self.err, 0)
        return out, err, n_out > keep_out, n_err > keep_err

    def close(self) -> None:
        """Close both memfds (their memory is freed with the last descriptor). Its
        deadlines are taken off the native library's list first: nothing there may
        outlive the slot's memory (a run's own `finally` has done so already)."""
        RunSlot.live.pop(self.key, None)
        if self.trip is not None:
            self.trip.undue()
        if self.watch is not None and WATCH is not None:
            WATCH["stop"](ctypes.addressof(self.watch))
        for fd in (self.out, self.err):
            try:
                os.close(fd)
            except OSError:
                pass


def _head(file: int, kept: memoryview, size: int, inline: bool) -> bytes:
    """A stream's first `size` bytes: from those its state keeps (`inline`), else its file."""
    if not size:
        return b""
    return kept[:size].tobytes() if inline else os.pread(file, size, 0)


def execute(engine: int, plan: RunPlan, slot: RunSlot, env: EnvBlock, stdin: bytes,
            deadline_ticks: int) -> FastResult:
    """Instantiate `plan`'s module in a fresh store, call `_start`, classify how it ended
    (`stockade.engine.traps`). `deadline_ticks` is the epoch deadline (the engine's
    `EpochTicker`).

    Runs entirely on the calling thread; every C call releases the GIL. The store and
    its WASI context are created and deleted here, never shared. Without
    `plan.capture_stderr` the guest's stderr is discarded (saves opening a file).
    Verdicts, strongest last: the trap or exit, a sleep cut at the deadline (`timeout`),
    a failure near the memory limit (`memory_limit`), output beyond the cap
    (`output_limit`).
    """
    slot.stopped = slot.interrupted = False
    slot.exit_code = None
    slot.plan = plan
    metered = slot.metered  # its host calls are Python: the ctypes run costs nothing more
    if metered is None and NATIVE_RUN is not None and plan.native is not None \
            and plan.argc <= MAX_STRINGS and env.entries <= MAX_STRINGS:
        ran = _run_native(plan, slot, env, stdin, deadline_ticks)  # resets the state itself
    else:
        _start_state(slot, plan, stdin)
        ran = _run_python(engine, plan, slot, env, stdin, deadline_ticks)
    error, trap, called, memory_bytes, fuel_left, wall, cpu, n_out, n_err, refused = ran
    if trap:
        message, trap_code = take_trap(trap)
        ending = ending_of_trap(trap_code, message)
    elif error:
        message, status = take_error(error)
        ending = ending_of_error(message, status, started=called, max_memory=plan.max_memory)
    else:
        ending = EXITED_OK
    if slot.exit_code is not None:  # the trap was `proc_exit`'s (`_exit`)
        ending, slot.exit_code = exited(slot.exit_code), None
    # What stopped the guest in a host call (a sleep cut short, a meter's limit) left
    # its fuel count written (`traps.fuel_consumed`).
    in_host_call = slot.stopped or (metered is not None and metered.meter.failure is not None)
    if metered is not None:
        ending = metered.ending(ending)
    if ending is not EXITED_OK:  # only a trap is the tripwire's
        ending = tripped(ending, slot.trip if plan.tripwire else None)
        watch = slot.watch  # set for this run when it had a deadline (`stockade_watch_start`)
        if watch is not None and not plan.tripwire and slot.deadline is not None \
                and watch.reason == WATCH_TIMEOUT:
            ending = TIMED_OUT
    if slot.stopped:
        ending = Ending(Outcome.TIMEOUT, "wall-clock timeout (guest was sleeping)")
    slot.state.stdin_data, slot.state.stdin_len = _NO_STDIN, 0  # the body is not kept
    if slot.interrupted:  # Ctrl-C in a host call, which stopped the guest for it
        slot.interrupted = False
        raise KeyboardInterrupt
    return conclude(plan, slot, ending, memory_bytes, fuel_left, wall, cpu, n_out, n_err,
                    refused_bytes(refused), in_host_call)


def conclude(plan: RunPlan, slot: RunSlot, ending: Ending, memory_bytes: int, fuel_left: int,
             wall: float, cpu: float, n_out: int, n_err: int, refused: int = 0,
             in_host_call: bool = False) -> FastResult:
    """The result of a run that ended as `ending` (the trap's or exit's, then the
    meter's): the verdicts after those (the memory limit, given the largest grow it
    `refused` in bytes; the host-call budget, the output cap). `in_host_call`: a host
    call stopped the guest (its fuel count is known). Also for a run its process stops
    at the deadline (`overdue`)."""
    metered = slot.metered
    fuel = fuel_consumed(plan.fuel, fuel_left, ending, in_host_call)
    if ending is not EXITED_OK:  # a clean exit did not fail on an allocation
        ending = memory_verdict(ending, memory_bytes, plan.max_memory, refused)
    outcome, message, code = ending.outcome, ending.message, ending.guest_exit_code
    out, err, out_cut, err_cut = slot.collect(n_out, n_err, plan.owned_stdio) \
        if metered is None else metered.output()
    stop = slot.state.stop
    if stop == STOP_HOSTCALLS:
        outcome, message, code = Outcome.HOSTCALL_LIMIT, \
            f"host-call budget of {plan.max_hostcalls} calls exhausted", None
    elif stop in (STOP_STDOUT, STOP_STDERR):
        out_cut, err_cut, code = out_cut or stop == STOP_STDOUT, err_cut or stop == STOP_STDERR, \
            None
    if (out_cut or err_cut) and metered is None:  # a meter's cap stopped the guest itself
        outcome, message = Outcome.OUTPUT_LIMIT, \
            f"output cap of {format_size(plan.max_output or 0)} reached"
    calls = slot.state.calls[:]
    return FastResult(
        outcome, code, out, err, out_cut, err_cut, message,
        fuel, wall, cpu, memory_bytes,
        hostcalls=dict(filter(_CALLED, zip(CALL_NAMES, calls, strict=True))),
    )


def overdue(plan: RunPlan, slot: RunSlot, wall: float, cpu: float,
            memory_size: Callable[[int], int | None] | None = None) -> FastResult:
    """The result of the run in `slot`, still running, stopped now by its deadline: what
    `execute` returns when an epoch interrupt ends it, from another thread of a process
    that ends itself next (`EngineConfig.process_deadline`). The guest's store is not
    touched (it is not thread-safe): its memory size is what `memory_size` says of the
    memory at its address (the process's mappings), else 0, unknown; nor is the state
    the running guest reads (its stdin)."""
    ending = ending_of_trap(TRAP_INTERRUPT, "")
    sizes = (0, 0)  # a meter keeps its output itself
    if slot.metered is not None:
        ending = slot.metered.ending(ending)
    else:
        sizes = slot.written(plan)
    base = slot.state.memory_base
    memory = memory_size(base) if base and memory_size is not None else None
    return conclude(plan, slot, ending, memory or 0, 0, wall, cpu, *sizes)


def _start_state(slot: RunSlot, plan: RunPlan, stdin: bytes) -> None:
    """Reset the slot's shared state for a run: budget, cap, sizes, stdin, descriptors."""
    state = slot.state
    state.stop = state.hostcalls = state.out_size = state.err_size = state.stdin_pos = 0
    state.out_spilled = state.err_spilled = 0
    state.capture_err = plan.capture_stderr
    state.cap = -1 if plan.max_output is None else plan.max_output
    state.max_hostcalls = _UNLIMITED if plan.max_hostcalls is None else plan.max_hostcalls
    state.stdin_data, state.stdin_len = stdin, len(stdin)
    state.closed[0] = state.closed[1] = state.closed[2] = 0
    ctypes.memset(state.calls, 0, ctypes.sizeof(state.calls))
    state.memory_base = None


_CALLED = operator.itemgetter(1)  # a (name, count) pair of a call made


# error, trap, called, memory, fuel left, wall and CPU seconds, stdout and stderr sizes,
# the refused grows' global (pages)
_Ran = tuple[int | None, int | None, bool, int, int, float, float, int, int, int]


def _run_native(plan: RunPlan, slot: RunSlot, env: EnvBlock, stdin: bytes,
                deadline_ticks: int) -> _Ran:
    """The run as one C call (`_native.c`); the same steps as `_start_state` and
    `_run_python`."""
    args, out = slot.native_in, slot.native_out
    deadline = slot.deadline  # a tripwire's is kept by the library's thread
    args.plan, args.deadline = plan.native_at, deadline_ticks
    args.deadline_ns = -1 if deadline is None else due_ns(deadline)
    if slot.env is not env:  # an EnvBlock is immutable: the same one needs no copying
        args.names, args.values, args.envc = env.names, env.values, env.entries
        args.names_len, args.values_len = len(env.names), len(env.values)
        slot.env = env
    args.stdin_data, args.stdin_len = stdin, len(stdin)
    slot.capture_err = plan.capture_stderr
    slot.clock_base = time.monotonic_ns()  # the guest's monotonic clock starts here
    NATIVE_RUN(*slot.native_args)
    args.stdin_data, args.stdin_len = _NO_STDIN, 0  # the request body is not kept
    status = out.status
    if status != RUN_OK:
        if status == RUN_WASI_FILES:
            raise OSError(f"cannot open {slot.out_path.decode()} for the guest's output")
        if status == RUN_NO_START:
            raise RuntimeError("module lost its _start export")  # checked at load
        if status == RUN_BAD_STRINGS:
            raise ValueError("malformed argv or environment block (or text not UTF-8)")
        if status == RUN_NO_TRIPWIRE:
            raise _no_tripwire(plan)
        if status == RUN_NO_DEADLINE:
            raise RuntimeError(NO_DEADLINE_THREAD)
        message, _ = take_error(out.error) if out.error else ("unknown error", None)
        raise RuntimeError(f"wasmtime: {message}")
    return (out.error, out.trap, bool(out.called), out.memory_bytes, out.fuel_left,
            out.wall_ns / 1e9, out.cpu_ns / 1e9, out.out_size, out.err_size, out.grow_refused)


def _run_python(engine: int, plan: RunPlan, slot: RunSlot, env: EnvBlock,
                stdin: bytes, deadline_ticks: int) -> _Ran:
    """The run through ctypes, one C call at a time (when the native run is not built)."""
    argv, names, values = _entries(plan.argv), _entries(env.names), _entries(env.values)
    if len(argv) != plan.argc or len(names) != env.entries or len(values) != env.entries:
        raise ValueError("malformed argv or environment block")
    metered = slot.metered
    pre, fuel = plan.module._pre if metered is None else metered.pre, plan.fuel
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    byref = ctypes.byref
    instance, item, trap = byref(slot.instance), slot.item, slot.trap
    trap.value = None
    deadline = slot.deadline
    # Set before listing: whatever raises after, the `finally` takes them off the list.
    listed = slot.trip if plan.tripwire and deadline is not None else None
    watched = slot.watch if not plan.tripwire and deadline is not None \
        and WATCH is not None else None
    # As the native run's: the owned calls stop at an epochs run's deadline by its watch.
    slot.state.watch = None if watched is None else ctypes.addressof(watched)
    store = C.store_new(engine, slot.key, None)
    error: int | None = None
    memory_bytes = fuel_left = refused = 0
    called = False
    armed: Tripwire | None = None
    try:
        if listed is not None:
            listed.due(deadline)  # type: ignore[arg-type]  # not None when listed
        cx = C.store_context(store)
        if metered is None:
            C.store_limiter(store, plan.max_memory, *plan.store_limits)
        else:
            metered.limit(store, plan.max_memory, plan.tripwire)
        if fuel is not None:
            _check(C.context_set_fuel(cx, fuel))
        if watched is not None and WATCH is not None:  # as the native run does
            if WATCH["start"](store, cx, ctypes.addressof(watched), engine,
                              due_ns(deadline)) != 0:  # type: ignore[arg-type]
                raise RuntimeError(NO_DEADLINE_THREAD)
        else:
            C.context_set_epoch_deadline(cx, deadline_ticks)
        slot.capture_err = plan.capture_stderr
        _check(C.context_set_wasi(cx, _wasi_config(slot, argv, (names, values),
                                                    b"" if plan.owned_stdio else stdin)
                                  if metered is None else metered.wasi_config(argv, names,
                                                                              values)))
        slot.cap = plan.max_output  # only now: the files were just truncated for this run
        error = C.instance_pre_instantiate(pre, cx, instance, byref(trap))
        if not error and not trap.value and _export(cx, instance, b"memory", item) \
                and item.kind == EXTERN_MEMORY:  # for `overdue` (see `RunState`)
            slot.state.memory_base = C.memory_data(cx, byref(item.of.memory))
        if not error and not trap.value and plan.tripwire:
            # Armed before any guest code: the rewriting moved the start function out of
            # instantiation, into an export run here (engine.tripwire).
            if not _export(cx, instance, _TRIP_PAGE, item) \
                    or item.kind != EXTERN_MEMORY or slot.trip is None:
                raise _no_tripwire(plan)
            armed = slot.trip
            armed.arm(C.memory_data(cx, byref(item.of.memory)))
            if _export(cx, instance, _TRIP_START, item) and item.kind == EXTERN_FUNC:
                error = C.func_call(cx, byref(item.of.func), None, 0, None, 0, byref(trap))
                called = True
        if not error and not trap.value:
            if not _export(cx, instance, b"_start", item) or item.kind != EXTERN_FUNC:
                raise RuntimeError("module lost its _start export")  # checked at load
            error = C.func_call(cx, byref(item.of.func), None, 0, None, 0, byref(trap))
            called = True
        if called and _export(cx, instance, b"memory", item) and item.kind == EXTERN_MEMORY:
            memory_bytes = C.memory_data_size(cx, byref(item.of.memory))
        if called and _export(cx, instance, _GROWN, item) and item.kind == EXTERN_GLOBAL:
            C.global_get(cx, byref(item.of.global_), byref(slot.grown))
            refused = slot.grown.of.i64
        if fuel is not None:
            _check(C.context_get_fuel(cx, byref(slot.fuel_left)))
            fuel_left = slot.fuel_left.value
    finally:
        if listed is not None:  # no deadline fires it after this
            listed.undue()
        if watched is not None and WATCH is not None:  # nor moves the epoch for it
            WATCH["stop"](ctypes.addressof(watched))
        if armed is not None:  # before the store frees the page
            armed.disarm()
        C.store_delete(store)
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    sizes = (0, 0) if metered is not None else slot.written(plan)  # a meter keeps its own
    return (error, trap.value, called, memory_bytes, fuel_left, wall, cpu, *sizes, refused)


def _export(cx: int, instance: Any, name: bytes, item: Extern) -> bool:
    """Whether the instance exports `name`, into `item`."""
    return bool(C.instance_export_get(cx, instance, name, len(name), ctypes.byref(item)))


def _no_tripwire(plan: RunPlan) -> ModuleError:
    return ModuleError(f"{plan.module.name}: its tripwire is missing; refusing to run it")


def _entries(block: bytes) -> list[bytes]:
    """The NUL-terminated entries of `block`."""
    return block.split(b"\0")[:-1] if block else []


def _strings(items: list[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    # Slice assignment converts in C: about twice as fast as the array constructor.
    array = (ctypes.c_char_p * len(items))()
    array[:] = items  # type: ignore[assignment]  # ctypes converts bytes to c_char_p
    return array


def _wasi_config(
    slot: RunSlot, argv: list[bytes], env: tuple[list[bytes], list[bytes]], stdin: bytes
) -> int:
    slot.clock_base = time.monotonic_ns()  # the guest's monotonic clock starts here
    wasi = C.wasi_config_new()
    names, values = env
    if not C.wasi_config_set_argv(wasi, len(argv), _strings(argv)) or (
            names and not C.wasi_config_set_env(wasi, len(names), _strings(names),
                                                _strings(values))):
        C.wasi_config_delete(wasi)
        raise ValueError("argv or environment text is not UTF-8")
    if stdin:
        vec = ByteVec()
        C.wasm_byte_vec_new(ctypes.byref(vec), len(stdin), stdin)
        C.wasi_config_set_stdin_bytes(wasi, ctypes.byref(vec))
    if not (C.wasi_config_set_stdout_file(wasi, slot.out_path)
            and (not slot.capture_err or C.wasi_config_set_stderr_file(wasi, slot.err_path))):
        C.wasi_config_delete(wasi)
        raise OSError(f"cannot open {slot.out_path.decode()} for the guest's output")
    return int(wasi)


def _check(error: int | None) -> None:
    if error:
        message, _ = take_error(error)
        raise RuntimeError(f"wasmtime: {message}")
