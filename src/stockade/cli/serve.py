"""`stockade serve`: run the HTTP gateway for the functions of a manifest."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..telemetry.profiles import PROFILE_NAMES
from .paths import PathParam

if TYPE_CHECKING:
    from ..gateway.manifest import Manifest

__all__ = ["serve"]


@click.command()
@click.option("-c", "--config", "config", type=PathParam("file", "manifest file"),
              default=Path("stockade.toml"), show_default=True,
              help="The manifest: functions, tenants, [server] settings.")
@click.option("--host", help="Address to listen on (default: [server] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535),
              help="Port to listen on; 0 picks a free one (default: [server] port, 8080).")
@click.option("--workers", type=click.IntRange(1, 64),
              help="Worker processes sharing the port (default: [server] workers, 1).")
@click.option("--threads", type=click.IntRange(1, 256),
              help="Guest threads per worker (default: [server] threads, 8).")
@click.option("--executor", type=click.Choice(["auto", "fast", "sandbox"]),
              help="How functions run: the C-API fast path where possible, or the sandbox.")
@click.option("--telemetry", "telemetry", type=click.Choice(["default", *PROFILE_NAMES]),
              help="OTLP export profile (default: [server] telemetry, else "
                   "STOCKADE_TELEMETRY, else hybrid).")
@click.option("--reuse-port/--shared-socket", "reuse_port", default=None,
              help="One SO_REUSEPORT socket per worker, or one socket shared by all (a "
                   "port another server listens on is refused either way).")
@click.option("--inline/--no-inline", "inline", default=None,
              help="Let short fast-path runs finish on the event loop (default: on).")
@click.option("--reload", "watch", is_flag=True,
              help="Reload when the manifest or a function's module changes.")
@click.option("-q", "--quiet", is_flag=True,
              help="Log only warnings and errors (no access log, no function stderr).")
def serve(config: Path, host: str | None, port: int | None, workers: int | None,
          threads: int | None, executor: str | None, telemetry: str | None,
          reuse_port: bool | None, inline: bool | None, watch: bool, quiet: bool) -> None:
    """Serve the functions of the manifest over HTTP, each request in a fresh instance.

    \b
    Examples:
      stockade new myapp && stockade serve --config myapp/stockade.toml
      stockade serve --port 8080 --workers 2
      curl http://127.0.0.1:8080/hello

    Signals: SIGTERM or Ctrl+C drain in-flight requests and exit; SIGHUP (or, with
    --reload, a change to the manifest or a module) reloads without dropping requests
    (a broken manifest or module is reported and not applied).
    Also served: /healthz, /readyz and Prometheus /metrics.

    Logs on stderr: the routes at start, an access line per request ([server]
    access_log = "common", "json" or "off"), each function's stderr (up to
    [server] stderr_limit bytes a request, log_rate lines a second per function) and
    the reason of every 4xx/5xx a function's request ends with.
    """
    from ..display import PrintableFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter("stockade serve: %(message)s"))
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, handlers=[handler])
    from ..gateway.server import serve as run_gateway

    overrides = {"host": host, "port": port, "workers": workers, "threads": threads,
                 "executor": executor, "telemetry": telemetry, "reuse_port": reuse_port,
                 "inline": inline}

    def announce(url: str, settings: Any, manifest: Manifest | None) -> None:
        if manifest is not None:
            for line in route_lines(url, manifest):
                click.echo(f"stockade serve: {line}", err=True)
        if settings.trusted_proxies:  # whose X-Forwarded-For is believed: say so
            click.echo(f"stockade serve: clients behind {', '.join(settings.trusted_proxies)} "
                       f"are told apart by X-Forwarded-For", err=True)
        click.echo(f"stockade serve: listening on {url} ({settings.workers} worker"
                   f"{'s' if settings.workers != 1 else ''}, {settings.threads} guest threads "
                   f"each{'; reloading on changes' if watch else ''}); Ctrl+C to stop",
                   err=True)

    sys.exit(run_gateway(config, overrides, announce, watch))


def route_lines(url: str, manifest: Manifest) -> list[str]:
    """One line per function: URL, methods, name, module and tenant (names and paths
    escaped: module file names are anyone's choice)."""
    from ..display import printable

    lines = []
    for spec in sorted(manifest.functions, key=lambda s: s.route):
        methods = ",".join(m for m in spec.methods if m != "HEAD") or "any"
        argv = f" argv {' '.join(spec.argv)}" if spec.argv else ""
        lines.append(printable(f"route {url}{'' if spec.route == '/' else spec.route} "
                               f"[{methods}] -> {spec.name} ({spec.module.name}{argv}; "
                               f"tenant {spec.tenant})"))
    return lines
