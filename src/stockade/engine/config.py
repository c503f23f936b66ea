"""`EngineConfig`: the wasmtime settings that change generated code, and their fingerprint."""

from __future__ import annotations

import functools
import os

from ..digests import sha256
from ..errors import UsageError
from ..records import FrozenRecord, record
from .grow import VERSION as GROWWATCH

TYPE_CHECKING = False
if TYPE_CHECKING:
    import wasmtime

    from ..policy import Limits

__all__ = ["EngineConfig", "MEMORY_GUARD", "MEMORY_RESERVATION", "STRATEGIES",
           "wasmtime_version"]

STRATEGIES = ("cranelift", "pulley")

# The shape of every linear memory: 4 GiB of address space (all a 32-bit index reaches)
# plus a guard region, so compiled loads and stores need no explicit bounds check (one
# costs 1.2-1.3x on SHA-256 and quicksort, scripts/measure_costs.py) and a memory never
# moves. wasmtime's own defaults on 64-bit hosts, pinned so that code generation does not
# follow a default that changes, and so a smaller slot cannot be asked for. Address space,
# not memory: each instance or pool slot reserves ~4.03 GiB of it.
MEMORY_RESERVATION = 4 * 1024**3
MEMORY_GUARD = 32 * 1024**2


@functools.cache
def wasmtime_version() -> str:
    """Identifies the loaded wasmtime library build (part of every cache key).

    The shared library's size and mtime stand in for the version: reading package
    metadata costs ~40 ms of imports on every `stockade run`. Read once per process (the
    loaded library cannot change): a hardened worker reads it before it loses the path.
    """
    from .library import library_path  # the file wasmtime-py loads, found without it

    info = os.stat(library_path())
    return f"{info.st_size}-{info.st_mtime_ns}"


@record(frozen=True, init=False, repr=False, eq=False)
class EngineConfig(FrozenRecord):
    """Settings that make compiled code differ; one wasmtime Engine exists per distinct value.

    `fuel` instruments code with an instruction budget, `epochs` with deadline checks;
    `max_stack` is the wasm stack in bytes; `strategy` is `cranelift` or `pulley`
    (wasmtime's portable interpreter). `process_deadline`: the process running the
    engine ends itself at a run's deadline (an isolated worker: `isolate.overrun`), so a
    timeout is allowed without epochs; it changes no generated code. `tripwire`: modules
    are rewritten to read a page at every loop and call (`engine.tripwire`), and a run's
    deadline revokes that page, instead of epochs. `gc`: the Wasm GC and exception-handling
    proposals, whose objects live in a GC heap that wasmtime caps as a memory of its own
    (`Limits.memory_cap`); off, modules using them are refused at load. A frozen record
    (`stockade.records`): a dataclass without code generation at import, on the
    `stockade run` path.
    """

    fuel: bool = True
    epochs: bool = True
    max_stack: int = 1024 * 1024
    strategy: str = "cranelift"
    process_deadline: bool = False
    tripwire: bool = False
    gc: bool = False

    def __init__(self, fuel: bool = True, epochs: bool = True, max_stack: int = 1024 * 1024,
                 strategy: str = "cranelift", process_deadline: bool = False,
                 tripwire: bool = False, gc: bool = False) -> None:
        object.__setattr__(self, "fuel", fuel)
        object.__setattr__(self, "epochs", epochs)
        object.__setattr__(self, "max_stack", max_stack)
        object.__setattr__(self, "strategy", strategy)
        object.__setattr__(self, "process_deadline", process_deadline)
        object.__setattr__(self, "tripwire", tripwire)
        object.__setattr__(self, "gc", gc)

    @classmethod
    def for_limits(cls, limits: Limits, *, process_deadline: bool = False,
                   tripwire: bool | None = None) -> EngineConfig:
        """The configuration a policy's limits need: fuel only when a budget is set;
        epochs unless the process keeps the deadline (`process_deadline`) or a tripwire
        does (`tripwire`). By default (None) the deadline is a tripwire wherever one
        can serve: no fuel budget (probes would be charged to the guest's, whose count
        must match on every backend), no `process_deadline`, and the native library that
        arms it (`trip.available`). The GC heap only where the policy allows it
        (`Limits.wasm_gc`)."""
        if tripwire is None:
            tripwire = limits.fuel is None and not process_deadline and _tripwire_available()
        return cls(fuel=limits.fuel is not None, epochs=not (process_deadline or tripwire),
                   max_stack=limits.max_stack, process_deadline=process_deadline,
                   tripwire=tripwire, gc=limits.wasm_gc)

    def with_epochs(self) -> EngineConfig:
        """This configuration keeping its deadline by epochs instead of a tripwire: the
        engine for modules a tripwire engine cannot rewrite (see `Engine.load`)."""
        return EngineConfig(self.fuel, True, self.max_stack, self.strategy,
                            self.process_deadline, gc=self.gc)

    def with_gc(self) -> EngineConfig:
        """This configuration with Wasm GC and exception handling: the engine asked
        whether a module it refused needs them (`fastpath._engine.needs_gc`)."""
        return EngineConfig(self.fuel, self.epochs, self.max_stack, self.strategy,
                            self.process_deadline, self.tripwire, gc=True)

    def settings(self) -> tuple[tuple[str, bool | int | str], ...]:
        """The wasmtime settings of this configuration, as (name, value) pairs: the one
        table both engines are configured from. Each name is wasmtime-py's `Config`
        attribute and the C API's `wasmtime_config_<name>_set`, so the standard engine
        and the fast path compile the same code (`.cwasm` files serve both). Raises
        UsageError for an unknown strategy."""
        if self.strategy not in STRATEGIES:
            raise UsageError(f"unknown code generator {self.strategy!r} "
                             f"(choose one of: {', '.join(STRATEGIES)})")
        from ..policy.values import LIMIT_PARSERS

        try:  # the policy's own bound: past it, wasmtime would abort the process
            LIMIT_PARSERS["max_stack"](self.max_stack)
        except ValueError as exc:
            raise UsageError(f"a guest stack of {self.max_stack} bytes: {exc}") from None
        if self.tripwire and self.strategy == "pulley":  # its probe is an atomic load
            raise UsageError("a tripwire deadline needs the cranelift code generator "
                             "(pulley has no atomics)")
        table: list[tuple[str, bool | int | str]] = [
            ("consume_fuel", self.fuel),
            ("epoch_interruption", self.epochs),
            ("max_wasm_stack", self.max_stack),
            ("memory_reservation", MEMORY_RESERVATION),
            ("memory_guard_size", MEMORY_GUARD),
            # Threads modules must parse so the import check can name what they need
            # (wasi-threads is not provided: such modules are denied before running).
            # Pulley has no threads: wasmtime aborts the process building such an engine.
            ("wasm_threads", self.strategy != "pulley"),
            # Both allocate in a GC heap, which wasmtime bounds apart from linear memory:
            # only for a policy that splits its memory limit between them (`memory_cap`).
            ("wasm_gc", self.gc),
            ("wasm_exceptions", self.gc),
        ]
        if self.strategy == "pulley":
            table.append(("target", "pulley64"))
        return tuple(table)

    def fingerprint(self) -> str:
        """A short digest of this configuration's settings and the wasmtime version (the
        AoT cache key)."""
        # Every configuration compiles modules with their grows watched (growwatch).
        text = f"wasmtime={wasmtime_version()};{self.settings()!r};growwatch={GROWWATCH}"
        if self.tripwire:  # same wasmtime settings, other code: the rewritten module's
            from .trip import VERSION

            text += f";tripwire={VERSION}"
        return sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """Human form, e.g. 'cranelift, fuel, epochs, stack 1024KiB'."""
        parts = [self.strategy]
        parts += [name for name, on in (("fuel", self.fuel), ("epochs", self.epochs),
                                        ("deadline by process", self.process_deadline),
                                        ("tripwire", self.tripwire),
                                        ("gc", self.gc)) if on]
        parts.append(f"stack {self.max_stack // 1024}KiB")
        return ", ".join(parts)

    def to_wasmtime(self) -> wasmtime.Config:
        """Build the wasmtime-py `Config` from `settings`."""
        import wasmtime

        config = wasmtime.Config()
        for name, value in self.settings():
            setattr(config, name, value)
        return config


def _tripwire_available() -> bool:
    from .trip import available  # loads the native library: only when asked

    return available()
