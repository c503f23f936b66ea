"""The click group of `stockade`: subcommands imported on first use."""

from __future__ import annotations

import importlib

import click

__all__ = ["COMMANDS", "LazyGroup", "cli"]

# command name -> (module under stockade.cli, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("run", "run", "Run a WebAssembly module in a sandbox."),
    "python": ("python", "python", "Run Python code in a sandbox (CPython for WASI)."),
    "compile": ("compile", "compile_", "Compile a module ahead of time to a .cwasm file."),
    "serve": ("serve", "serve", "Serve the functions of a manifest over HTTP (the gateway)."),
    "new": ("new", "new", "Write a starter stockade.toml and its example function."),
    "attack": ("attack", "attack", "Run the attack suite and judge how each attack is contained."),
    "bench": ("bench", "bench", "Benchmark Stockade against native, containers and other hosts."),
    "telemetry": ("telemetry", "telemetry", "Summarise the locally recorded telemetry."),
    "doctor": ("doctor", "doctor", "Show the environment, telemetry export and protections."),
    "breaker": ("breaker", "breaker", "List or reset circuit breakers of misbehaving modules."),
    "audit": ("audit", "audit", "Verify the hash-chained audit log of security events."),
    "advise": ("advise", "advise", "Recommend Wasm, a container, a microVM or a hybrid."),
    "oci": ("oci", "oci", "Build, push, pull and inspect Wasm OCI images."),
    "inspect": ("inspect", "inspect", "Report what a module imports and declares, never run."),
    "keygen": ("provenance", "keygen", "Write a new Ed25519 signing key and its public key."),
    "sign": ("provenance", "sign", "Sign a module (an embedded wasmsign2-compatible signature)."),
    "verify": ("provenance", "verify", "Verify a module's signatures against trusted keys."),
    "check": ("check", "check", "Evaluate the hardening checklist (exit 0 when nothing fails)."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(f"{__package__}.{entry[0]}")
        command: click.Command = getattr(module, entry[1])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _version() -> str:
    from importlib.metadata import version

    return version("stockade")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stockade", prog_name="stockade", message="%(prog)s %(version)s")
def cli() -> None:
    """Stockade runs untrusted WebAssembly under limits that hold, and shows what it did.

    \b
    Quick start:
      stockade run hello.wasm world             run a module, guest output passed through
      stockade python -c 'print(6*7)'           a Python snippet (CPython for WASI)
      stockade run --profile strict --json m.wasm   one JSON result object
      stockade compile m.wasm -o m.cwasm         ahead-of-time compile

    Exit codes: the guest's own code when it exits; 124 CPU/time limit; 125 usage or
    configuration error; 126 module cannot run or is denied; 127 module not found;
    134 trap; 137 memory limit; 153 output, disk, file, descriptor or host-call quota.
    """
