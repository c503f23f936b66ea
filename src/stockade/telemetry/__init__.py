"""Observability for Stockade: OpenTelemetry for every invocation, OTLP export profiles,
environment detection, the security monitor, circuit breakers and the audit log.

    open_telemetry(profile) -> Telemetry          what the CLI and the gateway hold
    ├── sink: FileSink (local OTLP-JSON, no SDK) | SdkSink (OTLP gRPC/HTTP) | NullSink
    ├── monitor: SecurityMonitor                  a RunObserver sampling running guests
    ├── breaker: Breaker                          SQLite circuit breakers per module
    └── audit: AuditLog                           hash-chained security events

Importing this package never imports the OpenTelemetry SDK: only `SdkSink` does, when
an OTLP endpoint is configured. Names are imported from their modules on first use, so
`stockade run` loads only the modules it touches (start-up time is a feature).
"""

from __future__ import annotations

from ..lazyexports import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .audit import AuditLog, AuditReport, verify
    from .breaker import Breaker, BreakerEntry, Decision, Transition, refusal_result
    from .environment import Environment, detect_environment
    from .envsettings import BreakerConfig
    from .filesink import FileSink
    from .instruments import INSTRUMENTS
    from .monitor import SecurityMonitor
    from .pipeline import Telemetry, event_kind, open_telemetry
    from .profiles import PROFILES, ExportProfile, choose_profile
    from .protections import CgroupInfo, Protections, probe_protections
    from .reader import Summary, read_summary
    from .record import InvocationRecord
    from .settings import ExportSettings, resolve_settings
    from .sink import NullSink, Sink

# public name -> the module defining it
_EXPORTS = {
    "AuditLog": "audit", "AuditReport": "audit", "verify": "audit",
    "Breaker": "breaker", "BreakerConfig": "envsettings", "BreakerEntry": "breaker",
    "Decision": "decision", "Transition": "breaker", "refusal_result": "breaker",
    "Environment": "environment", "detect_environment": "environment",
    "FileSink": "filesink",
    "INSTRUMENTS": "instruments",
    "SecurityMonitor": "monitor",
    "Telemetry": "pipeline", "event_kind": "pipeline", "open_telemetry": "pipeline",
    "PROFILES": "profiles", "ExportProfile": "profiles", "choose_profile": "profiles",
    "CgroupInfo": "protections", "Protections": "protections",
    "probe_protections": "protections",
    "Summary": "reader", "read_summary": "reader",
    "InvocationRecord": "record",
    "ExportSettings": "settings", "resolve_settings": "settings",
    "NullSink": "sink", "Sink": "sink",
}

__all__ = [
    "AuditLog",
    "AuditReport",
    "Breaker",
    "BreakerConfig",
    "BreakerEntry",
    "CgroupInfo",
    "Decision",
    "Environment",
    "ExportProfile",
    "ExportSettings",
    "FileSink",
    "INSTRUMENTS",
    "InvocationRecord",
    "NullSink",
    "PROFILES",
    "Protections",
    "SecurityMonitor",
    "Sink",
    "Summary",
    "Telemetry",
    "Transition",
    "choose_profile",
    "detect_environment",
    "event_kind",
    "open_telemetry",
    "probe_protections",
    "read_summary",
    "refusal_result",
    "resolve_settings",
    "verify",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
