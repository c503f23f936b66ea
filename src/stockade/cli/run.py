"""`stockade run`: run one module under a policy; guest output passed through."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..display import printable
from ..engine.cache import AotCache
from ..errors import StockadeError
from ..invocation import Invocation
from ..policy import Policy
from ..progress import on_terminal
from ..result import Outcome, Result
from .options import build_invocation, build_policy, guest_args, with_trust
from .source import open_source

if TYPE_CHECKING:
    from ..isolate.base import SandboxLike
    from ..sandbox.capi import CapiSandbox

__all__ = ["run"]


# Everything after MODULE is the guest's, as with wasmtime: options stop at the module.
@click.command(context_settings={"allow_interspersed_args": False})
@click.argument("module")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--profile", type=click.Choice(["strict", "default", "permissive"]),
              help="Starting limits (default: default).")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Limits and capabilities from a TOML file; flags override it.")
@click.option("--fuel", help="Instruction budget (wasmtime fuel), or 'unlimited'.")
@click.option("--timeout", help="Wall-clock limit, e.g. 500ms, 2s, 1m.")
@click.option("--max-memory", help="Linear memory limit, e.g. 16MiB.")
@click.option("--max-output", help="Cap on captured stdout+stderr, e.g. 1MiB.")
@click.option("--dir", "dirs", multiple=True, metavar="HOST[:GUEST][:ro|:rw]",
              help="Preopen a directory; read-only unless :rw. Repeatable. wasmtime's "
                   "HOST::GUEST is accepted too.")
@click.option("--scratch", metavar="GUEST_PATH",
              help="Give each run a fresh writable directory at GUEST_PATH, removed afterwards.")
@click.option("--keep-scratch", is_flag=True, help="Keep the scratch directory and print it.")
@click.option("--disk-quota", help="Cap on bytes written in writable dirs, e.g. 64MiB.")
@click.option("--max-files", help="Cap on new files and directories in writable dirs.")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Set a variable.")
@click.option("--env-allow", "env_allow", multiple=True, metavar="KEY",
              help="Pass one host variable through (nothing else is).")
@click.option("--stdin", "stdin", metavar="FILE|-|none",
              help="Guest standard input: a file, - (this process's), or none (empty). "
                   "Default: this process's stdin, as wasmtime does, unless it is a terminal.")
@click.option("--isolate", type=click.Choice(["process", "none"]),
              help="Run in a hardened worker process (rlimits, cgroup, seccomp, no network) or "
                   "in this process. Default: process for the strict profile, none otherwise.")
@click.option("--telemetry", "telemetry_profile", metavar="PROFILE",
              help="OTLP export profile: edge, cloud, on-prem, hybrid, or off. Default: the "
                   "local OTLP-JSON file, or OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.")
@click.option("--breaker", "use_breaker", is_flag=True,
              help="Guard this module with a circuit breaker: after 3 resource-limit "
                   "violations within 60 s it is refused (exit 126) until a cooldown passes. "
                   "Off by default: one bad input must not lock out later runs.")
@click.option("--allow-precompiled", is_flag=True,
              help="Accept a .cwasm (native code), and only one this host's key "
                   "authenticates (made by `stockade compile` here).")
@click.option("--trust-key", "trust_keys", multiple=True, metavar="PUB",
              type=click.Path(path_type=Path),
              help="Trust this public key (file or directory); requires a signature.")
@click.option("--require-signature", is_flag=True,
              help="Refuse modules without a valid signature by a trusted key (exit 126).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON result object instead.")
def run(module: str, args: tuple[str, ...], profile: str | None, policy_file: Path | None,
        fuel: str | None, timeout: str | None, max_memory: str | None, max_output: str | None,
        dirs: tuple[str, ...], scratch: str | None, keep_scratch: bool,
        disk_quota: str | None, max_files: str | None,
        env: tuple[str, ...], env_allow: tuple[str, ...], stdin: str | None,
        isolate: str | None, telemetry_profile: str | None, use_breaker: bool,
        allow_precompiled: bool, trust_keys: tuple[Path, ...], require_signature: bool,
        as_json: bool) -> None:
    """Run MODULE (.wasm, .wat, .cwasm or oci://REF) in a sandbox. Options go before MODULE;
    everything after it goes to the guest (a `--` right after MODULE is dropped).
    A .cwasm is native code: it needs --allow-precompiled and this host's MAC.

    \b
    Examples:
      stockade run hello.wasm world
      stockade run --profile strict --timeout 2s --max-memory 16MiB app.wasm
      stockade run --dir ./data:/data --dir ./out:/out:rw --disk-quota 10MiB app.wasm
      stockade run --json python.wasm -c "print(6*7)"

    Exits with the guest's own code, or 124 (time/fuel), 125 (usage), 126 (cannot run or
    denied import), 127 (not found), 134 (trap), 137 (memory), 153 (quota).
    """
    limits = {"fuel": fuel, "timeout": timeout, "max_memory": max_memory,
              "max_output": max_output, "disk_quota": disk_quota, "max_files": max_files}
    try:
        policy = build_policy(profile, policy_file, limits, dirs, env, env_allow,
                              allow_precompiled=allow_precompiled)
        policy = with_trust(policy, trust_keys, require_signature)
        if scratch is not None:
            policy = policy.with_capabilities(scratch=scratch, keep_scratch=keep_scratch)
        path, args, policy = open_source(module, guest_args(args), policy)
        invocation = build_invocation(args, stdin)
        result = run_observed(path, policy, invocation, isolate, telemetry_profile,
                              use_breaker)
    except StockadeError as exc:
        if as_json:
            shown = module if module.startswith("oci://") else Path(module).name
            error = {"module": shown, "outcome": "error", "exit_code": exc.exit_code,
                     "message": exc.message}
            click.echo(json.dumps(error))
        raise
    render(result, as_json)
    sys.exit(result.exit_code)


def run_observed(module: Path, policy: Policy, invocation: Invocation, isolate: str | None,
                 telemetry_profile: str | None, use_breaker: bool = False) -> Result:
    """Run the module (in-process or isolated) and record telemetry and audit records;
    with `use_breaker`, ask its circuit breaker (keyed by the module's digest) first.
    In-process runs that need no metered host call go to the C-API backend, which never
    imports wasmtime-py (`stockade.sandbox.backend`)."""
    from ..isolate.factory import default_isolation
    from ..sandbox.backend import use_capi
    from ..telemetry import open_telemetry, refusal_result

    mode = default_isolation(policy) if isolate is None else isolate
    capi = use_capi(policy, module, mode)
    if capi:
        from ..engine.loader import digest
        from ..paths import cache_dir

        cache = AotCache(cache_dir())
        sha256 = digest(module, cache)
    else:
        from ..engine import CompileGuard, EngineConfig, get_engine

        engine = get_engine(EngineConfig.for_limits(policy.limits))
        sha256 = engine.digest(module)
        if on_terminal():
            # Compile here, where progress can be shown, also for a worker (it shares the
            # AoT cache); a cached module costs a map of its file.
            engine.load(module, guard=CompileGuard.for_limits(policy.limits))
    with open_telemetry(telemetry_profile, breaker=use_breaker) as telemetry:
        decision = telemetry.admit(module.name, sha256, invocation, policy)
        if not decision.allowed:
            return refusal_result(decision, module.name, sha256)
        observers = (telemetry.observer,)
        if capi:
            from ..sandbox.capi import CapiSandbox

            sandbox: SandboxLike | CapiSandbox = CapiSandbox(policy, observers=observers,
                                                             cache=cache)
        else:
            from ..isolate import make_sandbox

            sandbox = make_sandbox(policy, mode, observers=observers)
        with sandbox:
            try:
                return sandbox.run(module, invocation)
            except BaseException:
                telemetry.run_failed(sha256, invocation)  # a probe that raised failed
                raise


def render(result: Result, as_json: bool) -> None:
    """Print the result: JSON, or guest output plus a summary line when a limit hit."""
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
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
