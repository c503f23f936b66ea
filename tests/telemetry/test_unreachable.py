"""A collector that is down or does not answer costs a run about a second and one
warning line, never the SDK's retries (14 s and 8 lines before); the export timeout
follows OTEL_EXPORTER_OTLP_TIMEOUT (milliseconds)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.errors import UsageError
from stockade.telemetry import resolve_settings
from stockade.telemetry.settings import EXPORT_TIMEOUT

from ..conftest import guest


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_collector() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def own_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("unreachable-cache")


@pytest.fixture(autouse=True)
def private_cache(own_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache of its own: stderr must hold the export's warning only, not notes about
    entries other tests left under other keys in the shared cache."""
    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(own_cache))


def run_hello(endpoint: str, **env: str) -> tuple[subprocess.CompletedProcess[bytes], float]:
    environ = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, **env}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "stockade", "run", str(guest("hello.wasm"))],
                          capture_output=True, env=environ, timeout=120)
    return done, time.monotonic() - start


def baseline() -> float:
    """How long the same run takes here with telemetry off (interpreter start included)."""
    _, elapsed = run_hello("", STOCKADE_TELEMETRY="off")
    return elapsed


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_collector_that_is_down_costs_a_second_and_one_line(protocol: str) -> None:
    done, elapsed = run_hello(f"http://127.0.0.1:{closed_port()}",
                              OTEL_EXPORTER_OTLP_PROTOCOL=protocol)
    assert (done.returncode, done.stdout) == (0, b"Hello from a Stockade sandbox!\n")
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("telemetry: could not export to http://127.0.0.1:"), lines
    # Advice to wait longer only when the export took all its time.
    assert ("wait longer" in lines[0]) == (f"within {EXPORT_TIMEOUT:.1f} s" in lines[0])
    # About a second over an ordinary run; generous for a loaded two-core machine.
    assert elapsed < baseline() + EXPORT_TIMEOUT + 3.0, elapsed


def test_the_export_timeout_is_honoured(silent_collector: int) -> None:
    endpoint = f"http://127.0.0.1:{silent_collector}"
    done, elapsed = run_hello(endpoint, OTEL_EXPORTER_OTLP_TIMEOUT="3000")
    assert done.returncode == 0
    assert "within 3.0 s" in done.stderr.decode()
    assert 2.5 < elapsed < baseline() + 3.0 + 4.0, elapsed
    done, elapsed = run_hello(endpoint)
    assert done.returncode == 0 and len(done.stderr.decode().splitlines()) == 1
    assert elapsed < baseline() + EXPORT_TIMEOUT + 3.0, elapsed


def test_timeout_setting(tmp_path: Path) -> None:
    assert resolve_settings(env={}).timeout == EXPORT_TIMEOUT
    settings = resolve_settings(env={"OTEL_EXPORTER_OTLP_TIMEOUT": "2500"})
    assert settings.timeout == 2.5 and settings.sources["timeout"] == "OTEL_EXPORTER_OTLP_TIMEOUT"
    for bad in ("soon", "0", "-5"):
        with pytest.raises(UsageError, match="OTEL_EXPORTER_OTLP_TIMEOUT"):
            resolve_settings(env={"OTEL_EXPORTER_OTLP_TIMEOUT": bad})


def test_the_line_names_the_endpoints_that_failed() -> None:
    # It named the first signal's endpoint (the traces') whichever signal failed.
    traces, metrics = closed_port(), closed_port()
    traces_url = f"http://127.0.0.1:{traces}/v1/traces"
    metrics_url = f"http://127.0.0.1:{metrics}/v1/metrics"
    done, _ = run_hello("", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=traces_url,
                        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=metrics_url,
                        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    assert done.returncode == 0
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert traces_url in lines[0] and metrics_url in lines[0], lines


def test_a_failing_signal_is_reported_under_its_own_endpoint(
        caplog: pytest.LogCaptureFixture) -> None:
    from stockade.telemetry.sdksink import _FailureReport

    report = _FailureReport(("http://c/v1/traces", "http://c/v1/metrics", "http://c/v1/logs"))
    with caplog.at_level("WARNING", logger="stockade.otlp"):
        report.failed("http://c/v1/metrics", "connection refused")
    assert len(caplog.messages) == 1
    assert caplog.messages[0].startswith(
        "telemetry: exports to http://c/v1/metrics are failing: 1 failed since start"), \
        caplog.messages
    report.failed("http://c/v1/logs", "")  # within the interval: held back
    report.failed("http://c/v1/traces", "timed out")
    caplog.clear()
    with caplog.at_level("WARNING", logger="stockade.otlp"):
        report.say_unsaid()
    assert caplog.messages[0].startswith(
        "telemetry: exports to http://c/v1/logs, http://c/v1/traces are failing: 2 failed"), \
        caplog.messages
    report.closing()
    assert report.where() == "http://c/v1/traces, http://c/v1/metrics, http://c/v1/logs"
    report.failed("http://c/v1/logs", "refused")
    assert report.where() == "http://c/v1/logs"


@pytest.mark.parametrize(("url", "shown"), [
    ("http://u:p@h:1/v1/x", "http://h:1/v1/x"),
    ("user:pw@host:4318/v1", "host:4318/v1"),  # no scheme
    ("http://host?x=a@evil", "http://host"),  # an @ past the authority
    ("http://u:p@host#f@x", "http://host"),
    ("http://[::1]:4318/a@b", "http://[::1]:4318/a@b"),  # an @ in the path is no user
    ("https://h/v1/traces?token=abc", "https://h/v1/traces"),  # tokens in the query
])
def test_an_endpoint_is_said_without_secrets(url: str, shown: str) -> None:
    from stockade.telemetry.settings import shown_endpoint

    assert shown_endpoint(url) == shown


def test_credentials_in_an_endpoint_are_not_said() -> None:
    port = closed_port()
    url = f"http://user:s3cret@127.0.0.1:{port}/v1/metrics"
    done, _ = run_hello("", OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=url,
                        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    assert done.returncode == 0
    assert f"http://127.0.0.1:{port}/v1/metrics" in done.stderr.decode()
    assert b"s3cret" not in done.stderr and b"user" not in done.stderr
