"""`stockade breaker list|reset`: the circuit breakers of modules that kept violating limits."""

from __future__ import annotations

import json

import click

from ..errors import UsageError

__all__ = ["breaker"]


@click.group("breaker")
def breaker() -> None:
    """Circuit breakers: a module (per tenant) that violates limits 3 times within 60 s is
    refused until a cooldown passes; then one probe run decides."""


@breaker.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(as_json: bool) -> None:
    """List breakers: digest, tenant, state, recent violations, until when open."""
    from ..telemetry import Breaker
    from ..telemetry.breaker import iso_time

    with Breaker() as breakers:
        entries = breakers.entries()
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry._asdict()))
        return
    if not entries:
        click.echo("no circuit breakers recorded")
        return
    click.echo(f"{'module sha256':<16}  {'tenant':<12}  {'state':<9}  violations  trips  until")
    for e in entries:
        until = iso_time(e.until) if e.until is not None and e.state == "open" else "-"
        click.echo(f"{e.digest[:16]:<16}  {(e.tenant or '-'):<12}  {e.state:<9}  "
                   f"{e.violations:>10}  {e.trips:>5}  {until}")


@breaker.command("reset")
@click.argument("digest", required=False, default="")
@click.option("--tenant", help="Only this tenant's breaker.")
@click.option("--all", "everything", is_flag=True, help="Reset every breaker.")
def reset(digest: str, tenant: str | None, everything: bool) -> None:
    """Close and forget the breakers of the module whose sha256 starts with DIGEST."""
    if not digest and not everything:
        raise UsageError("name a module digest (prefix) to reset, or pass --all")
    if digest and not all(c in "0123456789abcdef" for c in digest.lower()):
        raise UsageError(f"{digest!r} is not a sha256 digest prefix (hex)")
    from ..telemetry import open_telemetry

    with open_telemetry(monitor=False) as telemetry:
        removed = telemetry.breaker.reset(digest.lower(), tenant)
        for entry in removed:
            telemetry.audit.append("breaker_reset", f"circuit breaker reset by hand "
                                   f"(was {entry.state})", sha256=entry.digest,
                                   tenant=entry.tenant)
    click.echo(f"reset {len(removed)} circuit breaker{'s' if len(removed) != 1 else ''}")
