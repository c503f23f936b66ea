"""`stockade run` records telemetry, consults the circuit breaker and writes the audit log."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import guest, stockade


def state() -> Path:
    return Path(os.environ["STOCKADE_STATE_DIR"])


def test_run_writes_local_otlp_json_and_show_reads_it() -> None:
    assert stockade("run", str(guest("hello.wasm"))).returncode == 0
    lines = (state() / "telemetry.jsonl").read_text().splitlines()
    spans = [json.loads(line) for line in lines if '"resourceSpans"' in line]
    assert spans, lines
    span = spans[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    keys = {a["key"] for a in span["attributes"]}
    assert {"faas.invocation_id", "faas.coldstart", "faas.name", "faas.max_memory"} <= keys
    shown = stockade("telemetry", "show")
    assert shown.returncode == 0 and b"hello.wasm" in shown.stdout


def test_without_breaker_one_bad_run_does_not_lock_out_later_runs() -> None:
    args = ("run", "--json", "--fuel", "1000", str(guest("spin.wasm")))
    for _ in range(4):
        assert json.loads(stockade(*args).stdout)["outcome"] == "fuel_exhausted"
    assert not (state() / "breaker.db").exists()
    kinds = [json.loads(line)["kind"] for line in (state() / "audit.jsonl").read_text()
             .splitlines()]
    assert kinds == ["violation"] * 4  # still audited


def test_breaker_opens_after_three_violations() -> None:
    args = ("run", "--breaker", "--json", "--fuel", "1000", str(guest("spin.wasm")))
    for _ in range(3):
        assert json.loads(stockade(*args).stdout)["outcome"] == "fuel_exhausted"
    refused = stockade(*args)
    assert refused.returncode == 126
    result = json.loads(refused.stdout)
    assert result["outcome"] == "denied" and "until" in result["message"]
    listed = stockade("breaker", "list").stdout.decode()
    assert "open" in listed
    assert stockade("breaker", "reset", "--all").returncode == 0
    assert json.loads(stockade(*args).stdout)["outcome"] == "fuel_exhausted"
    assert stockade("audit", "verify").returncode == 0


def test_tampered_audit_log_is_named() -> None:
    for _ in range(2):
        stockade("run", "--fuel", "1000", str(guest("spin.wasm")))
    log = state() / "audit.jsonl"
    lines = log.read_text().splitlines()
    record = json.loads(lines[0])
    record["kind"] = "nothing-to-see"
    lines[0] = json.dumps(record)
    log.write_text("\n".join(lines) + "\n")
    proc = stockade("audit", "verify")
    assert proc.returncode == 1
    assert b"line 1" in proc.stdout + proc.stderr
