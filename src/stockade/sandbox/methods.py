"""`RunMethods`: what every sandbox offers on top of its own `run`, written once.

`Sandbox` (in this process) and `IsolatedSandbox` (in a worker) differ only in `run`;
`run_python` (CPython for WASI, `stockade.sandbox.python`) and `run_async` (the run on
a thread, `stockade.sandbox.aio`) are built on it here, so both sandboxes have the same
interface. Nothing is imported until used: the isolated sandbox's parent stays free of
wasmtime-py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..invocation import Invocation
    from ..result import Result

__all__ = ["RunMethods"]


class RunMethods:
    """`run_python` and `run_async` for a class with `run(module, invocation)`,
    `policy` and `observers`."""

    def run(self, module: Any, invocation: Invocation | None = None) -> Result:
        """Run the module once (each sandbox's own)."""
        raise NotImplementedError

    def run_python(self, code: str, *, files: Mapping[str, str | bytes] | None = None,
                   args: Sequence[str] = (), stdin: bytes | str = b"",
                   env: Mapping[str, str] | Sequence[tuple[str, str]] = ()) -> Result:
        """Run Python source `code` in CPython for WASI under this sandbox's policy.

        CPython (26 MB) is fetched on first use and verified by its pinned sha256, then
        compiled once per engine configuration (see `stockade.cpython`). `files` maps
        relative paths to text or bytes, readable by the guest under `/work` (and
        importable); `args` follow `-c CODE` in `sys.argv`. Raises UsageError for bad
        arguments, ModuleError when CPython cannot be fetched; the guest's own failures
        (exceptions, limits) are in the `Result`.
        """
        from .python import run_python

        return run_python(self, code, files=files, args=args, stdin=stdin,  # type: ignore[arg-type]
                          env=env)

    async def run_async(self, module: Any, invocation: Invocation | None = None) -> Result:
        """`run` for asyncio (`module` as `run` takes it): the run is made on a thread, so
        the event loop goes on. Cancelling the caller stops the guest (see
        `stockade.sandbox.aio`)."""
        from .aio import run_in_thread

        return await run_in_thread(lambda: self.run(module, invocation))
