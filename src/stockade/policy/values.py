"""Parsers of limit values: human units in, canonical numbers out, one table for all.

Used by `Limits` itself (so `Policy().with_limits(timeout="2s", max_memory="32MiB")` is
checked when built), by TOML files and by command-line flags. Each parser raises
ValueError with a message that the caller prefixes with where the value came from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from .units import format_size, parse_duration, parse_size, shown

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["LIMIT_PARSERS", "parse_limit", "suggest", "MAX_MEMORY", "MAX_TIMEOUT"]

_UNLIMITED = ("unlimited", "none", "inf")
# Below one wasm page no module can run: a number without a unit is bytes, so this
# catches `--max-memory 16` meant as 16 MiB.
MIN_MEMORY = 65536

# Ceilings, so that no limit reaches an engine as a number its C integers cannot hold
# (a 2**64 memory limit wrapped to 0 in the C API, fuel past 2**64 wrapped, the isolated
# worker's rlimits raised OverflowError), counting the sums made of them: RLIMIT_AS adds
# each memory's reservation and twice max_output, RLIMIT_FSIZE and RLIMIT_NOFILE add
# headroom, the cgroup multiplies max_memory by max_memories.
MAX_MEMORY = 1 << 48  # 256 TiB: all a 64-bit host maps (48-bit virtual addresses)
MAX_SIZE = 1 << 48  # every other size: far past any use
MAX_FUEL = (1 << 64) - 1  # wasmtime's fuel is a u64
MAX_COUNT = (1 << 63) - 1  # an int64
MAX_STORE_ITEMS = 10_000  # tables, memories, instances: a module declares at most 100
MAX_TABLE_ELEMENTS = 1 << 32  # a 32-bit table's whole index space
MAX_OPEN_FILES = 1 << 30  # the kernel's ceiling on RLIMIT_NOFILE (fs.nr_open)
# A day: an isolated worker waits up to 5 times the timeout (its compile budget, then
# the run) in one poll(), whose milliseconds are a C int (24.8 days); 10 days raised
# OverflowError. Longer runs choose `none` deliberately.
MAX_TIMEOUT = 86_400.0
MIN_TIMEOUT = 0.001


def _count(value: Any, top: int = MAX_COUNT, why: str = "what an int64 holds") -> int:
    """A whole number from 0 to `top`: int, integral float, or text such as `1000`, `1e9`,
    `1_000`."""
    if isinstance(value, bool):
        raise ValueError(f"not a count: {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float | str):
        text = value.strip().replace("_", "") if isinstance(value, str) else value
        try:
            number = int(text) if isinstance(text, str) and text.lstrip("-").isdigit() \
                else _integral(float(text))
        except ValueError:
            raise ValueError(f"not a whole number: {shown(value)} (use e.g. 1000000 or 1e9)") \
                from None
    else:
        raise ValueError(f"expected a whole number, not {type(value).__name__}")
    if number < 0:
        raise ValueError(f"must not be negative: {shown(value)}")
    if number > top:
        raise ValueError(f"{shown(value)} is more than {top:,} ({why})")
    return number


def _upto(top: int, why: str) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        return _count(value, top, why)

    return parse


_STORE_WHY = "a module declares at most 100 of each"


def _instances(value: Any) -> int:
    """A count >= 1: the module itself is an instance (0 refused every run on one
    backend and none on another, which count a forwarding trampoline's apart)."""
    number = _count(value, MAX_STORE_ITEMS, _STORE_WHY)
    if number < 1:
        raise ValueError(f"must be at least 1 (the module's own instance), not {number}")
    return number


def _integral(number: float) -> int:
    if not math.isfinite(number) or not number.is_integer():
        raise ValueError
    return int(number)


def _size(value: Any, top: int = MAX_SIZE, why: str = "far past any use") -> int:
    if isinstance(value, float):
        value = _count(value, top, why)
    if isinstance(value, int) and value > top:  # before parse_size's own, looser bound
        raise ValueError(f"{shown(value)} is more than {top // 1024**4}TiB ({why})")
    if not isinstance(value, int | str):
        raise ValueError(f"expected a size such as 16MiB or a number of bytes, not "
                         f"{type(value).__name__}")
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        raise ValueError(f"must not be negative: {shown(value)}")
    size = parse_size(value)
    if size > top:
        raise ValueError(f"{shown(value)} is more than {top // 1024**4}TiB ({why})")
    return size


# wasmtime aborts the process (a panic, SIGABRT: nothing Python can catch) building an
# engine whose guest stack is 0 or above its 2 MiB async stack (found by review).
MAX_STACK = 2 * 1024**2


def _stack(value: Any) -> int:
    size = _size(value)
    if not 0 < size <= MAX_STACK:
        raise ValueError(f"must be more than 0 and at most {format_size(MAX_STACK)} "
                         f"(wasmtime's bound on a guest's stack), not {format_size(size)}")
    return size


def _memory(value: Any) -> int:
    size = _size(value, MAX_MEMORY, "all a 64-bit host can map")
    if size < MIN_MEMORY:
        hint = f" (a number without a unit is bytes: did you mean {value}MiB?)" \
            if str(value).strip().isdigit() else ""
        raise ValueError(f"{format_size(size)} is less than one 64KiB wasm page, too small "
                         f"to be a memory limit{hint}")
    return size


def _duration(value: Any) -> float:
    if not isinstance(value, int | float | str) or isinstance(value, bool):
        raise ValueError(f"expected a duration such as 2s or a number of seconds, not "
                         f"{type(value).__name__}")
    seconds = parse_duration(value)
    if seconds < MIN_TIMEOUT:  # results show it in whole milliseconds: 0 read as none
        raise ValueError(f"{shown(value)} is less than 1ms, too short to be a timeout")
    if seconds > MAX_TIMEOUT:
        raise ValueError(f"{shown(value)} is more than a day ({MAX_TIMEOUT:.0f}s; 'none' "
                         "for no timeout)")
    return seconds


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_or_unlimited(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in _UNLIMITED):
            return None
        return parse(value)

    return parse_or_unlimited


def _sync(value: Any) -> str:
    text = str(value)
    if text in ("ignore", "allow"):
        return text
    if text.startswith("limit:") and text[6:].isascii() and text[6:].isdigit():
        return f"limit:{_count(text[6:])}"
    raise ValueError(f"not a sync mode: {shown(value)} (use ignore, allow or limit:N)")


def _hostcall_caps(value: Any) -> tuple[tuple[str, int], ...]:
    if isinstance(value, tuple) and all(
            isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)
            and type(p[1]) is int and 0 <= p[1] <= MAX_COUNT for p in value):
        return value  # the canonical form, as the profiles write it
    from ..hostcalls.abi import INTERPOSED  # only for caps given from outside

    if not isinstance(value, Mapping):
        raise ValueError("expected a table of call name = count")
    caps = []
    for name, count in value.items():
        if name not in INTERPOSED:
            raise ValueError(f"{name!r} is not a metered call{suggest(name, INTERPOSED)} "
                             f"(known: {', '.join(INTERPOSED)})")
        caps.append((str(name), _count(count)))
    return tuple(caps)


def _switch(value: Any) -> bool:
    if not isinstance(value, bool):  # TOML's true/false; 1 or "yes" is likely a mistake
        raise ValueError(f"expected true or false, not {shown(value)}")
    return value


LIMIT_PARSERS: dict[str, Callable[[Any], Any]] = {
    "fuel": _optional(_upto(MAX_FUEL, "wasmtime counts fuel in 64 bits")),
    "timeout": _optional(_duration),
    "max_memory": _memory,
    "max_table_elements": _upto(MAX_TABLE_ELEMENTS, "a 32-bit table's index space"),
    "max_tables": _upto(MAX_STORE_ITEMS, _STORE_WHY),
    "max_instances": _instances,
    "max_memories": _upto(MAX_STORE_ITEMS, _STORE_WHY),
    "max_stack": _stack,
    "max_output": _size,
    "disk_quota": _size,
    "max_files": _count,
    "max_open_files": _upto(MAX_OPEN_FILES, "the kernel's ceiling on open files"),
    "max_module_size": _size,
    "max_function_size": _size,
    "max_locals": _count,
    "max_hostcalls": _optional(_count),
    "hostcall_caps": _hostcall_caps,
    "sync": _sync,
    "wasm_gc": _switch,
}


def parse_limit(key: str, value: Any) -> Any:
    """The canonical value of limit `key`. Raises ValueError (KeyError for an unknown key)."""
    return LIMIT_PARSERS[key](value)


def suggest(name: object, known: Any) -> str:
    """`" (did you mean 'x'?)"` for a close match of `name` among `known`, else ``""``."""
    import difflib

    matches = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""
