"""`stockade doctor`: where Stockade runs, how telemetry would leave, what protects workers."""

from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["doctor"]


def _rows(title: str, rows: list[tuple[str, str]]) -> None:
    click.echo(title)
    width = max((len(name) for name, _ in rows), default=0)
    for name, value in rows:
        click.echo(f"  {name:<{width}}  {value}")


def _worker_report() -> tuple[list[tuple[str, str]], str | None]:
    """What an isolation worker applies, when the isolation layer can start one."""
    try:
        from ..isolate.protections import protections

        items = protections()
    except Exception as exc:  # noqa: BLE001 - the report says why instead
        return [], f"{type(exc).__name__}: {exc}"
    return [(p.name, ("active: " if p.active else "unavailable: ") + p.detail)
            for p in items], None


def _fast_path_report() -> str:
    """How the gateway's fast path runs a fresh instance on this machine."""
    try:
        from ..engine.fastpath import _native
    except Exception as exc:  # noqa: BLE001 - e.g. another wasmtime version: say so
        return f"unavailable: {exc}"
    if _native.NATIVE_RUN is not None:
        return f"native ({_native.LIBRARY.name}: one C call per run)"
    return ("ctypes (the native run is not built: `make native` or "
            "scripts/build_native.py; or STOCKADE_FASTPATH_NATIVE=0)")


@click.command("doctor")
@click.option("--telemetry", "profile", metavar="PROFILE",
              help="Show what this export profile resolves to (edge, cloud, on-prem, hybrid).")
@click.option("--no-worker", is_flag=True, help="Do not start an isolation worker to probe it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def doctor(profile: str | None, no_worker: bool, as_json: bool) -> None:
    """Print the detected environment (bare metal, VM, container, Wasm), the telemetry
    export that applies, and which OS protections exist for isolation workers."""
    from ..telemetry import choose_profile, detect_environment, probe_protections
    from ..telemetry.settings import resolve_settings, shown_endpoint
    from ..telemetry.sink import resource_attributes

    environment = detect_environment()
    settings = resolve_settings(profile)
    hybrid, hybrid_reason = choose_profile("hybrid", environment)
    host = probe_protections()
    worker, worker_error = ([], "skipped (--no-worker)") if no_worker else _worker_report()
    # Without credentials: a report is pasted where others read it.
    endpoints = sorted({shown_endpoint(url) for url in settings.endpoints.values()})
    export = (f"OTLP {settings.protocol} to {', '.join(endpoints)}"
              if settings.exports else f"local OTLP-JSON file {settings.file}")
    if not settings.enabled:
        export = "off"
    fast_path = _fast_path_report()
    if as_json:
        data: dict[str, Any] = {
            "environment": {**environment._asdict(),
                            "isolation_level": environment.isolation_level},
            "resource": resource_attributes(settings),
            "telemetry": {"profile": settings.profile.name, "reason": settings.reason,
                          "export": export, "sampling_ratio": settings.sampling_ratio,
                          "hybrid": hybrid.name, "hybrid_reason": hybrid_reason},
            "host_protections": dict(host.summary()),
            "worker_protections": dict(worker), "worker_error": worker_error,
            "fast_path": fast_path,
        }
        click.echo(json.dumps(data, default=str))
        return
    under = f" under {environment.hypervisor}" if environment.hypervisor else ""
    runtime = f" ({environment.container_runtime})" if environment.container_runtime else ""
    _rows("Environment", [
        ("virtualization", f"{environment.virtualization}{runtime}{under}"),
        ("isolation level", environment.isolation_level),
        ("container id", environment.container_id or "-"),
        ("cloud", environment.cloud_provider or "-"),
        ("CPUs / memory", f"{environment.cpu_count} / "
         f"{(environment.memory_bytes or 0) / 1024**3:.1f} GiB"),
        ("evidence", "; ".join(environment.evidence) or "-"),
    ])
    _rows("Telemetry", [
        ("profile", f"{settings.profile.name} ({settings.reason})"),
        ("export", export),
        ("batch / interval", f"{settings.batch_size} / {settings.interval:g} s"),
        ("compression", settings.compression),
        ("sampling", f"{settings.sampling_ratio:.0%}"
         + (" parent-based" if settings.parent_based else "")),
        ("hybrid would pick", f"{hybrid.name} ({hybrid_reason})"),
    ])
    _rows("Gateway fast path", [("per-request run", fast_path)])
    _rows("Host protections", host.summary())
    _rows("Worker protections", worker or [("worker", worker_error or "none reported")])
