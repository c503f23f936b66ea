"""`run_python`: a Python snippet in CPython for WASI, with files handed in read-only."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cpython import GUEST_WORKDIR, python_module, write_files
from ..envblock import checked_env, checked_text
from ..errors import UsageError
from ..invocation import Invocation
from ..policy import DirGrant, Policy

if TYPE_CHECKING:
    from ..isolate.base import SandboxLike
    from ..result import Result

__all__ = ["run_python", "python_invocation"]


def python_invocation(code: str, args: Sequence[str] = (), stdin: bytes | str = b"",
                      env: Mapping[str, str] | Sequence[tuple[str, str]] = (),
                      with_files: bool = False) -> Invocation:
    """The invocation running `code` as `python -c CODE ARGS...`; with `with_files`,
    GUEST_WORKDIR is on the module search path. Raises UsageError for a `code` that is
    no text (not a str, a NUL character, a lone surrogate), and as `Invocation` does."""
    if not isinstance(code, str):
        raise UsageError(f"code: expected a str of Python source, not {type(code).__name__}")
    if "\0" in code:
        raise UsageError("code: contains a NUL character")
    checked_text(code, "code:")
    checked = Invocation(args=args).args  # type: ignore[arg-type]  # its checks: a str is not split
    pairs = checked_env(env, "run_python env")
    if with_files:
        pairs = (("PYTHONPATH", GUEST_WORKDIR), *pairs)
    return Invocation(args=("-c", code, *checked), stdin=stdin, env=pairs, name="python")


def run_python(sandbox: SandboxLike, code: str, *, files: Mapping[str, str | bytes] | None = None,
               args: Sequence[str] = (), stdin: bytes | str = b"",
               env: Mapping[str, str] | Sequence[tuple[str, str]] = ()) -> Result:
    """Run `code` with CPython for WASI under `sandbox`'s policy (fetched and compiled on
    first use, see `stockade.cpython`).

    `files` maps relative paths to contents; they are written to a private directory the
    guest sees read-only at `/work` (on its import path, so `files={"util.py": ...}` can
    be imported). Raises UsageError for bad arguments; guest failures are in the Result.
    """
    if sandbox.closed:  # with `files` a sibling runs it: that one is open
        raise UsageError(f"this {type(sandbox).__name__} is closed")
    invocation = python_invocation(code, args, stdin, env, with_files=bool(files))
    module = python_module()  # after the checks: the first use fetches it
    if not files:
        return sandbox.run(module, invocation)
    with tempfile.TemporaryDirectory(prefix="stockade-files-") as tmp:
        write_files(Path(tmp), files)
        grant = DirGrant(host=Path(tmp), guest=GUEST_WORKDIR, writable=False)
        policy = sandbox.policy
        policy = replace(policy, capabilities=replace(
            policy.capabilities, dirs=(*policy.capabilities.dirs, grant)))
        # Grants belong to a sandbox: a sibling of the same kind carries this one.
        with _sibling(sandbox, policy) as sibling:
            return sibling.run(module, invocation)


def _sibling(sandbox: SandboxLike, policy: Policy) -> SandboxLike:
    """A sandbox of the same kind and settings as `sandbox`, under `policy`."""
    options: dict[str, Any] = {"observers": sandbox.observers}
    for name in ("engine_config", "config"):  # Sandbox's, IsolatedSandbox's
        if hasattr(sandbox, name):
            options[name] = getattr(sandbox, name)
    sibling: SandboxLike = type(sandbox)(policy, **options)  # type: ignore[call-arg]
    return sibling
