"""Resolve telemetry settings: explicit argument > standard `OTEL_*` variable > profile.

`resolve_settings` turns a profile name plus the environment into one frozen
`ExportSettings`. With no endpoint anywhere, `endpoint` stays None and telemetry goes
to the local OTLP-JSON file (the embedded default). Every error names the key and
where it came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

from ..errors import UsageError
from ..paths import state_dir
from ..policy.units import shown
from ..records import FieldTuple
from .profiles import COMPRESSIONS, PROTOCOLS, Compression, ExportProfile, Protocol, choose_profile

__all__ = ["ExportSettings", "resolve_settings", "SIGNALS", "EXPORT_TIMEOUT", "shown_endpoint"]

# Seconds an export may take, retries included. The SDK's default (10 s, retried with
# backoff per signal) held a one-millisecond `stockade run` for 14 s when the collector
# was down: a run waits at most this long for a collector that does not answer.
EXPORT_TIMEOUT = 1.0
# Ceilings of the numbers the environment sets: spans and logs a batch (a sink holds a
# few batches), the interval and the export timeout in milliseconds (a day, an hour).
MAX_BATCH = 65_536
MAX_INTERVAL_MS = 86_400_000.0
MAX_TIMEOUT_MS = 3_600_000.0

SIGNALS = ("traces", "metrics", "logs")
_RATIO_SAMPLERS = {"traceidratio": False, "parentbased_traceidratio": True}
_FIXED_SAMPLERS = {
    "always_on": (1.0, False), "always_off": (0.0, False),
    "parentbased_always_on": (1.0, True), "parentbased_always_off": (0.0, True),
}


class ExportSettings(FieldTuple):
    """Everything the exporters need, after overrides. `endpoints` maps each signal to its
    URL (empty: the local file sink); `sources` says where each setting came from;
    `timeout` is how long, in seconds, one export may take, retries included, and so the
    longest a closing run waits for a collector (`EXPORT_TIMEOUT` unless
    `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds as the OTLP specification says)."""

    profile: ExportProfile
    reason: str
    enabled: bool
    endpoints: dict[str, str]
    protocol: Protocol
    compression: Compression
    headers: tuple[tuple[str, str], ...]
    sampling_ratio: float
    parent_based: bool
    batch_size: int
    interval: float
    service_name: str
    resource_attributes: dict[str, str]
    file: Path
    sources: dict[str, str]
    timeout: float = 1.0

    @property
    def exports(self) -> bool:
        """True when an OTLP endpoint is configured (the SDK is used); False for the file."""
        return bool(self.endpoints)


def _get(env: Mapping[str, str], key: str) -> str | None:
    value = env.get(key)
    return value.strip() if value and value.strip() else None


def _number(env: Mapping[str, str], key: str, cast: type[float] | type[int],
            ceiling: float) -> float | None:
    """A positive number from the environment, at most `ceiling` (`inf` and `nan` are
    floats too: an infinite interval killed a writer thread, a `nan` one spun it)."""
    raw = _get(env, key)
    if raw is None:
        return None
    try:
        value = cast(raw)
    except ValueError:
        raise UsageError(f"{key}={raw!r} (from the environment) is not a number") from None
    if not 0 < value <= ceiling:  # false for nan
        raise UsageError(f"{key}={shown(raw)} (from the environment) must be positive and "
                         f"at most {ceiling:g}")
    return float(value)


def _headers(raw: str, variable: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{variable} has {item!r} (from the environment): use key=value")
        name, text = unquote(key.strip()).lower(), unquote(value.strip())
        # Refused here, once: the SDK re-read the variable and printed its own complaint
        # per exporter, then sent the name anyway, or failed every export on a CR/LF.
        if not re.fullmatch(_TOKEN, name) or re.search(_HEADER_CONTROL, text):
            raise UsageError(
                f"{variable} has {item!r} (from the environment): a header name is letters, "
                "digits and !#$%&'*+-.^_`|~, and a value has no control characters")
        pairs.append((name, text))
    return tuple(pairs)


# Compiled on first use (`re` keeps them): only a run given OTLP headers reads them.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9a-z]+"  # RFC 9110 5.6.2, lower-cased
_HEADER_CONTROL = r"[\x00-\x08\x0a-\x1f\x7f]"


def _resource(raw: str | None) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for item in (raw or "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attrs[unquote(key.strip())] = unquote(value.strip())
    return attrs


def _endpoints(
    explicit: str | None, env: Mapping[str, str], protocol: Protocol, sources: dict[str, str]
) -> dict[str, str]:
    base = explicit or _get(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if base:
        sources["endpoint"] = "argument" if explicit else "OTEL_EXPORTER_OTLP_ENDPOINT"
    if base:
        _check_endpoint(base, protocol, sources["endpoint"])
    result: dict[str, str] = {}
    for signal in SIGNALS:
        own = _get(env, f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        if own and not explicit:
            _check_endpoint(own, protocol, f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
            result[signal] = own
        elif base:
            # OTLP/HTTP appends the signal path to a base endpoint; gRPC uses it as is.
            result[signal] = base if protocol == "grpc" else f"{base.rstrip('/')}/v1/{signal}"
    return result


_GRPC_NAMED = ("unix", "unix-abstract", "dns")


def _check_endpoint(url: str, protocol: Protocol, source: str) -> None:
    """Refuse an endpoint no export could reach (exit 125 at start), as the other OTEL_*
    values are: each run said the SDK's words instead, cut mid-sentence, with advice to
    wait longer. OTLP/HTTP needs an http(s) URL; gRPC also takes `host:port`."""
    from urllib.parse import urlsplit

    if protocol == "grpc" and url.partition(":")[0] in _GRPC_NAMED and url.partition(":")[2]:
        return  # a gRPC target name: `unix:///path`, `dns:///host:port`
    bare = protocol == "grpc" and "://" not in url
    try:
        parts = urlsplit(f"//{url}" if bare else url)
        port = parts.port  # ValueError past 65535
        ok = (bare or parts.scheme in ("http", "https")) and bool(parts.hostname) \
            and (port is None or port > 0)
    except ValueError:
        ok = False
    if not ok:
        example = "http://collector:4317 or collector:4317" if protocol == "grpc" \
            else "http://collector:4318"
        given = f"OTLP endpoint {shown_endpoint(url)!r}" if source == "argument" else \
            f"{source}={shown_endpoint(url)!r} (from the environment)"
        raise UsageError(f"{given} is not an endpoint for {protocol}: use e.g. {example}")


def _sampler(env: Mapping[str, str], ratio: float, sources: dict[str, str]) -> tuple[float, bool]:
    name = _get(env, "OTEL_TRACES_SAMPLER")
    if name is None:
        return ratio, True
    name = name.lower()
    sources["sampler"] = "OTEL_TRACES_SAMPLER"
    if name in _FIXED_SAMPLERS:
        return _FIXED_SAMPLERS[name]
    if name not in _RATIO_SAMPLERS:
        choices = ", ".join([*_FIXED_SAMPLERS, *_RATIO_SAMPLERS])
        raise UsageError(
            f"OTEL_TRACES_SAMPLER={name!r} (from the environment) is not supported: use {choices}"
        )
    arg = _get(env, "OTEL_TRACES_SAMPLER_ARG")
    if arg is not None:
        try:
            ratio = float(arg)
        except ValueError:
            raise UsageError(
                f"OTEL_TRACES_SAMPLER_ARG={arg!r} (from the environment) is not a number"
            ) from None
        if not 0.0 <= ratio <= 1.0:
            raise UsageError(
                f"OTEL_TRACES_SAMPLER_ARG={arg!r} (from the environment) must be within 0..1"
            )
    return ratio, _RATIO_SAMPLERS[name]


def resolve_settings(
    profile: str | None = None,
    *,
    endpoint: str | None = None,
    service_name: str = "stockade",
    env: Mapping[str, str] | None = None,
    fallback: str | None = None,
) -> ExportSettings:
    """Settings for `profile` (`edge`, `cloud`, `on-prem`, `hybrid`, `off`, or None for
    the SDK defaults), overridden by `OTEL_*` variables in `env` (default `os.environ`),
    `endpoint` overriding them all. `STOCKADE_TELEMETRY` names the profile when `profile`
    is None, and `fallback` when neither does. Raises UsageError for unknown names and
    malformed values."""
    env = os.environ if env is None else env
    sources: dict[str, str] = {}
    if profile is None and _get(env, "STOCKADE_TELEMETRY"):
        profile = _get(env, "STOCKADE_TELEMETRY")
        sources["profile"] = "STOCKADE_TELEMETRY"
    profile = fallback if profile is None else profile
    disabled = profile == "off" or (_get(env, "OTEL_SDK_DISABLED") or "").lower() == "true"
    chosen, reason = choose_profile(None if profile == "off" else profile)

    protocol: Protocol = chosen.protocol
    raw_protocol = _get(env, "OTEL_EXPORTER_OTLP_PROTOCOL")
    if raw_protocol is not None:
        if raw_protocol not in PROTOCOLS:
            raise UsageError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={raw_protocol!r} (from the environment) is not "
                f"supported: use grpc or http/protobuf"
            )
        protocol = raw_protocol  # type: ignore[assignment]
        sources["protocol"] = "OTEL_EXPORTER_OTLP_PROTOCOL"
    compression: Compression = chosen.compression
    raw_compression = _get(env, "OTEL_EXPORTER_OTLP_COMPRESSION")
    if raw_compression is not None:
        if raw_compression not in COMPRESSIONS:
            raise UsageError(
                f"OTEL_EXPORTER_OTLP_COMPRESSION={raw_compression!r} (from the environment) "
                f"is not supported: use gzip or none"
            )
        compression = raw_compression  # type: ignore[assignment]
        sources["compression"] = "OTEL_EXPORTER_OTLP_COMPRESSION"
    ratio, parent_based = _sampler(env, chosen.sampling_ratio, sources)
    raw_headers = _get(env, "OTEL_EXPORTER_OTLP_HEADERS")
    for signal in SIGNALS:  # the SDK reads these itself: checked here all the same
        own_headers = f"OTEL_EXPORTER_OTLP_{signal.upper()}_HEADERS"
        if _get(env, own_headers):
            _headers(_get(env, own_headers) or "", own_headers)
    resource = _resource(_get(env, "OTEL_RESOURCE_ATTRIBUTES"))
    resource_name = resource.pop("service.name", None)  # OTEL_SERVICE_NAME wins over it
    name = _get(env, "OTEL_SERVICE_NAME") or resource_name or service_name
    batch = _number(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", int, MAX_BATCH)
    interval_ms = _number(env, "OTEL_METRIC_EXPORT_INTERVAL", float, MAX_INTERVAL_MS)
    file = _get(env, "STOCKADE_TELEMETRY_FILE")
    if file:
        sources["file"] = "STOCKADE_TELEMETRY_FILE"
    timeout_ms = _number(env, "OTEL_EXPORTER_OTLP_TIMEOUT", float, MAX_TIMEOUT_MS)
    if timeout_ms is not None:
        sources["timeout"] = "OTEL_EXPORTER_OTLP_TIMEOUT"
    return ExportSettings(
        profile=chosen,
        reason="telemetry off" if disabled else reason,
        enabled=not disabled,
        endpoints={} if disabled else _endpoints(endpoint, env, protocol, sources),
        protocol=protocol,
        compression=compression,
        headers=_headers(raw_headers, "OTEL_EXPORTER_OTLP_HEADERS") if raw_headers else (),
        sampling_ratio=ratio,
        parent_based=parent_based,
        batch_size=int(batch) if batch else chosen.batch_size,
        interval=interval_ms / 1000 if interval_ms else chosen.interval,
        service_name=name,
        resource_attributes=resource,
        file=Path(file) if file else state_dir() / "telemetry.jsonl",
        sources=sources,
        timeout=timeout_ms / 1000 if timeout_ms else EXPORT_TIMEOUT,
    )


def shown_endpoint(url: str) -> str:
    """`url` as a line may say it: without the user name and password it may carry
    (`http://user:pw@host`), nor its query and fragment (tokens travel there too)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    cut = min((at for at in map(rest.find, "?#") if at >= 0), default=len(rest))
    rest = rest[:cut]
    authority, slash, path = rest.partition("/")
    host = authority.rpartition("@")[2]
    return f"{scheme}{sep}{host}{slash}{path}"
