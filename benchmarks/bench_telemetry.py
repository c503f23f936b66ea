"""Telemetry overhead per invocation (pytest-benchmark):
`.venv/bin/pytest benchmarks/bench_telemetry.py --benchmark-enable`.

Modules warm from the AoT cache, run in-process under the strict profile: no observer
(baseline) vs `--telemetry off` (monitor, audit and breaker bookkeeping only) vs the
local OTLP-JSON file vs OTLP export to a real receiver on loopback (HTTP/protobuf +
gzip for the edge profile, gRPC for cloud). `hello` is the worst case (~140 µs per run);
`compute 20000` is a 1 ms run. Also the breaker check that precedes a run, and a
refusal. The goal is under 10% added time per invocation: compare medians of one run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade import Invocation, Policy, Sandbox
from stockade.telemetry import Telemetry, open_telemetry

ROOT = Path(__file__).resolve().parent.parent

GUESTS = {"hello": (ROOT / "build" / "guests" / "hello.wasm", ()),
          "compute": (ROOT / "build" / "guests" / "compute.wasm", ("20000",))}
SINKS = ["baseline", "off", "file", "otlp-http-edge", "otlp-grpc-cloud"]


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Telemetry file, breakers and audit log under tmp; no OTEL_* from the host."""
    for name in [n for n in os.environ if n.startswith(("OTEL_", "STOCKADE_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STOCKADE_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def telemetry(request: pytest.FixtureRequest) -> Iterator[Telemetry | None]:
    """The telemetry of one sink kind (None: no observer at all)."""
    kind: str = request.param
    if kind == "baseline":
        yield None
        return
    receiver = None
    endpoint = None
    if kind.startswith("otlp"):
        # The receiver of the telemetry tests, in a process of its own so that decoding
        # what arrives is not counted as the exporter's cost.
        receiver = subprocess.Popen(
            [sys.executable, "-m", "tests.telemetry.receiver", kind.split("-")[1]],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert receiver.stdout is not None
        endpoint = receiver.stdout.readline().strip()
    if kind == "otlp-http-edge":
        # Edge samples 10% of traces; keep them all so that export is fully exercised.
        os.environ["OTEL_TRACES_SAMPLER"] = "always_on"
    profile = {"off": "off", "file": None, "otlp-http-edge": "edge",
               "otlp-grpc-cloud": "cloud"}[kind]
    try:
        with open_telemetry(profile, endpoint=endpoint) as tel:
            yield tel
    finally:
        os.environ.pop("OTEL_TRACES_SAMPLER", None)
        if receiver is not None:
            receiver.communicate(timeout=60)


@pytest.mark.parametrize("telemetry", SINKS, indirect=True)
@pytest.mark.parametrize("guest", sorted(GUESTS))
def test_invocation(benchmark: Any, telemetry: Telemetry | None,
                    guest: str) -> None:
    benchmark.group = f"telemetry per invocation: {guest}"
    path, args = GUESTS[guest]
    with Sandbox(Policy.from_profile("strict"),
                 observers=(telemetry.observer,) if telemetry else ()) as sandbox:
        module = sandbox.load(path)
        sandbox.run(module, Invocation(args=args))
        rounds = 3000 if guest == "hello" else 500
        benchmark.pedantic(lambda: sandbox.run(module, Invocation(args=args)), rounds=rounds,
                           iterations=1, warmup_rounds=rounds // 10)


@pytest.mark.benchmark(group="breaker")
def test_breaker_check_closed(benchmark: Any) -> None:
    with open_telemetry() as tel:
        tel.admit("hello.wasm", "ab" * 32)
        benchmark(tel.admit, "hello.wasm", "ab" * 32)


@pytest.mark.benchmark(group="breaker")
def test_breaker_refusal_with_fresh_state(benchmark: Any) -> None:
    """What a refused `stockade run` pays after imports: open the database, check, record
    the refusal (span, metrics, audit record), close."""
    with open_telemetry() as tel:
        for _ in range(3):
            tel.breaker.record("cd" * 32, None, violated=True)

    def refuse() -> None:
        with open_telemetry() as fresh:
            if fresh.admit("bad.wasm", "cd" * 32).allowed:
                raise AssertionError("the breaker should be open")

    benchmark.pedantic(refuse, rounds=200, iterations=1, warmup_rounds=5)
