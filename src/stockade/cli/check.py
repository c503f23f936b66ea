"""`stockade check`: the hardening checklist against a policy, a manifest, a module, this host."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .paths import PathParam

__all__ = ["check"]

_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}


@click.command("check")
@click.option("--policy", "policy_file", type=PathParam("file", "policy file"),
              help="A policy TOML file to check.")
@click.option("--manifest", "manifest_file", type=PathParam("file", "manifest file"),
              help="A gateway manifest (stockade.toml): every function is checked.")
@click.option("--module", type=PathParam("module"),
              help="The module to review (default: each manifest function's own).")
@click.option("--no-host", is_flag=True, help="Skip this host's items (worker, telemetry, audit).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def check(policy_file: Path | None, manifest_file: Path | None, module: Path | None,
          no_host: bool, as_json: bool) -> None:
    """Evaluate the hardening checklist: pre-deploy (CPU, memory, timeout, minimal WASI
    grants, cgroups and seccomp for the worker), runtime (monitoring, breaker, audit log)
    and review (module findings, signatures, attack suite).

    Each item passes, warns or fails with the reason and the fix. Exit 0 only when
    nothing fails (1 otherwise), so CI can gate a deployment on it.
    """
    from ..inspect.checklist import evaluate

    items = evaluate(policy_file, manifest_file, module, host=not no_host)
    counts = {status: sum(i.status == status for i in items) for status in ("pass", "warn",
                                                                            "fail")}
    ok = counts["fail"] == 0
    if as_json:
        click.echo(json.dumps({"ok": ok, "counts": counts,
                               "items": [i.as_dict() for i in items]}, indent=2))
    else:
        from ..display import printable

        section = None
        for item in items:
            if item.section != section:
                section = item.section
                click.echo(f"{section}:")
            click.echo(f"  {_MARK[item.status]}  {item.check} ({printable(item.subject)}): "
                       f"{printable(item.reason)}")
            if item.fix and item.status != "pass":
                click.echo(f"        fix: {printable(item.fix)}")
        click.echo(f"{counts['pass']} passed, {counts['warn']} warned, {counts['fail']} failed")
    sys.exit(0 if ok else 1)
