"""What to run a module with: `Invocation` (plain data)."""

from __future__ import annotations

import itertools
import os
from dataclasses import field

from .envblock import checked_env, checked_text, unicode_problem
from .errors import UsageError
from .records import FrozenRecord, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Invocation", "new_invocation_id", "MAX_STDIN"]

MAX_STDIN = 256 * 1024**2  # bytes of standard input a run takes (read whole before it)

# Ids are a random per-process prefix and a counter: unique across processes without a
# getrandom() system call per invocation (the gateway makes thousands a second).
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4)))


def new_invocation_id() -> str:
    """A new 32-hex-digit invocation id, unique across processes."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


def _reseed_after_fork() -> None:
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(8).hex()


os.register_at_fork(after_in_child=_reseed_after_fork)


@record(frozen=True, init=False, repr=False, eq=False)
class Invocation(FrozenRecord):
    """Arguments, standard input and extra environment for one run of a module.

    `args` excludes the program name (the module's file name is used as argv[0]).
    `env` adds variables on top of the policy's; `name` and `tenant` label telemetry,
    breakers and audit records; `traceparent` (W3C) makes the run's span a child of the
    caller's trace; `breaker` names the circuit breaker the run counts toward (the
    gateway: `function:<name>`; None: the module's digest).

    Checked when built: `args` is a sequence of strings (a single string is refused, it
    would otherwise become one argument per character), `stdin` bytes or text (UTF-8),
    `env` pairs or a mapping of strings, all text valid Unicode (no lone surrogates:
    a guest takes UTF-8), and the labels text. Raises UsageError naming the parameter.
    """

    args: tuple[str, ...] = ()
    stdin: bytes = b""
    env: tuple[tuple[str, str], ...] = ()
    name: str | None = None
    tenant: str | None = None
    invocation_id: str = field(default_factory=new_invocation_id)
    traceparent: str | None = None
    breaker: str | None = None

    def __init__(self, args: tuple[str, ...] = (), stdin: bytes | str = b"",
                 env: tuple[tuple[str, str], ...] = (),
                 name: str | None = None, tenant: str | None = None,
                 invocation_id: str | None = None, traceparent: str | None = None,
                 breaker: str | None = None) -> None:
        # The gateway builds thousands a second: the common, valid shapes cost two checks.
        # A NUL, or a name with `=`, reaches no backend: the in-process one cut the text
        # there silently, where a worker refused it (found by review).
        if type(args) is not tuple or not all(type(a) is str and "\0" not in a
                                              and a.isascii() for a in args):
            args = _args(args)
        if type(stdin) is not bytes:
            stdin = _stdin(stdin)
        if len(stdin) > MAX_STDIN:  # the CLI's bound too: held whole, in every backend
            raise UsageError(f"Invocation stdin: larger than {MAX_STDIN // 1024**2} MiB")
        if type(env) is not tuple or env:
            env = checked_env(env, "Invocation env")
        for label, value in (("name", name), ("tenant", tenant),
                             ("invocation_id", invocation_id),
                             ("traceparent", traceparent), ("breaker", breaker)):
            if value is not None and not isinstance(value, str):
                raise UsageError(f"Invocation {label}: expected a str or None, not "
                                 f"{type(value).__name__}")
        put = object.__setattr__
        put(self, "args", args)
        put(self, "stdin", stdin)
        put(self, "env", env)
        put(self, "name", name)
        put(self, "tenant", tenant)
        put(self, "invocation_id", new_invocation_id() if invocation_id is None
            else invocation_id)
        put(self, "traceparent", traceparent)
        put(self, "breaker", breaker)


def _args(value: Any) -> tuple[str, ...]:
    if isinstance(value, str | bytes):
        raise UsageError(f"Invocation args: expected a sequence of strings, not one "
                         f"{type(value).__name__} ({value[:40]!r}): write "
                         "args=('-c', 'print(1)') or args=shlex.split(line)")
    try:  # plain copies, checked and kept: a subclass's `__contains__` may lie
        items = tuple(str.__str__(item) if isinstance(item, str) else item for item in value)
    except TypeError:
        raise UsageError(f"Invocation args: expected a sequence of strings, not "
                         f"{type(value).__name__}") from None
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise UsageError(f"Invocation args[{index}]: expected a str, not "
                             f"{type(item).__name__}")
        if "\0" in item:
            raise UsageError(f"Invocation args[{index}]: contains a NUL character")
        problem = unicode_problem(item)
        if problem is not None:
            raise UsageError(f"Invocation args[{index}]: {item[:40]!r} {problem}")
    return items


def _stdin(value: Any) -> bytes:
    if isinstance(value, str):
        return checked_text(value, "Invocation stdin: text").encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise UsageError(f"Invocation stdin: expected bytes or str, not {type(value).__name__}")


