"""What one invocation produced: `Outcome`, `Usage` and `Result` (plain data)."""

from __future__ import annotations

import enum
from dataclasses import asdict, field

from .records import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Outcome", "Usage", "Result", "GuestStopped", "GuestExited", "exit_status"]


class Outcome(enum.StrEnum):
    """How an invocation ended. The value is the contract's string."""

    EXITED = "exited"
    TRAP = "trap"
    TIMEOUT = "timeout"
    FUEL_EXHAUSTED = "fuel_exhausted"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    DISK_QUOTA = "disk_quota"
    FILE_QUOTA = "file_quota"
    FD_QUOTA = "fd_quota"
    HOSTCALL_LIMIT = "hostcall_limit"
    DENIED = "denied"
    ERROR = "error"

    @property
    def exit_code(self) -> int:
        """Process exit code for this outcome (`exited` uses the guest's own code instead,
        see `exit_status`)."""
        return _EXIT_CODES[self]

    @property
    def is_violation(self) -> bool:
        """True when a limit or the policy stopped the guest (what breakers and audits count)."""
        return self not in (Outcome.EXITED, Outcome.ERROR)


_EXIT_CODES = {
    Outcome.EXITED: 0,
    Outcome.TRAP: 134,
    Outcome.TIMEOUT: 124,
    Outcome.FUEL_EXHAUSTED: 124,
    Outcome.MEMORY_LIMIT: 137,
    Outcome.OUTPUT_LIMIT: 153,
    Outcome.DISK_QUOTA: 153,
    Outcome.FILE_QUOTA: 153,
    Outcome.FD_QUOTA: 153,
    Outcome.HOSTCALL_LIMIT: 153,
    Outcome.DENIED: 126,
    Outcome.ERROR: 125,
}


def exit_status(guest_exit_code: int) -> int:
    """What a process running a guest that exited with `guest_exit_code` (WASI's u32)
    exits with: the code itself within 0-255, else 255 (a process's status holds 8 bits:
    256 would read as 0, a success)."""
    return guest_exit_code if 0 <= guest_exit_code <= 255 else 255


@record(init=False, repr=False, eq=False, slots=True)
class Usage(Record):
    """Resources one invocation used. Times in milliseconds, sizes in bytes;
    `fuel_consumed` is None when the run was not metered (no instruction budget), or
    when its deadline (or a cancellation) stopped the guest in its own code: wasmtime
    writes the count to the store only at calls and returns, and the rest is lost with
    the stopped frame (a loop without calls read 0). A guest stopped inside a host call
    has its count, which the call wrote."""

    wall_ms: float = 0.0
    cpu_ms: float = 0.0
    fuel_consumed: int | None = None
    peak_memory_bytes: int = 0
    files_created: int = 0
    bytes_written: int = 0
    hostcalls: dict[str, int] = field(default_factory=dict)

    def __init__(self, wall_ms: float = 0.0, cpu_ms: float = 0.0,
                 fuel_consumed: int | None = None, peak_memory_bytes: int = 0,
                 files_created: int = 0, bytes_written: int = 0,
                 hostcalls: dict[str, int] | None = None) -> None:
        self.wall_ms = wall_ms
        self.cpu_ms = cpu_ms
        self.fuel_consumed = fuel_consumed
        self.peak_memory_bytes = peak_memory_bytes
        self.files_created = files_created
        self.bytes_written = bytes_written
        self.hostcalls = {} if hostcalls is None else hostcalls


@record(init=False, repr=False, eq=False, slots=True)
class Result(Record):
    """The outcome of `Sandbox.run`: what the guest printed, how it ended, what it used.

    `exit_code` is what a process running the guest should exit with: the guest's own
    code when it exited, otherwise the outcome's code (see `Outcome.exit_code`).
    `cleanup_error` says what the host could not remove after the run (its scratch
    directory): the run's own outcome stands, the leftover is the host's to deal with.
    """

    module: str
    sha256: str
    outcome: Outcome
    exit_code: int
    guest_exit_code: int | None = None
    message: str = ""
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    usage: Usage = field(default_factory=Usage)
    limits: dict[str, object] = field(default_factory=dict)  # `Limits.as_dict()`
    coldstart: bool = False
    scratch: str | None = None
    cleanup_error: str | None = None

    def __init__(self, module: str, sha256: str, outcome: Outcome, exit_code: int,
                 guest_exit_code: int | None = None, message: str = "", stdout: bytes = b"",
                 stderr: bytes = b"", stdout_truncated: bool = False,
                 stderr_truncated: bool = False, usage: Usage | None = None,
                 limits: dict[str, Any] | None = None, coldstart: bool = False,
                 scratch: str | None = None, cleanup_error: str | None = None) -> None:
        self.module = module
        self.sha256 = sha256
        self.outcome = outcome
        self.exit_code = exit_code
        self.guest_exit_code = guest_exit_code
        self.message = message
        self.stdout = stdout
        self.stderr = stderr
        self.stdout_truncated = stdout_truncated
        self.stderr_truncated = stderr_truncated
        self.usage = Usage() if usage is None else usage
        self.limits = {} if limits is None else limits
        self.coldstart = coldstart
        self.scratch = scratch
        self.cleanup_error = cleanup_error

    @property
    def ok(self) -> bool:
        """True when the guest exited with code 0."""
        return self.outcome is Outcome.EXITED and self.guest_exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON object (stdout/stderr decoded as UTF-8, invalid bytes replaced)."""
        return {
            "module": self.module,
            "sha256": self.sha256,
            "outcome": self.outcome.value,
            "exit_code": self.exit_code,
            "guest_exit_code": self.guest_exit_code,
            "message": self.message,
            "stdout": self.stdout.decode("utf-8", "replace"),
            "stderr": self.stderr.decode("utf-8", "replace"),
            "stdout_truncated": self.stdout_truncated,
            "stderr_truncated": self.stderr_truncated,
            "usage": asdict(self.usage),
            "limits": dict(self.limits),
            **({"scratch": self.scratch} if self.scratch else {}),
            **({"cleanup_error": self.cleanup_error} if self.cleanup_error else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        """Rebuild a `Result` from `to_dict()` output (used across worker processes)."""
        return cls(
            module=data["module"],
            sha256=data["sha256"],
            outcome=Outcome(data["outcome"]),
            exit_code=data["exit_code"],
            guest_exit_code=data.get("guest_exit_code"),
            message=data.get("message", ""),
            stdout=data.get("stdout", "").encode(),
            stderr=data.get("stderr", "").encode(),
            stdout_truncated=data.get("stdout_truncated", False),
            stderr_truncated=data.get("stderr_truncated", False),
            usage=Usage(**data.get("usage", {})),
            limits=data.get("limits", {}),
            coldstart=data.get("coldstart", False),
            scratch=data.get("scratch"),
            cleanup_error=data.get("cleanup_error"),
        )


class GuestExited(Exception):
    """Raised inside `proc_exit` to end the guest with its own exit code (WASI's u32,
    any value): the sandbox turns it into an `exited` result. Not an error."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exited with code {code}")
        self.code = code


class GuestStopped(Exception):
    """Raised inside host calls to stop a guest because a limit was hit.

    Not an error of the caller: the sandbox turns it into a `Result` with `outcome`.
    """

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
