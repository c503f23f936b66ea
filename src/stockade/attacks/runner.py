"""`AttackRunner`: each attack in a fresh sandbox, measured from outside, judged.

Per attack the runner makes a run directory (a fresh `scratch/` inside it, granted
writable at `/scratch` when the attack asks), starts a `Monitor`, runs the guest and
reads what it left behind; the directory is removed afterwards unless kept. Anything
that appears in the run directory next to `scratch/` came through an escape.

Two modes: Stockade (the profile's policy, in this process or in an isolated worker)
and `baseline` (plain wasmtime defaults in a child process with an outer watchdog).
Both are judged against the same bounds, derived from the profile.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModuleError, ModuleNotFound, StockadeError, UsageError
from ..guests import guest_path
from ..invocation import Invocation
from ..policy import DirGrant, Policy
from .baseline import run_plain
from .catalogue import Attack
from .impact import Impact, build_impact, entries_outside, guest_breaches
from .modules import forget_compiled, fresh_copy, unloadable
from .monitor import Monitor, Observed
from .probes import disk_for
from .tree import TreeUsage, remove_tree, tree_usage
from .verdict import REFUSED, Bounds, Verdict, bounds_for, judge

# How a run ends when its guest did not load: refused by Stockade (a ModuleError), or an
# error (plain wasmtime's, in a baseline run). Then the guest itself is checked.
_NOT_LOADED = frozenset({REFUSED, "error"})

__all__ = ["RunnerOptions", "AttackRun", "AttackRunner"]

SCRATCH = "scratch"
RUNNER_FILES = {SCRATCH, "module.wasm", "plain.result", "plain.stdout", "plain.stderr",
                "plain.log"}


@dataclass(frozen=True)
class RunnerOptions:
    """How to run the suite.

    `policy` replaces the profile's policy when given (its `profile` names the expected
    outcomes to compare with). `timeout` caps the policy's timeout so the suite finishes
    in minutes (None keeps the policy's); `watchdog` is the outer limit of a baseline
    run in seconds; `guests` is the directory of built guest modules (None: the installed
    package's, or the checkout's `build/guests`, see `stockade.guests`); `devices` is the
    host directory granted (read-only, at `/dev`) to attacks that look for devices.
    """

    profile: str = "default"
    policy: Policy | None = None
    isolate: str = "none"
    baseline: bool = False
    keep_scratch: bool = False
    guests: Path | None = None
    timeout: float | None = 5.0
    watchdog: float = 3.0
    devices: Path = Path("/dev")


@dataclass(frozen=True)
class AttackRun:
    """One attack's run: how it ended, what it cost, and the verdict with reasons.

    `hostcalls` is the sandbox's own count of interposed WASI calls (empty for a
    baseline run); `stdout_tail` the end of what the guest printed.
    """

    attack: Attack
    mode: str
    outcome: str
    message: str
    verdict: Verdict
    reasons: tuple[str, ...]
    impact: Impact
    expected: tuple[str, ...] = ()
    kept: str | None = None
    hostcalls: dict[str, int] = field(default_factory=dict)
    stdout_tail: str = field(default="", repr=False)

    @property
    def as_expected(self) -> bool | None:
        """Whether the outcome is one the catalogue expects (None when none is stated)."""
        return None if not self.expected else self.outcome in self.expected

    def as_dict(self) -> dict[str, object]:
        """The report's JSON object for this attack."""
        return {
            "name": self.attack.name, "strategy": self.attack.strategy,
            "source": self.attack.source, "mode": self.mode, "verdict": self.verdict.value,
            "outcome": self.outcome, "message": self.message, "reasons": list(self.reasons),
            "expected": list(self.expected), "as_expected": self.as_expected,
            "impact": self.impact.as_dict(), "hostcalls": dict(self.hostcalls),
            **({"kept": self.kept} if self.kept else {}),
        }


@dataclass
class _Raw:
    """What a run produced before judging."""

    outcome: str
    message: str
    stdout: bytes
    output_bytes: int
    cpu: tuple[float, float] | None = None
    max_rss: int | None = None
    hostcalls: dict[str, int] = field(default_factory=dict)
    forget: tuple[str, str] | None = None


# A profile without file or disk quota (strict) would stop every writing attack at its
# first create, before its calls reach the kernel: writing attacks get this allowance so
# fsync storms, tiny I/O and inode floods are really exercised under every profile.
WRITE_ALLOWANCE = {"disk_quota": 1024**2, "max_files": 8}


def with_write_allowance(policy: Policy) -> Policy:
    """`policy` with at least WRITE_ALLOWANCE of file and disk quota."""
    limits = policy.limits
    if limits.disk_quota >= WRITE_ALLOWANCE["disk_quota"] and \
            limits.max_files >= WRITE_ALLOWANCE["max_files"]:
        return policy
    return policy.with_limits(
        disk_quota=max(limits.disk_quota, WRITE_ALLOWANCE["disk_quota"]),
        max_files=max(limits.max_files, WRITE_ALLOWANCE["max_files"]))


class AttackRunner:
    """Runs attacks under `options` (see `RunnerOptions`). Raises UsageError for an
    unknown profile or an unavailable isolation, ModuleNotFound when a guest was not
    built."""

    def __init__(self, options: RunnerOptions) -> None:
        self.options = options
        policy = options.policy or Policy.from_profile(options.profile)
        if options.timeout is not None and (policy.limits.timeout is None
                                            or options.timeout < policy.limits.timeout):
            policy = policy.with_limits(timeout=options.timeout)
        self.policy = with_write_allowance(policy)
        self.bounds: Bounds = bounds_for(self.policy)
        self.mode = "baseline" if options.baseline else "stockade"
        self._pid: int | None = None  # the process running the current guest
        if not options.baseline and options.isolate not in ("none", "process"):
            raise UsageError(f"--isolate {options.isolate!r}: choose process or none")
        if not options.baseline and options.isolate == "process":
            _isolate_module()  # fail before the first attack, not in the middle

    def run_all(self, attacks: Iterable[Attack],
                progress: Callable[[AttackRun], None] | None = None) -> list[AttackRun]:
        """Run `attacks` one after the other; `progress` sees each run as it ends."""
        runs = []
        for attack in attacks:
            run = self.run(attack)
            runs.append(run)
            if progress is not None:
                progress(run)
        return runs

    def run(self, attack: Attack) -> AttackRun:
        """Run one attack in a fresh sandbox (or plain child) and judge it."""
        module = guest_path(attack.module, self.options.guests)
        if not module.is_file():
            raise ModuleNotFound(f"{module}: guest not built (run scripts/build_guests.py)")
        root = Path(tempfile.mkdtemp(prefix=f"stockade-attack-{attack.name}-"))
        try:
            scratch = root / SCRATCH
            scratch.mkdir()
            if attack.fresh:
                module = fresh_copy(module, root / "module.wasm", attack.fresh)
            self._pid = None if self.options.baseline else os.getpid()
            monitor = Monitor(lambda: self._pid, disk_for(root), self.bounds.watch())
            raw, observed = self._measured(attack, module, scratch, monitor)
            tree = tree_usage(scratch) if attack.scratch else TreeUsage()
            impact = build_impact(
                observed, tree, raw.output_bytes, cpu=raw.cpu, max_rss=raw.max_rss,
                timeout=self.policy.limits.timeout, timed_out=raw.outcome == "timeout",
                outside=entries_outside(root, RUNNER_FILES), breaches=guest_breaches(raw.stdout))
            if raw.forget is not None:
                forget_compiled(*raw.forget)
            broken = unloadable(module) if raw.outcome in _NOT_LOADED else None
        finally:
            kept = str(root) if self.options.keep_scratch else None
            if kept is None:
                remove_tree(root)
        verdict, reasons = judge(impact, self.bounds, raw.outcome, broken)
        expected = () if self.options.baseline else attack.expected_for(self.policy.profile)
        tail = raw.stdout[-400:].decode(errors="replace")
        return AttackRun(attack, self.mode, raw.outcome, raw.message, verdict, reasons, impact,
                         expected, kept, raw.hostcalls, tail)

    # -- the two modes -------------------------------------------------------------------

    def _measured(self, attack: Attack, module: Path, scratch: Path,
                  monitor: Monitor) -> tuple[_Raw, Observed]:
        if self.options.baseline:
            return self._plain(attack, module, scratch, monitor)
        return self._sandboxed(attack, module, scratch, monitor)

    def _plain(self, attack: Attack, module: Path, scratch: Path,
               monitor: Monitor) -> tuple[_Raw, Observed]:
        dirs: list[tuple[Path, str, bool]] = []
        if attack.scratch:
            dirs.append((scratch, "/scratch", True))
        if attack.devices:
            dirs.append((self.options.devices, "/dev", False))

        def started(pid: int) -> None:
            self._pid = pid

        monitor.start()
        try:
            plain = run_plain(module, attack.args, tuple(dirs), scratch.parent,
                              self.options.watchdog, on_start=started)
        finally:
            observed = monitor.stop()
        raw = _Raw(plain.outcome, plain.message, plain.stdout, plain.output_bytes,
                   cpu=(plain.cpu_user_s, plain.cpu_sys_s), max_rss=plain.max_rss)
        return raw, observed

    def _sandboxed(self, attack: Attack, module: Path, scratch: Path,
                   monitor: Monitor) -> tuple[_Raw, Observed]:
        grants = []
        if attack.scratch:
            grants.append(DirGrant(host=scratch, guest="/scratch", writable=True))
        if attack.devices:
            grants.append(DirGrant(host=self.options.devices, guest="/dev", writable=False))
        policy = self.policy.with_capabilities(dirs=tuple(grants))
        sandbox = self._sandbox(policy, module)
        with sandbox:
            if hasattr(sandbox, "worker_pid"):
                # start the worker first: its own start-up is not the attack's cost
                sandbox.protections()
                self._pid = sandbox.worker_pid
            monitor.start()
            try:
                result = sandbox.run(module, Invocation(args=attack.args, name=attack.name))
            except ModuleNotFound:
                monitor.stop()
                raise
            except ModuleError as exc:  # refused at load: not WebAssembly Stockade runs
                return _Raw(REFUSED, exc.message, b"", 0), monitor.stop()
            except StockadeError as exc:
                return _Raw("error", exc.message, b"", 0), monitor.stop()
            observed = monitor.stop()
        raw = _Raw(result.outcome.value, result.message, result.stdout,
                   len(result.stdout) + len(result.stderr),
                   hostcalls=dict(result.usage.hostcalls))
        if attack.fresh == "salt" and result.sha256:
            raw.forget = (self._fingerprint(policy), result.sha256)
        return raw, observed

    def _sandbox(self, policy: Policy, module: Path) -> Any:
        if self.options.isolate == "process":
            return _isolate_module().make_sandbox(policy, "process")
        from ..sandbox.backend import use_capi

        if use_capi(policy, module, "none"):  # the backend `stockade run` would use
            from ..sandbox.capi import CapiSandbox

            return CapiSandbox(policy)
        from ..sandbox import Sandbox

        return Sandbox(policy)

    @staticmethod
    def _fingerprint(policy: Policy) -> str:
        from ..engine import EngineConfig

        return EngineConfig.for_limits(policy.limits).fingerprint()


def _isolate_module() -> Any:
    """`stockade.isolate`, looked up at run time. Raises UsageError when absent."""
    try:
        return importlib.import_module("..isolate", __package__)
    except ImportError:
        raise UsageError("--isolate process: worker isolation (stockade.isolate) is not "
                         "available in this installation; use --isolate none") from None

