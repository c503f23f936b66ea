"""Read a TOML file users hand us (a policy, a manifest) within bounds.

A regular file only, opened without blocking (a FIFO hung `--policy` for good, and
`/dev/zero` was read until memory ran out), at most `MAX_TOML` bytes. Before tomllib
sees the text, a linear scan refuses what tomllib pays for out of proportion: nesting
deeper than `MAX_NESTING` (5,000 levels raised RecursionError), dotted keys of more
than `MAX_KEY_PARTS` parts (one key of 50,000 parts, 100 KB, took tomllib minutes: each
part costs about the length of the key) and more than `MAX_DOTS` dots in all.

A policy or manifest says what a module may touch and which signatures it needs, so one
another user could rewrite is refused (`regularfile.owner_problem`, the rule of the
trust keys: owned by this user or root, writable by no group or other), judged on the
file opened, not on its path: a 0666 policy requiring signatures was anyone's to turn
the requirement off in.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from itertools import accumulate
from pathlib import Path

from ..errors import PolicyError
from ..regularfile import ROOT_OWNED, open_regular, owner_problem, read_regular

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["read_toml", "refuse_shared", "MAX_TOML", "MAX_NESTING", "MAX_KEY_PARTS",
           "MAX_DOTS"]

# Measured: 1 MiB of the costliest shapes within these bounds (dotted headers, many
# tables) parses in about 1.5 s and 160 MiB; real policies and manifests are KiBs.
MAX_TOML = 1024**2
MAX_NESTING = 64
MAX_KEY_PARTS = 32
MAX_DOTS = 65_536

# Strings and comments, each matched whole from where it starts (or to the end, when
# unterminated: the match never fails and rescans, so the scan stays linear). Outside
# them no quote or `#` occurs, so what is left is TOML's structure.
_OPAQUE = re.compile("|".join((
    r'"""(?:[^\\]|\\[\s\S]?)*?(?:"""|\Z)',  # multi-line basic, escapes skipped
    r"'''[\s\S]*?(?:'''|\Z)",  # multi-line literal
    r'"(?:[^"\\\n]|\\.)*"?',  # basic
    r"'[^'\n]*'?",  # literal
    r"#[^\n]*",  # comment
)))
# A dotted key lies between two of these; so does any value (a float or a time has one
# dot), which only ever over-counts.
_LONG_KEY = re.compile(r"(?:(?<=[\[\]{}=,\n])|\A)(?:[^\[\]{}=,\n.]*\.)"
                       f"{{{MAX_KEY_PARTS}}}")
_BRACKETS = re.compile(r"[^\[\]{}]+")
_DEPTH = {"[": 1, "{": 1, "]": -1, "}": -1}


def read_toml(path: Path, kind: str, hint: str = "", *,
              shared: bool = False) -> dict[str, Any]:
    """The TOML document at `path` (a `kind` such as "policy file"). Raises PolicyError
    naming the file for a missing (with `hint`), unreadable, oversized, too deep or
    invalid one, and (unless `shared`: a copy in a private directory) for one another
    user could rewrite (`refuse_shared`)."""
    import tomllib  # only files need it: keeps `stockade run` start-up lean

    def vet(info: os.stat_result) -> None:
        _refuse(path, info, kind)

    try:
        # A path the user named: a symlink (a config map's file) is followed.
        data = read_regular(path, MAX_TOML + 1, follow=True, vet=None if shared else vet)
    except FileNotFoundError:
        raise PolicyError(f"{path}: {kind} not found{hint}") from None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read {kind}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL in the path (an API caller's)
        raise PolicyError(f"{str(path)!r}: cannot read {kind}: a NUL in the path") from None
    if len(data) > MAX_TOML:
        raise PolicyError(f"{path}: {kind} larger than {MAX_TOML // 1024**2} MiB (refused)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: cannot read {kind}: {exc}") from None
    problem = _shape_problem(text)
    if problem is not None:
        raise PolicyError(f"{path}: {kind} refused: {problem}")
    try:
        document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: ints of 4,300 digits
        raise PolicyError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # the scan bounds nesting; this is the backstop
        raise PolicyError(f"{path}: {kind} refused: nested too deeply") from None
    if _depth(document) > MAX_NESTING:
        # Dotted keys inside inline tables nest without brackets: 60 levels of 31 parts
        # were 1,860 dicts deep, and every repr() of the value recursed past its limit.
        raise PolicyError(f"{path}: {kind} refused: tables nested more than {MAX_NESTING} "
                          "deep")
    return document


def refuse_shared(path: Path, kind: str) -> None:
    """Raise PolicyError when the file at `path` (followed when a link), opened, is one
    another user could rewrite: owned by a uid other than this user's or root's, or
    writable by group or others. A file that cannot be opened passes: reading it
    reports that."""
    try:
        fd = open_regular(path, os.O_RDONLY, follow=True)
    except (OSError, ValueError):
        return
    try:
        _refuse(path, os.fstat(fd), kind)
    finally:
        os.close(fd)


def shared_vet(path: Path, kind: str) -> Callable[[os.stat_result], None]:
    """What `read_regular(..., vet=)` takes to refuse, as `refuse_shared` does, the very
    file it reads (no second open between the check and the read)."""
    return functools.partial(_refuse, path, kind=kind)


def _refuse(path: Path, info: os.stat_result, kind: str) -> None:
    problem = owner_problem(info, ROOT_OWNED)
    if problem:
        fix = "" if problem.startswith("owned") else " (chmod go-w it)"
        raise PolicyError(f"{path}: {problem}: a {kind} another user could rewrite is "
                          f"refused{fix}")


def _depth(document: dict[str, Any]) -> int:
    """How deep tables and arrays nest in `document` (walked without recursion)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            break
        children = node.values() if isinstance(node, dict) else node \
            if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return deepest


def _shape_problem(text: str) -> str | None:
    """Why tomllib should not be given `text`, or None. Linear in its length."""
    structure = _OPAQUE.sub("_", text)
    if structure.count(".") > MAX_DOTS:
        return f"more than {MAX_DOTS:,} dots outside strings (dotted keys)"
    if _LONG_KEY.search(structure):
        return f"a key of more than {MAX_KEY_PARTS} dotted parts"
    brackets = _BRACKETS.sub("", structure)
    if brackets and max(accumulate(map(_DEPTH.__getitem__, brackets))) > MAX_NESTING:
        return f"arrays or tables nested more than {MAX_NESTING} deep"
    return None
