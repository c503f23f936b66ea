"""The options of `stockade run`, as data: one table feeding click and a fast lane.

`stockade.cli.run` builds the click command from `RUN_OPTIONS`; `parse_run` reads a
well-formed `run` command line with the same table and no click (importing click costs
about three quarters of `import wasmtime`, the start-up budget of a whole run). Anything
`parse_run` does not take as plainly valid (help, an unknown or malformed option, a
value outside its choices, a path of the wrong kind, `--` before MODULE) returns None,
and click parses it, with its own messages. A test holds both parsers to the same
answers.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..records import FieldTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Option", "RUN_OPTIONS", "parse_run", "defaults"]


class Option(FieldTuple):
    """One option: `flags` (the first is its name on the command line), the parameter
    `dest`, `kind` (`value`, `flag` or `multiple`), allowed `choices`, `path` when the
    value is a path (`dir_okay=False`: not a directory; `what` names it in messages),
    and its help."""

    flags: tuple[str, ...]
    dest: str
    help: str
    kind: str = "value"
    choices: tuple[str, ...] = ()
    path: bool = False
    metavar: str | None = None
    dir_okay: bool = True
    what: str = "file"


RUN_OPTIONS: tuple[Option, ...] = (
    Option(("--profile",), "profile", "Starting limits (default: default).",
           choices=("strict", "default", "permissive")),
    Option(("--policy",), "policy_file",
           "Limits and capabilities from a TOML file; flags override it.", path=True,
           dir_okay=False, what="policy file"),
    Option(("--fuel",), "fuel", "Instruction budget (wasmtime fuel), or 'unlimited'."),
    Option(("--timeout",), "timeout", "Wall-clock limit, e.g. 500ms, 2s, 1m."),
    Option(("--max-memory",), "max_memory", "Linear memory limit, e.g. 16MiB."),
    Option(("--max-output",), "max_output", "Cap on captured stdout+stderr, e.g. 1MiB."),
    Option(("--wasm-gc",), "wasm_gc", "Allow the Wasm GC and exception-handling proposals "
           "(off: such modules are refused). Their GC heap and the linear memory get half "
           "of --max-memory each.", kind="flag"),
    Option(("--dir",), "dirs", "Preopen a directory; read-only unless :rw. Repeatable. "
           "wasmtime's HOST::GUEST is accepted too.", kind="multiple",
           metavar="HOST[:GUEST][:ro|:rw]"),
    Option(("--scratch",), "scratch", "Give each run a fresh writable directory at "
           "GUEST_PATH, removed afterwards.", metavar="GUEST_PATH"),
    Option(("--keep-scratch",), "keep_scratch", "Keep the scratch directory and print it.",
           kind="flag"),
    Option(("--disk-quota",), "disk_quota",
           "Cap on bytes written in writable dirs, e.g. 64MiB."),
    Option(("--max-files",), "max_files", "Cap on new files and directories in writable dirs."),
    Option(("--env",), "env", "Set a variable.", kind="multiple", metavar="KEY=VALUE"),
    Option(("--env-allow",), "env_allow", "Pass one host variable through (nothing else is).",
           kind="multiple", metavar="KEY"),
    Option(("--stdin",), "stdin", "Guest standard input: a file, - (this process's), or none "
           "(empty). Default: this process's stdin, as wasmtime does, unless it is a terminal.",
           metavar="FILE|-|none"),
    Option(("--isolate",), "isolate", "Run in a hardened worker process (rlimits, cgroup, "
           "seccomp, no network) or in this process. Default: process for the strict profile, "
           "none otherwise.", choices=("process", "none")),
    Option(("--telemetry",), "telemetry_profile", "OTLP export profile: edge, cloud, on-prem, "
           "hybrid, or off. Default: the local OTLP-JSON file, or OTLP when "
           "OTEL_EXPORTER_OTLP_ENDPOINT is set.", metavar="PROFILE"),
    Option(("--breaker",), "use_breaker", "Guard this module with a circuit breaker: after 3 "
           "resource-limit violations within 60 s it is refused (exit 126) until a cooldown "
           "passes. Off by default: one bad input must not lock out later runs.", kind="flag"),
    Option(("--allow-precompiled",), "allow_precompiled", "Accept a .cwasm (native code), and "
           "only one this host's key authenticates (made by `stockade compile` here).",
           kind="flag"),
    Option(("--trust-key",), "trust_keys", "Trust this public key (file or directory); "
           "requires a signature.", kind="multiple", path=True, metavar="PUB",
           what="key file or directory"),
    Option(("--require-signature",), "require_signature", "Refuse modules without a valid "
           "signature by a trusted key (exit 126).", kind="flag"),
    Option(("--json",), "as_json", "Print one JSON result object instead.", kind="flag"),
)

_BY_FLAG = {flag: option for option in RUN_OPTIONS for flag in option.flags}


def defaults() -> dict[str, Any]:
    """Every option's value when it is not given (what click passes too)."""
    return {option.dest: False if option.kind == "flag" else () if option.kind == "multiple"
            else None for option in RUN_OPTIONS}


def parse_run(argv: list[str]) -> dict[str, Any] | None:
    """The `run` callback's parameters for `argv` (the words after `run`): options up to
    MODULE, everything after it the guest's. None unless every word is plainly valid."""
    params = defaults()
    index = 0
    while index < len(argv):
        word = argv[index]
        if not word.startswith("-") or word == "-":
            params["module"], params["args"] = word, tuple(argv[index + 1:])
            return params
        name, equals, value = word.partition("=")
        option = _BY_FLAG.get(name)
        if option is None:  # help, `--`, short options, unknown: click answers
            return None
        if option.kind == "flag":
            if equals:
                return None
            params[option.dest] = True
            index += 1
            continue
        if not equals:
            if index + 1 >= len(argv):
                return None
            value = argv[index + 1]
            if value.startswith("-") and value != "-":  # click's rules for these vary
                return None
            index += 1
        index += 1
        # A path of the wrong kind: click's parameter type (`paths.PathParam`) words it.
        if (option.choices and value not in option.choices) or (option.path and (
                not value or (not option.dir_okay and os.path.isdir(value)))):
            return None
        converted: Any = Path(value) if option.path else value
        if option.kind == "multiple":
            params[option.dest] = (*params[option.dest], converted)
        else:
            params[option.dest] = converted
    return None  # no MODULE
