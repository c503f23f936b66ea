"""`Telemetry`: the one object the CLI and the gateway hold, built by `open_telemetry`.

It owns a sink (local OTLP-JSON file, OTLP exporters, or nothing), the security
monitor, the circuit breakers and the audit log, and hands the sandbox one
`observer`. Per run: the monitor watches it; at its end a span, metrics and, for a
violation, an audit record and log record are written, and the breaker is told.
`admit` is what callers ask before running a module; `run_failed` when a run raised.
Nothing here raises into a run.

Export, breakers and audit are separate switches: with export off (profile `off`,
`OTEL_SDK_DISABLED`) there is no sink and no monitor, but breakers and the audit log
keep working unless turned off themselves (`breaker=False`, `audit=False`).
"""

from __future__ import annotations

import os
import threading
import time

from ..errors import StockadeError
from ..invocation import Invocation
from ..observe import RunInfo
from ..result import Outcome
from .envsettings import AuditSettings, BreakerConfig, unused_settings
from .filesink import FileSink
from .instruments import Attributes
from .log import logger, rare_warning, records_lost
from .monitor import SecurityMonitor
from .record import LIMIT_HIT, MONITOR_WARNING, InvocationRecord, LogEvent, SpanData
from .settings import ExportSettings, resolve_settings
from .sink import NullSink, Sink, is_sampled, ratio_bound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Protocol

    from ..policy import Policy
    from ..result import Result
    from .audit import AuditLog
    from .breaker import BreakerStore, BreakerStoreFactory, Decision, Transition
else:
    Protocol = object  # `typing` costs `stockade run` ~2 ms; at run time a plain base

__all__ = ["Telemetry", "open_telemetry", "event_kind", "breaker_key", "ServerSpanLike",
           "TraceContextLike"]


_QUOTAS = {Outcome.OUTPUT_LIMIT, Outcome.DISK_QUOTA, Outcome.FILE_QUOTA, Outcome.FD_QUOTA,
           Outcome.HOSTCALL_LIMIT}


def event_kind(outcome: Outcome) -> str | None:
    """The audit kind of an outcome: `denial`, `quota_hit`, `violation`, or None."""
    if outcome is Outcome.EXITED:  # most runs: no set or property looked at
        return None
    if outcome is Outcome.DENIED:
        return "denial"
    if outcome in _QUOTAS:
        return "quota_hit"
    return "violation" if outcome.is_violation else None


def breaker_key(sha256: str, invocation: Invocation) -> str:
    """The breaker a run counts toward: the invocation's `breaker` (the gateway names the
    function), else the module's digest."""
    return invocation.breaker or sha256


class TraceContextLike(Protocol):
    """The ids of a gateway request's trace (`stockade.gateway.tracing.TraceContext`)."""

    @property
    def trace_id(self) -> int: ...
    @property
    def parent_id(self) -> int: ...
    @property
    def span_id(self) -> int: ...
    @property
    def sampled(self) -> bool | None: ...
    @property
    def linked(self) -> tuple[int, int] | None: ...


class ServerSpanLike(Protocol):
    """A finished HTTP server span (`stockade.gateway.tracing.ServerSpan`); telemetry does
    not import the gateway, which sits above it."""

    @property
    def context(self) -> TraceContextLike: ...
    @property
    def method(self) -> str: ...
    @property
    def route(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def start_ns(self) -> int: ...
    @property
    def end_ns(self) -> int: ...
    @property
    def function(self) -> str | None: ...


class _Observer:
    """The `RunObserver` handed to the sandbox."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        # `finish` itself, not a method calling it: one call fewer for every run.
        self.run_finished: Callable[[RunInfo, Result], None] = telemetry.finish

    def run_started(self, info: RunInfo) -> None:
        monitor = self._telemetry.monitor
        if monitor is not None:
            monitor.run_started(info)


# Characters of a request's path kept on its span: a client's 64 KiB paths made each
# span 64 KiB, and a flood of them rotated the file sink's history away.
MAX_URL_PATH = 1024


class Telemetry:
    """Telemetry for a process: `observer` for the sandbox, `admit` before a run,
    `close()` at exit (flushes; safe twice; also via `with`)."""

    def __init__(self, settings: ExportSettings, sink: Sink, *, monitor: bool = True,
                 breaker: bool = True, audit: bool = True,
                 breaker_config: BreakerConfig | None = None,
                 breaker_store: BreakerStoreFactory | None = None,
                 audit_settings: AuditSettings | None = None) -> None:
        self.settings = settings
        self.sink = sink
        self._recording = not isinstance(sink, NullSink)
        # Sinks that can count an unsampled clean run without its full record.
        self._unsampled: Callable[[RunInfo, Result], bool] | None = getattr(
            sink, "record_unsampled", None)
        self._bound = ratio_bound(settings.sampling_ratio)
        self.monitor = SecurityMonitor(on_warning=self._live_warning) if monitor else None
        self.observer = _Observer(self)
        self._use_breaker = breaker
        self._use_audit = audit
        self._breaker_config = breaker_config
        self._breaker_store = breaker_store
        self._audit_settings = audit_settings
        self._breaker: BreakerStore | None = None
        self._audit: AuditLog | None = None
        self._lazy = threading.Lock()  # gateway threads may ask for these at once
        self._closed = False

    @property
    def breaker(self) -> BreakerStore:
        """The circuit breakers (opened on first use): the `breaker_store` factory's
        (shared state), else the local SQLite database."""
        with self._lazy:
            if self._breaker is None:
                from .breaker import Breaker  # imported when first needed: start-up time

                store = None
                if self._breaker_store is not None:
                    store = self._breaker_store(self._config(), self._transition)
                self._breaker = store or Breaker(config=self._breaker_config,
                                                 on_transition=self._transition)
            return self._breaker

    @property
    def audit(self) -> AuditLog:
        """The audit log (every record is also emitted as a log record), kept as the
        `audit_settings` checked when telemetry opened say."""
        with self._lazy:
            if self._audit is None:
                from .audit import AuditLog

                if self._audit_settings is None:
                    self._audit_settings = AuditSettings.from_env()
                self._audit = AuditLog(emit=self._audit_record,
                                       key_path=self._audit_settings.key_path,
                                       max_bytes=self._audit_settings.max_bytes)
            return self._audit

    def prepare(self) -> None:
        """Open the breaker database and read the audit key now rather than at the first
        use (a server does this before it confines itself). Raises UsageError for an
        unusable audit key or breaker setting."""
        if self._use_audit:
            _ = self.audit.key
        if self._use_breaker:
            _ = self.breaker

    def admit(self, module: str, sha256: str, invocation: Invocation | None = None,
              policy: Policy | None = None) -> Decision:
        """Ask the run's breaker (`breaker_key`) whether it may run. A refusal is recorded
        like a run (span, metrics) and counted by the breaker, whose next transition
        reports the count in one audit record; `refusal_result(decision, ...)` renders
        it. With breakers turned off every run is admitted (state `disabled`)."""
        from .decision import Decision  # not the breakers themselves while they are off

        if not self._use_breaker:
            return Decision(True, "disabled")
        from .breaker import default_path, refusal_result

        if self._breaker is None and self._breaker_store is None \
                and not default_path().exists():
            return Decision(True, "closed")  # nothing ever violated: nothing to open
        invocation = invocation or Invocation()
        try:
            decision = self.breaker.check(breaker_key(sha256, invocation), invocation.tenant,
                                          holder=invocation.invocation_id)
        except Exception as exc:  # noqa: BLE001 - a broken breaker database must not stop runs
            logger().warning("circuit breaker unavailable; run allowed", exc_info=True)
            rare_warning("breaker", f"telemetry: circuit breaker unavailable, runs allowed: "
                         f"{exc}", "see `stockade breaker list`")
            return Decision(True, "unknown")
        if not decision.allowed:
            from ..policy import Policy

            info = RunInfo(module, sha256, invocation, policy or Policy(), time.time(),
                           os.getpid())
            self.finish(info, refusal_result(decision, module, sha256), refused=decision)
        return decision

    def finish(self, info: RunInfo, result: Result, refused: Decision | None = None) -> None:
        """Record a finished run: monitor's final check, span and metrics, audit and log
        records for a violation, and the breaker's count. Never raises."""
        try:
            warnings = self.monitor.final_check(info, result) if self.monitor else []
            if not warnings and refused is None and self._unsampled is not None \
                    and event_kind(result.outcome) is None and not result.cleanup_error \
                    and self._unsampled(info, result):
                self._tell_breaker(info, result)
                return
            trace_id = span_id = 0
            limit = "breaker" if refused is not None else LIMIT_HIT.get(result.outcome, "none")
            if self._recording:
                record = InvocationRecord.build(info, result)
                record.limit_hit = limit
                self.sink.record(record)
                trace_id, span_id = record.trace_id, record.span_id
                for attrs in warnings:
                    self._log_warning(info, attrs, trace_id, span_id)
            kind = event_kind(result.outcome)
            # A refusal is not audited one by one: the breaker counts refusals and its
            # next transition reports them (a flood of refused requests stays small).
            if kind is not None and refused is None and self._use_audit:
                self._append_audit(
                    kind, result.message or result.outcome.value,
                    module=info.module, sha256=info.sha256, tenant=info.invocation.tenant,
                    invocation_id=info.invocation.invocation_id,
                    outcome=result.outcome.value,
                    limit=limit,
                    until=refused.until_iso if refused else None,
                    trace_id=format(trace_id, "032x") if trace_id else None,
                    span_id=format(span_id, "016x") if span_id else None,
                )
            if result.cleanup_error:
                self._append_audit(
                    "cleanup_failed", result.cleanup_error, module=info.module,
                    sha256=info.sha256, tenant=info.invocation.tenant,
                    invocation_id=info.invocation.invocation_id, outcome=result.outcome.value,
                )
            if refused is None:
                self._tell_breaker(info, result)
        except Exception as exc:  # noqa: BLE001 - telemetry never breaks a run
            logger().warning("could not record run telemetry", exc_info=True)
            # Also where it is heard: the logger above has no handler outside a server.
            records_lost("a run's telemetry", exc)

    def _tell_breaker(self, info: RunInfo, result: Result) -> None:
        """Count the run for its breaker (a clean run only once a breaker exists). An
        internal error proves nothing: as a probe it failed, otherwise it is not counted.
        The run is named by its invocation id: only the probe's own run moves a half-open
        breaker."""
        if not self._use_breaker:
            return
        outcome, breaker = result.outcome, self._breaker
        if outcome is Outcome.EXITED and (breaker is None or not breaker.holds_probe):
            return  # never counts; only a probe run of this process may close a breaker
        invocation = info.invocation
        key, tenant = breaker_key(info.sha256, invocation), invocation.tenant
        holder = invocation.invocation_id
        config = breaker.config if breaker is not None else self._config()
        if config.counts(outcome):
            self.breaker.record(key, tenant, True, holder=holder,
                                source=getattr(invocation, "source", None))
        elif breaker is None:
            return
        elif outcome is Outcome.ERROR:
            breaker.probe_failed(key, tenant, holder=holder)
        else:
            breaker.record(key, tenant, False, holder=holder)

    @property
    def breaker_config(self) -> BreakerConfig | None:
        """How breakers count and refuse, or None when breakers are off."""
        return self._config() if self._use_breaker else None

    def _config(self) -> BreakerConfig:
        if self._breaker_config is None:
            self._breaker_config = BreakerConfig.from_env()
        return self._breaker_config

    def run_failed(self, sha256: str, invocation: Invocation) -> None:
        """A run admitted by `admit` raised instead of returning a Result: when it was the
        breaker's half-open probe, the probe failed (the breaker opens again). Never
        raises."""
        self._settle_probe("probe_failed", sha256, invocation,
                           "could not tell the circuit breaker a probe failed")

    def counted(self, sha256: str, invocation: Invocation) -> bool:
        """Whether the client of `invocation` (its `source`) has a violation counted by
        its breaker within the window: its half-open probe would prove nothing. False
        for a run that names no client, or when the breaker cannot be asked."""
        source = getattr(invocation, "source", None)
        if source is None or not self._use_breaker or self._breaker is None:
            return False
        try:
            return bool(self._breaker.counted(breaker_key(sha256, invocation),
                                              invocation.tenant, source))
        except Exception:  # noqa: BLE001 - telemetry never breaks a run
            logger().warning("could not ask the circuit breaker about a client",
                             exc_info=True)
            return False

    def probe_held(self, sha256: str, invocation: Invocation) -> None:
        """The run of `invocation` holds the breaker probe a shared store's admission
        granted this process (before the invocation existed): only its end closes or
        re-opens the breaker. Never raises."""
        self._settle_probe("probe_held", sha256, invocation,
                           "could not tell the circuit breaker which run holds its probe")

    def run_unused(self, sha256: str, invocation: Invocation) -> None:
        """A run holding its breaker's half-open probe was refused or cancelled before it
        started: the probe is freed for another request, not counted as failed. Never
        raises."""
        self._settle_probe("probe_unused", sha256, invocation,
                           "could not free the circuit breaker's unused probe")

    def _settle_probe(self, what: str, sha256: str, invocation: Invocation,
                      failure: str) -> None:
        if not self._use_breaker or self._breaker is None:
            return
        try:
            getattr(self._breaker, what)(breaker_key(sha256, invocation), invocation.tenant,
                                         holder=invocation.invocation_id)
        except Exception:  # noqa: BLE001 - telemetry never breaks a run
            logger().warning(failure, exc_info=True)

    def samples(self, trace_id: int) -> bool:
        """Whether a trace that starts here with `trace_id` is sampled: the profile's
        trace-id ratio, the same rule the sinks apply (OTel's `TraceIdRatioBased`)."""
        return self._recording and is_sampled(trace_id, self._bound)

    def record_server_span(self, span: ServerSpanLike) -> None:
        """Record the gateway's HTTP server span with the ids the gateway chose, so that
        invocation spans naming it as their parent are its children. Never raises."""
        if not self._recording:
            return
        context = span.context
        attrs: Attributes = {"http.request.method": span.method,
                             "url.path": span.target[:MAX_URL_PATH],
                             "http.response.status_code": span.status}
        if span.route:
            attrs["http.route"] = span.route
        if span.function:
            attrs["faas.name"] = span.function
        try:
            self.sink.span(SpanData(
                f"{span.method} {span.route}" if span.route else span.method,
                context.trace_id, context.span_id, context.parent_id, context.sampled,
                span.start_ns, span.end_ns, attrs,
                f"HTTP {span.status}" if span.status >= 500 else None,
                (context.linked,) if context.linked else ()))
        except Exception:  # noqa: BLE001 - telemetry never breaks a request
            logger().warning("could not record a server span", exc_info=True)

    def _live_warning(self, info: RunInfo, attrs: dict[str, object]) -> None:
        self._log_warning(info, attrs, 0, 0)

    def _log_warning(self, info: RunInfo, attrs: dict[str, object], trace_id: int,
                     span_id: int) -> None:
        stamp = attrs.get("time_unix_nano")
        data: Attributes = {k: v for k, v in attrs.items()
                            if k != "time_unix_nano" and isinstance(v, str | int | float | bool)}
        data["stockade.module.sha256"] = info.sha256
        kind = data.get("stockade.warning.kind")
        ratio = float(data.get("stockade.warning.ratio", 0.0))
        self.sink.log(LogEvent(
            MONITOR_WARNING, f"{info.module}: {kind} at {ratio:.0%} of its limit", "WARN",
            stamp if isinstance(stamp, int) else time.time_ns(), data, trace_id, span_id,
        ))

    def _transition(self, change: Transition) -> None:
        from .breaker import iso_time

        if not self._use_audit:
            return
        refused = f"; {change.denied} runs refused meanwhile" if change.denied else ""
        self._append_audit(
            "breaker_transition",
            f"circuit breaker {change.old} -> {change.new}: {change.reason}{refused}",
            breaker=change.key, tenant=change.tenant, old=change.old, new=change.new,
            violations=change.violations, denied=change.denied or None,
            until=iso_time(change.until) if change.until is not None else None,
        )

    def _append_audit(self, kind: str, message: str, **fields: Any) -> None:
        """Append to the audit log; a failure (a full disk, an unusable key) is said on
        stderr and lets the run's record go on (the breaker still counts the run)."""
        audit = None
        try:
            audit = self.audit
            audit.append(kind, message, **fields)
        except (OSError, StockadeError) as exc:
            records_lost(f"the audit log {audit.path}" if audit else "the audit log", exc)

    def _audit_record(self, record: dict[str, Any]) -> None:
        attrs: dict[str, str | int | float | bool] = {
            f"stockade.audit.{key}": value for key, value in record.items()
            if isinstance(value, str | int | float | bool) and key not in ("trace_id", "span_id")
        }
        severity = "ERROR" if record.get("new") == "open" or record["kind"] == "tamper" \
            else "WARN"
        if record["kind"] in ("breaker_reset",) or record.get("new") == "closed":
            severity = "INFO"
        self.sink.log(LogEvent(
            f"stockade.audit.{record['kind']}", str(record["message"]), severity,
            time.time_ns(), attrs,
            int(record.get("trace_id", "0"), 16), int(record.get("span_id", "0"), 16),
        ))

    def flush(self) -> None:
        """Write out buffered telemetry."""
        self.sink.flush()

    def write_in_background(self) -> None:
        """A server's: the file sink writes from a thread of its own, on its interval
        whether or not records come (`FileSink.write_in_background`); the SDK's
        exporters have their own threads already."""
        sink = self.sink
        if isinstance(sink, FileSink):
            sink.write_in_background()

    def close(self) -> None:
        """Stop the monitor, flush and close the sink and the breaker database."""
        if self._closed:
            return
        self._closed = True
        if self.monitor is not None:
            self.monitor.close()
        try:
            self.sink.close()
        except Exception:  # noqa: BLE001
            logger().warning("could not close telemetry", exc_info=True)
        if self._breaker is not None:
            self._breaker.close()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_telemetry(
    profile: str | None = None,
    service_name: str = "stockade",
    *,
    endpoint: str | None = None,
    env: Mapping[str, str] | None = None,
    monitor: bool = True,
    breaker: bool = True,
    audit: bool = True,
    breaker_config: BreakerConfig | None = None,
    fallback: str | None = None,
    breaker_store: BreakerStoreFactory | None = None,
    breaker_traps: bool | None = None,
) -> Telemetry:
    """Telemetry for `profile` (`edge`, `cloud`, `on-prem`, `hybrid`, `off`, or None).
    With an OTLP endpoint (argument or `OTEL_EXPORTER_OTLP_*ENDPOINT`) the SDK exports
    over gRPC or HTTP; otherwise records go to the local OTLP-JSON file. Raises
    UsageError for a bad profile or `OTEL_*` value; exporter failures fall back to the
    file with a warning. `fallback` is the profile when neither `profile` nor
    `STOCKADE_TELEMETRY` names one (None: the SDK defaults). `breaker` and `audit` are
    independent of export: profile `off` keeps them (it drops the sink and monitor);
    `breaker_config` defaults to `BreakerConfig.from_env(env)`, whose `count_traps`
    `breaker_traps` overrides when not None; `breaker_store(config, on_transition)` opens
    the breakers' store (None from it: the local SQLite one). The `STOCKADE_BREAKER_*` and
    `STOCKADE_AUDIT_*` variables are read from `env` (default `os.environ`) once, here,
    and refused only for the features turned on: a malformed one of a feature that is
    off is a warning on the `stockade.telemetry` logger."""
    settings = resolve_settings(profile, endpoint=endpoint, service_name=service_name, env=env,
                                fallback=fallback)
    # Checked now, as OTEL_* are: read at a run's first violation, a malformed one cost
    # its breaker count and audit record without a word. And what is checked is what is
    # used: the audit log read os.environ whatever `env` said.
    if breaker:
        if breaker_config is None:
            breaker_config = BreakerConfig.from_env(env)
        if breaker_traps is not None:
            breaker_config = breaker_config._replace(count_traps=breaker_traps)
    audit_settings = AuditSettings.from_env(env) if audit else None
    for line in unused_settings(env, breaker=breaker, audit=audit):
        logger().warning("%s", line)
    sink: Sink
    if not settings.enabled:
        sink = NullSink()
    elif settings.exports:
        try:
            from .sdksink import SdkSink

            sink = SdkSink(settings)
        except Exception:  # noqa: BLE001 - fall back rather than fail the run
            logger().warning("OTLP export unavailable; writing %s", settings.file, exc_info=True)
            sink = FileSink(settings)
    else:
        sink = FileSink(settings)
    return Telemetry(settings, sink, monitor=monitor and settings.enabled, breaker=breaker,
                     audit=audit, breaker_config=breaker_config,
                     breaker_store=breaker_store, audit_settings=audit_settings)
