"""`stockade breaker list|reset`: the circuit breakers of functions and modules that kept
violating limits: this host's (the local database), or those every replica shares when
the manifest given with `--config` keeps its state in Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import UsageError
from .paths import PathParam

if TYPE_CHECKING:
    from ..telemetry.breaker import BreakerEntry

__all__ = ["breaker"]

_CONFIG_HELP = ("The gateway's manifest: with [state] backend = \"redis://…\" the breakers "
                "all its replicas share (credentials from STOCKADE_REDIS_PASSWORD, as for "
                "`stockade serve`); without one, this host's.")


@click.group("breaker")
def breaker() -> None:
    """Circuit breakers: a gateway function (per tenant), or a module run with
    `stockade run --breaker`, that hits resource limits 3 times within 60 s is refused
    until a cooldown passes; then one probe run decides. Traps count only with
    STOCKADE_BREAKER_TRAPS=on (or `breaker_traps = true` in a manifest's [server]).

    With `--config MANIFEST` naming a Redis `[state] backend`, the breakers listed and
    reset are the ones every replica shares there (exit 69 when it cannot be reached)."""


def _config_option(function: Any) -> Any:
    return click.option("-c", "--config", "--manifest", "config", default=None,
                        type=PathParam("file", "manifest file"),
                        help=_CONFIG_HELP)(function)


@contextmanager
def _shared(config: Path | None) -> Iterator[Any]:
    """The shared breakers of `config`'s `[state]` (a `SharedBreakers`), or None for
    this host's. Raises PolicyError for an unreadable manifest or `[state]`."""
    if config is None:
        yield None
        return
    from ..policy.loader import read_toml
    from ..state.settings import parse_state

    data = read_toml(config, "manifest")
    table = data.get("state", {})
    if not isinstance(table, dict):
        raise UsageError(f"{config}: state: expected a table")
    settings = parse_state(table, str(config))
    if not settings.shared:
        yield None
        return
    from ..state.breakers import SharedBreakers

    with SharedBreakers(settings) as shared:
        yield shared


@breaker.command("list")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line, a breaker each (none: no line).")
@_config_option
def list_(as_json: bool, config: Path | None) -> None:
    """List breakers: key (function:NAME or module sha256), tenant, state, recent
    violations, runs refused in the current open period, until when open."""
    from ..display import printable
    from ..telemetry.breaker import iso_time

    with _shared(config) as shared:
        entries: list[BreakerEntry]
        if shared is not None:
            entries = shared.entries()
        else:
            from ..telemetry import Breaker

            with _local_database(), Breaker() as breakers:
                entries = breakers.entries()
    if as_json:
        # JSON lines: `[]` or `{}` for none would be read as a breaker by each line's reader.
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
        # Names come from manifests and shared stores: escaped before a terminal.
        shown = printable(key)
        click.echo(f"{shown:<24}  {printable(e.tenant or '-'):<12}  {printable(e.state):<9}  "
                   f"{e.violations:>10}  {e.denied:>7}  {e.trips:>5}  {until}")


@contextmanager
def _local_database() -> Iterator[None]:
    """This host's breaker database, whose failures (a file that is no database, a newer
    schema, one held locked) are one line (UsageError), not a traceback."""
    import sqlite3

    try:
        yield
    except sqlite3.Error as exc:
        from ..telemetry.breaker import default_path

        raise UsageError(f"breaker database {default_path()}: {exc} (another process may "
                         "hold it; a damaged one can be moved aside to start afresh)") from None


@breaker.command("reset")
@click.argument("key", required=False, default="")
@click.option("--tenant", help="Only this tenant's breaker.")
@click.option("--all", "everything", is_flag=True, help="Reset every breaker.")
@_config_option
def reset(key: str, tenant: str | None, everything: bool, config: Path | None) -> None:
    """Close and forget a breaker: KEY is `function:NAME` (exact), or a module's sha256
    (a hex prefix is enough; modules' breakers are this host's only); or, with --all and
    no KEY, every breaker (only TENANT's with --tenant)."""
    if key and everything:  # which was meant is not for us to guess
        raise UsageError("give KEY or --all, not both")
    if not key and not everything:
        raise UsageError("name a breaker to reset (function:NAME or a module digest prefix), "
                         "or pass --all")
    if key and not key.startswith("function:") and not all(
            c in "0123456789abcdef" for c in key.lower()):
        from ..policy.units import shown

        raise UsageError(f"{shown(key)} is neither function:NAME nor a sha256 digest prefix "
                         "(hex)")
    if not key.startswith("function:"):
        key = key.lower()
    from ..telemetry import open_telemetry

    removed: list[BreakerEntry] = []
    with _shared(config) as shared, _local_database():
        with open_telemetry(monitor=False) as telemetry:
            where = "" if shared is None else f" in {shared.settings.backend}"
            try:
                if shared is not None:
                    shared.reset(key, tenant, removed)
                else:
                    removed = telemetry.breaker.reset(key, tenant)
            finally:  # also those a reset cut short removed
                for entry in removed:
                    telemetry.audit.append("breaker_reset", f"circuit breaker reset by hand "
                                           f"(was {entry.state}){where}", breaker=entry.key,
                                           tenant=entry.tenant, denied=entry.denied or None)
    click.echo(f"reset {len(removed)} circuit breaker{'s' if len(removed) != 1 else ''}"
               f"{where}")
