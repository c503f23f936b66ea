"""A guest's argv and environment as the engines take them, and the one check of a variable.

A leaf (it imports only `errors` and `records`): `Invocation`, both engines and the
gateway's CGI block all use it, so what a variable may hold is decided once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .errors import UsageError
from .records import FieldTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["EnvBlock", "NO_ENV", "Env", "encode_env", "encode_args", "variable_problem",
           "checked_env", "unicode_problem", "checked_text"]

Env = Mapping[str, str] | Iterable[tuple[str, str]]


class EnvBlock(FieldTuple):
    """A guest's environment as the C API takes it: `names` and `values` hold `entries`
    entries each, every one UTF-8 ending in a NUL byte (none inside, no `=` in a name).
    Made by `encode_env`, or by a caller that builds the bytes itself (the gateway's CGI
    variables); a malformed block is refused by the run, never read past."""

    names: bytes
    values: bytes
    entries: int


NO_ENV = EnvBlock(b"", b"", 0)


def unicode_problem(text: str) -> str | None:
    """Why `text` cannot reach a guest, which takes UTF-8 (a lone surrogate, as from
    `os.fsdecode` of undecodable bytes), or None. ASCII costs one flag test."""
    if text.isascii():
        return None
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode text (a lone surrogate at position {exc.start})"
    return None


def checked_text(value: str, what: str, error: type[UsageError] = UsageError) -> str:
    """`value` when `unicode_problem` finds nothing; else `error` naming `what`."""
    problem = unicode_problem(value)
    if problem is not None:
        raise error(f"{what} {value[:40]!r} {problem}")
    return value


def variable_problem(name: object, value: object) -> str | None:
    """Why (`name`, `value`) cannot be an environment variable, or None: both text (valid
    Unicode), the name not empty and without `=`, neither with a NUL character."""
    if not isinstance(name, str) or not isinstance(value, str):
        return "names and values must be str"
    if not name or "=" in name or "\0" in name:
        return "not a variable name (empty, or has '=' or NUL)"
    if "\0" in value:
        return "its value contains a NUL character"
    problem = unicode_problem(name) or unicode_problem(value)
    if problem is not None:
        return f"the name or value {problem}"
    return None


def checked_env(value: Any, where: str,
                error: type[UsageError] = UsageError) -> tuple[tuple[str, str], ...]:
    """`value`, a mapping or (NAME, VALUE) pairs, as checked pairs (`variable_problem`);
    `error` naming `where` for anything else, a string included (not split)."""
    pairs = value.items() if isinstance(value, Mapping) else value
    if isinstance(pairs, str | bytes):
        raise error(f"{where}: expected a mapping or (KEY, VALUE) pairs, not a string")
    result = []
    try:
        for pair in pairs:
            if not isinstance(pair, tuple | list):  # "AB" unpacked into A=B
                raise TypeError
            key, text = pair
            if isinstance(key, str) and isinstance(text, str):
                # Plain copies, checked and kept: a subclass's `__contains__` may lie.
                key, text = str.__str__(key), str.__str__(text)
            problem = variable_problem(key, text)
            if problem is not None:
                raise error(f"{where}: {str(key)[:40]!r}: {problem}")
            result.append((key, text))
    except (TypeError, ValueError):
        raise error(f"{where}: expected a mapping or (KEY, VALUE) pairs") from None
    return tuple(result)


def encode_env(env: Env) -> EnvBlock:
    """`env` as an `EnvBlock`. One encode and one scan per list; a bad entry is found
    again by `_text`, which raises UsageError naming it."""
    pairs = list(env.items() if isinstance(env, Mapping) else env)
    if not pairs:
        return NO_ENV
    try:
        names = b"\0".join([name.encode() for name, _ in pairs]) + b"\0"
        values = b"\0".join([value.encode() for _, value in pairs]) + b"\0"
    except (AttributeError, UnicodeEncodeError):
        names = values = b""
    if names.count(b"\0") != len(pairs) or b"=" in names or b"\0\0" in names \
            or names.startswith(b"\0") or values.count(b"\0") != len(pairs):
        for name, value in pairs:
            _text(name, "environment name", "=")
            if not name:
                raise UsageError("environment name '' is empty")
            _text(value, "environment value")
        names = b"".join(name.encode() + b"\0" for name, _ in pairs)
        values = b"".join(value.encode() + b"\0" for _, value in pairs)
    return EnvBlock(names, values, len(pairs))


def encode_args(program: str, args: Iterable[str]) -> list[bytes]:
    """argv as bytes: `program`, then `args`. Raises UsageError naming a bad one."""
    values = [program, *args]
    try:
        encoded = [value.encode() for value in values]
    except (AttributeError, UnicodeEncodeError):
        encoded = None
    if encoded is None or b"\0" in b"".join(encoded):
        encoded = [_text(values[0], "module name"),
                   *(_text(arg, "argument") for arg in values[1:])]
    return encoded


def _text(value: object, what: str, forbidden: str = "") -> bytes:
    if not isinstance(value, str):
        raise UsageError(f"{what} {value!r} must be a string")
    if "\0" in value or (forbidden and forbidden in value):
        raise UsageError(f"{what} {value!r} contains a NUL byte or {forbidden or 'NUL'!r}")
    return checked_text(value, what).encode()
