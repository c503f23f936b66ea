"""Human units: sizes (`16MiB`, `512k`, `1GB`) and durations (`500ms`, `2s`, `1m`)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

__all__ = ["parse_size", "parse_duration", "format_size", "format_duration", "shown",
           "size_variable"]

# No size past what a C int64 (off_t, ssize_t, the C API's) holds; limits bound tighter.
_MAX_BYTES = (1 << 63) - 1

# Matched whole against stripped text: blanks on both sides of an optional unit made
# the match backtrack quadratically (a megabyte of blanks took hours).
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Zµ]*)")
_DURATION_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "m": 60.0, "h": 3600.0,
                   "d": 86400.0}


def parse_size(value: str | int) -> int:
    """Parse a byte size: an int, or a number with a unit (`B`, `KiB`, `MiB`, `GiB`, `KB`, `MB`,
    `k`, `M`, `G`; binary unless the unit says `KB`/`MB`/`GB`). Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative: {shown(value)}")
        size = value
    else:
        match = _SIZE.fullmatch(str(value).strip())
        unit = match.group(2).lower() if match else ""
        if not match or unit not in _SIZE_UNITS:
            raise ValueError(f"not a size: {shown(value)} (use e.g. 64KiB, 16MiB, 1GiB)")
        # Exact integers: float() made 310 digits inf (OverflowError in int()).
        whole, _, fraction = match.group(1).partition(".")
        if len(whole.lstrip("0")) > 24:
            raise ValueError(f"size too large: {shown(value)} (at most 2**63-1 bytes)")
        fraction = fraction[:24]  # finer than a byte in any unit
        size = int(whole + fraction) * _SIZE_UNITS[unit] // 10 ** len(fraction)
    if size > _MAX_BYTES:
        raise ValueError(f"size too large: {shown(value)} (at most 2**63-1 bytes)")
    return size


def parse_duration(value: str | int | float) -> float:
    """Parse a duration into seconds: a number (seconds) or a number with `us`, `ms`, `s`, `m`,
    `h`, `d`. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int of 400 digits
            raise ValueError(f"duration too long: {shown(value)}") from None
    else:
        match = _DURATION.fullmatch(str(value).strip())
        unit = match.group(2).lower() if match else ""
        if not match or unit not in _DURATION_UNITS:
            raise ValueError(f"not a duration: {shown(value)} (use e.g. 500ms, 2s, 1m)")
        seconds = float(match.group(1)) * _DURATION_UNITS[unit]
    if math.isnan(seconds):
        raise ValueError(f"not a duration: {shown(value)}")
    if math.isinf(seconds):
        raise ValueError(f"duration too long: {shown(value)}")
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {shown(value)}")
    return seconds


def shown(value: object, width: int = 40) -> str:
    """`repr(value)`, cut to about `width` characters: errors quote what they refuse, and
    a hostile value may be a megabyte long."""
    if isinstance(value, int) and value.bit_length() >= 128:  # str() of 4,300 digits raises
        return f"a number of {value.bit_length()} bits"
    if isinstance(value, dict | list | tuple):  # nested deep, repr() recursed past its limit
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= width else f"{text[:width - 3]}..."


def size_variable(name: str, env: Mapping[str, str] | None, default: int,
                  minimum: int) -> int:
    """The size the environment variable `name` sets in `env` (default `os.environ`), at
    least `minimum` bytes, else `default`. Raises UsageError naming the variable."""
    import os

    from ..errors import UsageError

    raw = (os.environ if env is None else env).get(name)
    if not raw:
        return default
    try:
        size = parse_size(raw)
    except ValueError as exc:
        raise UsageError(f"{name}={shown(raw)}: {exc}") from None
    if size < minimum:
        raise UsageError(f"{name}={shown(raw)}: use at least {format_size(minimum)}")
    return size


def format_size(size: int) -> str:
    """Render bytes in binary units, e.g. 16777216 -> '16MiB'."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            scaled = size / factor
            return f"{scaled:.0f}{unit}" if scaled == int(scaled) else f"{scaled:.1f}{unit}"
    return f"{size}B"


def format_duration(seconds: float) -> str:
    """Render seconds compactly, e.g. 0.5 -> '500ms', 90 -> '1m30s'."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:g}s" if rest else f"{int(minutes)}m"
