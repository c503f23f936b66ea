"""`stockade breaker list|reset`: the circuit breakers of functions and modules that kept
violating limits."""

from __future__ import annotations

import json

import click

from ..errors import UsageError

__all__ = ["breaker"]


@click.group("breaker")
def breaker() -> None:
    """Circuit breakers: a gateway function (per tenant), or a module run with
    `stockade run --breaker`, that hits resource limits 3 times within 60 s is refused
    until a cooldown passes; then one probe run decides. Traps count only with
    STOCKADE_BREAKER_TRAPS=on (or `breaker_traps = true` in a manifest's [server])."""


@breaker.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(as_json: bool) -> None:
    """List breakers: key (function:NAME or module sha256), tenant, state, recent
    violations, runs refused in the current open period, until when open."""
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
    click.echo(f"{'key':<24}  {'tenant':<12}  {'state':<9}  violations  refused  trips  until")
    for e in entries:
        until = iso_time(e.until) if e.until is not None and e.state == "open" else "-"
        key = e.key if ":" in e.key else e.key[:16]
        shown = _printable(key)
        click.echo(f"{shown:<24}  {_printable(e.tenant or '-'):<12}  {e.state:<9}  "
                   f"{e.violations:>10}  {e.denied:>7}  {e.trips:>5}  {until}")


def _printable(text: str) -> str:
    """Names come from manifests: escape control characters before they reach a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@breaker.command("reset")
@click.argument("key", required=False, default="")
@click.option("--tenant", help="Only this tenant's breaker.")
@click.option("--all", "everything", is_flag=True, help="Reset every breaker.")
def reset(key: str, tenant: str | None, everything: bool) -> None:
    """Close and forget a breaker: KEY is `function:NAME` (exact), or a module's sha256
    (a hex prefix is enough)."""
    if not key and not everything:
        raise UsageError("name a breaker to reset (function:NAME or a module digest prefix), "
                         "or pass --all")
    if key and not key.startswith("function:") and not all(
            c in "0123456789abcdef" for c in key.lower()):
        raise UsageError(f"{key!r} is neither function:NAME nor a sha256 digest prefix (hex)")
    if not key.startswith("function:"):
        key = key.lower()
    from ..telemetry import open_telemetry

    with open_telemetry(monitor=False) as telemetry:
        removed = telemetry.breaker.reset(key, tenant)
        for entry in removed:
            telemetry.audit.append("breaker_reset", f"circuit breaker reset by hand "
                                   f"(was {entry.state})", breaker=entry.key,
                                   tenant=entry.tenant, denied=entry.denied or None)
    click.echo(f"reset {len(removed)} circuit breaker{'s' if len(removed) != 1 else ''}")
