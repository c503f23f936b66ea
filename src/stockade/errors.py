"""The one exception hierarchy of Stockade.

Every error knows its process exit code and HTTP status, so the CLI and the
gateway render errors and never decide what they mean::

    StockadeError                   125 / 500
    ├── UsageError                  125 / 400   bad flag, bad value
    │   └── PolicyError             125 / 400   broken policy file or key
    ├── ModuleNotFound              127 / 404   no such module file
    ├── ModuleError                 126 / 422   not wasm, truncated, incompatible .cwasm
    │   ├── DeniedImport            126 / 403   imports something Stockade does not provide
    │   └── PrecompiledRefused      126 / 403   a .cwasm not opted in, or not authenticated
    │   └── UntrustedModule         126 / 403   no valid signature by a trusted key
    ├── WorkerError                 125 / 500   an isolation worker failed to start or answer
    ├── PoolBusy                    125 / 503   every sandbox of a pool busy, too many waiting
    └── FastPathUnavailable         125 / 500   the C-API fast path cannot run here
"""

from __future__ import annotations

__all__ = [
    "StockadeError",
    "UsageError",
    "PolicyError",
    "ModuleNotFound",
    "StdinTimeout",
    "ModuleError",
    "DeniedImport",
    "PrecompiledRefused",
    "UntrustedModule",
    "WorkerError",
    "PoolBusy",
    "FastPathUnavailable",
]


class StockadeError(Exception):
    """Base of every error Stockade raises on purpose."""

    exit_code = 125
    http_status = 500
    outcome = "error"  # a run's `outcome` in the JSON error object
    json_shown = False  # its JSON error object is printed already (`run --json`)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(StockadeError):
    """A flag, argument or value the user gave cannot be used."""

    http_status = 400


class PolicyError(UsageError):
    """A policy (file, profile or override) is invalid; the message names the key and source."""


class StdinTimeout(StockadeError):
    """The guest's standard input did not end within the run's timeout (it is read
    before the guest starts): the timeout's exit code and outcome."""

    exit_code = 124
    outcome = "timeout"


class ModuleNotFound(StockadeError):
    """The module file does not exist."""

    exit_code = 127
    http_status = 404


class ModuleError(StockadeError):
    """The module cannot run: not WebAssembly, truncated, invalid, or made by another engine."""

    exit_code = 126
    http_status = 422


class DeniedImport(ModuleError):
    """The module imports a function Stockade does not provide (sockets, threads, ...)."""

    http_status = 403

    def __init__(self, message: str, import_name: str) -> None:
        super().__init__(message)
        self.import_name = import_name


class PrecompiledRefused(ModuleError):
    """A precompiled `.cwasm` (native code) was refused: the caller did not opt in with
    `--allow-precompiled` / `allow_precompiled=True`, or this host's key does not
    authenticate it. `sha256` is the digest of the file that was refused."""

    http_status = 403

    def __init__(self, message: str, sha256: str = "") -> None:
        super().__init__(message)
        self.sha256 = sha256

class UntrustedModule(ModuleError):
    """A trust policy requires a valid signature by a trusted key and the module has none."""

    http_status = 403
    outcome = "denied"  # a trust refusal, as the trust gate's denied results say


class WorkerError(StockadeError):
    """An isolation worker could not be started or stopped answering."""


class PoolBusy(StockadeError):
    """A `SandboxPool` has no free sandbox and its bound of waiting callers is reached."""

    http_status = 503


class FastPathUnavailable(StockadeError):
    """The fast path cannot run here: another wasmtime version (its C ABI is pinned),
    another platform, or no /proc. Callers fall back to the wasmtime-py path."""
