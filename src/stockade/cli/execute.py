"""What `stockade run` does once its command line is parsed (by click or the fast lane
of `runspec`): build the policy, run the module observed, render the result. No click
here: the fast lane must not import it.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from ..cancel import INTERRUPTED_EXIT, Interrupted, interrupt_cancels
from ..display import printable
from ..engine.cache import AotCache
from ..errors import StockadeError
from ..invocation import Invocation
from ..policy import Policy
from ..result import Outcome, Result
from .deferred import resume_collection
from .options import build_invocation, build_policy, guest_args, with_trust
from .source import open_source

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..isolate.base import SandboxLike
    from ..sandbox.capi import CapiSandbox

__all__ = ["run_command", "run_policy", "run_observed", "refuse_observed", "render",
           "unbounded_warning"]


def unbounded_warning(policy: Policy) -> str | None:
    """The warning for a policy whose runs nothing stops in time (no timeout: `--timeout
    none`, or `timeout = "none"` in a policy file), or None."""
    if policy.limits.timeout is not None:
        return None
    if policy.limits.fuel is not None:
        return ("no timeout: fuel bounds the instructions this run executes, not how long "
                "it runs (a guest that blocks in a host call runs on)")
    return "no timeout: nothing bounds how long this run runs (a guest that spins runs on)"


def run_policy(profile: str | None, policy_file: Path | None, fuel: str | None,
               timeout: str | None, max_memory: str | None, max_output: str | None,
               wasm_gc: bool, dirs: tuple[str, ...], scratch: str | None, keep_scratch: bool,
               disk_quota: str | None, max_files: str | None, env: tuple[str, ...],
               env_allow: tuple[str, ...], allow_precompiled: bool,
               trust_keys: tuple[Path, ...], require_signature: bool,
               **_others: object) -> Policy:
    """The policy the options of `stockade run` make (the others, `_others`, are not
    the policy's). Raises StockadeError for a bad one."""
    limits = {"fuel": fuel, "timeout": timeout, "max_memory": max_memory,
              "max_output": max_output, "disk_quota": disk_quota, "max_files": max_files,
              "wasm_gc": True if wasm_gc else None}  # the flag turns it on, never off
    policy = build_policy(profile, policy_file, limits, dirs, env, env_allow,
                          allow_precompiled=allow_precompiled)
    policy = with_trust(policy, trust_keys, require_signature)
    if scratch is not None:
        policy = policy.with_capabilities(scratch=scratch, keep_scratch=keep_scratch)
    return policy


def run_command(module: str, args: tuple[str, ...], profile: str | None,
                policy_file: Path | None, fuel: str | None, timeout: str | None,
                max_memory: str | None, max_output: str | None, wasm_gc: bool,
                dirs: tuple[str, ...],
                scratch: str | None, keep_scratch: bool, disk_quota: str | None,
                max_files: str | None, env: tuple[str, ...], env_allow: tuple[str, ...],
                stdin: str | None, isolate: str | None, telemetry_profile: str | None,
                use_breaker: bool, allow_precompiled: bool, trust_keys: tuple[Path, ...],
                require_signature: bool, as_json: bool) -> None:
    """Run MODULE with the options of `stockade run` (see `runspec.RUN_OPTIONS`) and exit
    with the result's exit code. Raises StockadeError (after printing the JSON error
    object under `as_json`)."""
    from dataclasses import replace

    policy: Policy | None = None
    try:
        policy = run_policy(profile, policy_file, fuel, timeout, max_memory, max_output,
                            wasm_gc, dirs, scratch, keep_scratch, disk_quota, max_files, env,
                            env_allow, allow_precompiled, trust_keys, require_signature)
        source = open_source(module, guest_args(args), policy)
        path, args, policy, pinned = source.path, source.args, source.policy, source.pinned
        warning = unbounded_warning(policy)
        if warning is not None:  # before the run: it may never end
            sys.stderr.write(f"stockade: warning: {warning}\n")
            sys.stderr.flush()
        invocation = build_invocation(args, stdin, policy.limits.timeout)
        if pinned is not None:  # an image run is named by its reference and digest
            invocation = replace(invocation, name=pinned)
        try:
            if source.refusal is not None:
                result = refuse_observed(path, policy, invocation, source.refusal,
                                         telemetry_profile, use_breaker, source.sha256)
            else:
                result = run_observed(path, policy, invocation, isolate, telemetry_profile,
                                      use_breaker)
        except Interrupted as stopped:  # what the guest wrote until Ctrl-C, and the
            # command's exit code, not its cancelled run's (`error`)
            render(replace(stopped.result, exit_code=INTERRUPTED_EXIT), as_json)
            raise
        if pinned is not None:
            result = replace(result, module=pinned)
    except StockadeError as exc:
        if as_json:  # the result object's shape: nothing ran, nothing was hashed
            from ..display import shortened
            from .jsonline import report_json

            shown = module if module.startswith("oci://") else Path(module).name
            error = Result(shortened(shown), "", Outcome(exc.outcome), exc.exit_code,
                           message=shortened(exc.message),
                           limits=None if policy is None else policy.limits.as_dict())
            report_json({**error.to_dict(), "sha256": None})
            exc.json_shown = True
        raise
    render(result, as_json, warning)
    sys.exit(result.exit_code)


def run_observed(module: Path, policy: Policy, invocation: Invocation, isolate: str | None,
                 telemetry_profile: str | None, use_breaker: bool = False) -> Result:
    """Run the module (in-process or isolated) and record telemetry and audit records;
    with `use_breaker`, ask its circuit breaker (keyed by the module's digest) first.
    Runs the C-API backend serves (in this process or in an isolated worker) never
    import wasmtime-py here (`stockade.sandbox.backend`)."""
    from ..isolate.factory import default_isolation
    from ..sandbox.backend import use_capi
    from ..telemetry import open_telemetry

    mode = default_isolation(policy) if isolate is None else isolate
    capi = use_capi(policy, module, mode)
    if capi:
        from ..engine.loader import digest
        from ..paths import cache_dir

        cache = AotCache(cache_dir())
        # Read no further than the policy loads (either path): a 400 MiB module under
        # `strict` (64 MiB) was read and hashed whole before the load refused it (found
        # by review).
        sha256 = digest(module, cache, policy.limits.max_module_size)
    else:
        from ..engine import CompileGuard, EngineConfig, get_engine

        engine = get_engine(EngineConfig.for_limits(policy.limits))
        sha256 = engine.digest(module, policy.limits.max_module_size)
        from ..progress import on_terminal

        if on_terminal() and not policy.trust.require_signature:
            # Compile here, where progress can be shown, also for a worker (it shares the
            # AoT cache); a cached module costs a map of its file. Never before the trust
            # gate: unsigned bytes reached the compiler and the cache (found by review).
            engine.load(module, guard=CompileGuard.for_limits(policy.limits))
    with open_telemetry(telemetry_profile, breaker=use_breaker) as telemetry:
        decision = telemetry.admit(module.name, sha256, invocation, policy)
        if not decision.allowed:
            from ..telemetry import refusal_result

            return refusal_result(decision, module.name, sha256)
        observers = (telemetry.observer,)
        if capi and mode == "none":
            from ..sandbox.capi import CapiSandbox

            sandbox: SandboxLike | CapiSandbox = CapiSandbox(policy, observers=observers,
                                                             cache=cache)
        else:
            from ..isolate import make_sandbox

            sandbox = make_sandbox(policy, mode, observers=observers)
        resume_collection()  # paused for start-up by the fast lane (`cli.deferred`)
        # Ctrl-C stops an in-process guest now, not when it stops by itself (an isolated
        # one: its worker is killed when the interrupt reaches the wait for it).
        result: Result | None = None
        try:
            with sandbox, interrupt_cancels(stop=True) if mode == "none" \
                    else contextlib.nullcontext():
                try:
                    result = sandbox.run(module, invocation)
                except BaseException:
                    telemetry.run_failed(sha256, invocation)  # a probe that raised failed
                    raise
        except KeyboardInterrupt:
            if result is not None:  # the cancelled run ended: what it wrote is shown
                raise Interrupted(result) from None
            raise
        return result


def refuse_observed(module: Path, policy: Policy, invocation: Invocation, refusal: str,
                    telemetry_profile: str | None, use_breaker: bool = False,
                    sha256: str | None = None) -> Result:
    """The `denied` result (126) of a module its trust refuses to run as asked (an image's
    or a bundle's process no signature covers), made before anything is loaded and
    recorded in telemetry and the audit log as the trust gate's refusals are
    (`sandbox.provenance.denied_result`). `sha256` is the module's digest, hashed from
    the file when None. Raises ModuleNotFound or ModuleError for a file that cannot be
    read."""
    from ..sandbox.provenance import Gate, denied_result
    from ..telemetry import open_telemetry

    if sha256 is None:
        from ..engine.loader import digest

        sha256 = digest(module, None, policy.limits.max_module_size)
    with open_telemetry(telemetry_profile, breaker=use_breaker) as telemetry:
        return denied_result(Gate(None, module.name, sha256, refusal), policy, invocation,
                             (telemetry.observer,))


def render(result: Result, as_json: bool, warning: str | None = None) -> None:
    """Print the result: JSON (with `warnings` when there is one), or guest output plus
    a summary line when a limit hit."""
    if as_json:
        data = result.to_dict()
        if warning is not None:
            data["warnings"] = [warning]
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()
        return
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    if result.scratch:
        sys.stderr.write(f"stockade: scratch directory kept at {result.scratch}\n")
    if result.cleanup_error:
        sys.stderr.write(f"stockade: cleanup failed: {result.cleanup_error}\n")
    if result.outcome is not Outcome.EXITED:
        truncated = " (output truncated)" if result.stdout_truncated or result.stderr_truncated \
            else ""
        sys.stderr.write(f"stockade: {result.outcome.value}: {printable(result.message)}"
                         f"{truncated} "
                         f"[exit {result.exit_code}, {result.usage.wall_ms:.0f} ms]\n")
    sys.stderr.flush()
