"""Export profiles as in design.md, `hybrid`'s choice, and `OTEL_*` overrides."""

from __future__ import annotations

import pytest

from stockade.errors import UsageError
from stockade.telemetry import PROFILES, Environment, choose_profile, resolve_settings

GiB = 1024**3


def env_of(kind: str, cpus: int = 8, memory: int = 16 * GiB, cloud: str | None = None,
           runtime: str | None = None) -> Environment:
    return Environment(kind, None, runtime, None, cloud, cpus, memory, ())


def test_profiles_match_the_design_table() -> None:
    table = {(p.name, p.batch_size, p.interval, p.protocol, p.compression, p.sampling_ratio)
             for p in PROFILES.values()}
    assert table == {
        ("edge", 32, 5.0, "http/protobuf", "gzip", 0.1),
        ("cloud", 512, 30.0, "grpc", "none", 1.0),
        ("on-prem", 256, 15.0, "grpc", "none", 1.0),
    }


@pytest.mark.parametrize(("environment", "expected", "why"), [
    (env_of("wasm"), "edge", "WebAssembly"),
    (env_of("container", cpus=2), "edge", "constrained"),
    (env_of("vm", memory=1 * GiB), "edge", "constrained"),
    (env_of("vm", cloud="aws"), "cloud", "aws"),
    (env_of("container", runtime="kubernetes"), "cloud", "kubernetes"),
    (env_of("bare-metal"), "on-prem", "no cloud"),
])
def test_hybrid_chooses_by_environment(environment: Environment, expected: str,
                                       why: str) -> None:
    profile, reason = choose_profile("hybrid", environment)
    assert profile.name == expected and why in reason


def test_unknown_profile_names_the_choices() -> None:
    with pytest.raises(UsageError, match="edge, cloud, on-prem, hybrid, off"):
        resolve_settings("fog", env={})


def test_no_endpoint_means_the_local_file() -> None:
    settings = resolve_settings("cloud", env={})
    assert not settings.exports and settings.file.name == "telemetry.jsonl"
    assert (settings.protocol, settings.batch_size, settings.sampling_ratio) == ("grpc", 512, 1.0)


def test_endpoint_paths_per_protocol() -> None:
    http = resolve_settings("edge", endpoint="http://collector:4318/", env={})
    assert http.endpoints["traces"] == "http://collector:4318/v1/traces"
    grpc = resolve_settings("cloud", env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"})
    assert grpc.endpoints == dict.fromkeys(("traces", "metrics", "logs"), "http://c:4317")
    assert grpc.sources["endpoint"] == "OTEL_EXPORTER_OTLP_ENDPOINT"
    only_traces = resolve_settings(env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/v1/x"})
    assert only_traces.endpoints == {"traces": "http://t/v1/x"}


def test_otel_variables_override_the_profile() -> None:
    settings = resolve_settings("edge", env={
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc,x-tenant=t1",
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_SERVICE_NAME": "functions",
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,deployment.environment=prod",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    })
    assert (settings.protocol, settings.compression) == ("grpc", "none")
    assert settings.headers == (("authorization", "Bearer abc"), ("x-tenant", "t1"))
    assert (settings.sampling_ratio, settings.parent_based) == (0.25, False)
    assert settings.service_name == "functions"
    assert settings.resource_attributes == {"deployment.environment": "prod"}
    assert (settings.batch_size, settings.interval) == (16, 1.0)


@pytest.mark.parametrize(("key", "value"), [
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
    ("OTEL_TRACES_SAMPLER", "sometimes"),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-3"),
    # Accepted before: each run said the SDK's words, cut mid-sentence, and advice to wait.
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[::1"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:99999"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:0"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "localhost"),
    # The SDK re-read these, printed its own complaint per exporter and sent them anyway.
    ("OTEL_EXPORTER_OTLP_HEADERS", "a b=c"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "a=b%0d%0aX-Injected: 1"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "a%0a=b"),
    ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "bad name=1"),  # read by the SDK itself
])
def test_bad_values_name_the_variable(key: str, value: str) -> None:
    with pytest.raises(UsageError, match=key):
        resolve_settings(env={key: value})


@pytest.mark.parametrize(("protocol", "endpoint"), [
    ("http/protobuf", "http://collector:4318"), ("http/protobuf", "https://[::1]/otlp"),
    ("grpc", "collector:4317"), ("grpc", "https://collector"),
    ("grpc", "unix:///run/otel.sock"), ("grpc", "dns:///collector:4317"),
])
def test_endpoints_an_exporter_takes_are_kept(protocol: str, endpoint: str) -> None:
    settings = resolve_settings(env={"OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                                     "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                                     "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=a%20b"})
    assert settings.endpoints and settings.headers == (("x-api-key", "a b"),)


def test_off_and_the_profile_variable() -> None:
    assert not resolve_settings("off", env={}).enabled
    assert not resolve_settings(env={"OTEL_SDK_DISABLED": "true"}).enabled
    chosen = resolve_settings(env={"STOCKADE_TELEMETRY": "on-prem"})
    assert chosen.profile.name == "on-prem" and chosen.sources["profile"] == "STOCKADE_TELEMETRY"


def test_a_fallback_profile_applies_only_when_none_is_named() -> None:
    # The gateway's fallback is `hybrid`; `stockade run` has none (the SDK defaults).
    assert resolve_settings(None, env={}, fallback="edge").profile.name == "edge"
    named = resolve_settings(None, env={"STOCKADE_TELEMETRY": "cloud"}, fallback="edge")
    assert named.profile.name == "cloud"
    assert resolve_settings("on-prem", env={}, fallback="edge").profile.name == "on-prem"
    assert resolve_settings(None, env={}).profile.name == "default"
