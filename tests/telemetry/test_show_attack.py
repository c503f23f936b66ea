"""`stockade telemetry show` against a file it did not write: any line of another shape
is counted and skipped (never a traceback), lines are read within a bounded size, and
a path that is not a readable regular file is one line of error, never a hang."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stockade.result import Outcome
from stockade.telemetry import open_telemetry, read_summary, reader
from stockade.telemetry.reader import rows_of
from stockade.telemetry.record import MONITOR_WARNING
from tests.conftest import STOCKADE, stockade, stockade_measured

from .runs import make_run

Json = Any
Mutation = Callable[[Json], None]


def record_runs() -> Path:
    """A real file: three invocations (one timed out, one with a monitor warning) and
    their metrics, as the file sink writes them."""
    with open_telemetry() as telemetry:
        for outcome, warn in ((Outcome.EXITED, False), (Outcome.TIMEOUT, False),
                              (Outcome.EXITED, True)):
            info, result = make_run(outcome)
            if warn:
                info.events.append((MONITOR_WARNING, {
                    "stockade.warning.kind": "time", "stockade.warning.value": 0.9,
                    "stockade.warning.limit": 1.0, "stockade.warning.ratio": 0.9}))
            telemetry.observer.run_started(info)
            telemetry.observer.run_finished(info, result)
    return telemetry.settings.file


def good_lines(path: Path) -> tuple[Json, Json]:
    """The spans request and the metrics request of the file, parsed."""
    requests = [json.loads(line) for line in path.read_bytes().splitlines()]
    spans = next(r for r in requests if "resourceSpans" in r)
    metrics = next(r for r in requests if "resourceMetrics" in r)
    return spans, metrics


def _span(request: Json, index: int = 0) -> Json:
    return request["resourceSpans"][0]["scopeSpans"][0]["spans"][index]


def _metric(request: Json, name: str = "faas.invocations") -> Json:
    metrics = request["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    return next(m for m in metrics if m["name"] == name)


def _attribute(span: Json, key: str) -> Json:
    return next(a for a in span["attributes"] if a["key"] == key)


def _warned_span(request: Json) -> Json:
    return next(s for s in request["resourceSpans"][0]["scopeSpans"][0]["spans"]
                if s.get("events"))


def _set(where: Callable[[Json], Json], key: str, value: Json) -> Mutation:
    def mutate(request: Json) -> None:
        where(request)[key] = value
    return mutate


def _drop(where: Callable[[Json], Json], key: str) -> Mutation:
    def mutate(request: Json) -> None:
        del where(request)[key]
    return mutate


def _point(request: Json) -> Json:
    return _metric(request)["sum"]["dataPoints"][0]


def _name_value(request: Json) -> Json:
    return _attribute(_span(request), "faas.name")


def _outcome_value(request: Json) -> Json:
    return _attribute(_span(request), "stockade.outcome")


def _warning_value(request: Json) -> Json:
    event = _warned_span(request)["events"][0]
    return next(a for a in event["attributes"] if a["key"] == "stockade.warning.value")


DEEP = 100_000
# Mutations of the writer's spans request: each leaves a line the writer never writes.
SPAN_ATTACKS: dict[str, Mutation] = {
    "resourceSpans a string": _set(lambda r: r, "resourceSpans", "x"),
    "resourceSpans null": _set(lambda r: r, "resourceSpans", None),
    "resourceSpans of strings": _set(lambda r: r, "resourceSpans", ["x"]),
    "scopeSpans a number": _set(lambda r: r["resourceSpans"][0], "scopeSpans", 5),
    "spans of nulls": _set(lambda r: r["resourceSpans"][0]["scopeSpans"][0], "spans",
                           [None]),
    "start missing": _drop(_span, "startTimeUnixNano"),
    "start not a number": _set(_span, "startTimeUnixNano", "abc"),
    "start of 5000 digits": _set(_span, "startTimeUnixNano", "9" * 5000),
    "start 1e400": _set(_span, "startTimeUnixNano", 1e400),
    "start negative": _set(_span, "startTimeUnixNano", -5),
    "start a bool": _set(_span, "startTimeUnixNano", True),
    "end a list": _set(_span, "endTimeUnixNano", [1]),
    "end before start": _set(_span, "endTimeUnixNano", "1"),
    "attributes a dict": _set(_span, "attributes", {}),
    "attributes of strings": _set(_span, "attributes", ["x"]),
    "attribute without key": _drop(_name_value, "key"),
    "attribute key a number": _set(_name_value, "key", 5),
    "attribute value a string": _set(_name_value, "value", "str"),
    "attribute value null": _set(_name_value, "value", None),
    "intValue not a number": _set(
        lambda r: _attribute(_span(r), "faas.max_memory"), "value", {"intValue": "abc"}),
    "intValue of 5000 digits": _set(
        lambda r: _attribute(_span(r), "faas.max_memory"), "value", {"intValue": "9" * 5000}),
    "intValue 1e400": _set(
        lambda r: _attribute(_span(r), "faas.max_memory"), "value", {"intValue": 1e400}),
    "doubleValue a word": _set(
        lambda r: _attribute(_span(r), "stockade.cpu.time_ms"), "value",
        {"doubleValue": "abc"}),
    "name an intValue": _set(_name_value, "value", {"intValue": "5"}),
    "outcome a deep array": _set(_outcome_value, "value", {"arrayValue": json.loads(
        "[" * 900 + "]" * 900)}),
    "events a string": _set(_warned_span, "events", "x"),
    "events of numbers": _set(_warned_span, "events", [1]),
    "warning attributes a string": _set(lambda r: _warned_span(r)["events"][0],
                                        "attributes", "x"),
    "warning value a word": _set(_warning_value, "value", {"stringValue": "abc"}),
    "warning value huge": _set(_warning_value, "value", {"doubleValue": 1e400}),
}
# Mutations of the writer's metrics request.
METRIC_ATTACKS: dict[str, Mutation] = {
    "metrics of strings": _set(lambda r: r["resourceMetrics"][0]["scopeMetrics"][0],
                               "metrics", ["x"]),
    "metric without name": _drop(_metric, "name"),
    "metric name a number": _set(_metric, "name", 5),
    "sum a list": _set(_metric, "sum", [1]),
    "dataPoints a string": _set(lambda r: _metric(r)["sum"], "dataPoints", "x"),
    "point a string": _set(lambda r: _metric(r)["sum"], "dataPoints", ["x"]),
    "asInt a word": _set(_point, "asInt", "abc"),
    "asInt 1e400": _set(_point, "asInt", 1e400),
    "asInt of 5000 digits": _set(_point, "asInt", "9" * 5000),
    "asInt negative": _set(_point, "asInt", "-3"),
    "asInt a bool": _set(_point, "asInt", True),
    "point attributes a dict": _set(_point, "attributes", {"a": 1}),
    "outcome attribute a list": _set(lambda r: _point(r)["attributes"][0], "value",
                                     {"stringValue": ["exited"]}),
}
RAW_ATTACKS: dict[str, bytes] = {
    "a list": b"[]",
    "a string": b'"str"',
    "a number": b"1",
    "null": b"null",
    "not JSON": b"not json",
    "empty": b"",
    "NaN": b'{"resourceSpans": NaN}',
    "invalid UTF-8": b'{"resourceSpans": "\xff\xfe"}',
    "deep lists": b"[" * DEEP,
    "deep objects": b'{"a":' * DEEP,
    "deep under resourceSpans": b'{"resourceSpans":' + b"[" * DEEP,
    "int of 5000 digits": b'{"resourceSpans": ' + b"9" * 5000 + b"}",
}


def attack_lines(path: Path) -> dict[str, bytes]:
    spans, metrics = good_lines(path)
    lines = dict(RAW_ATTACKS)
    for attacks, request in ((SPAN_ATTACKS, spans), (METRIC_ATTACKS, metrics)):
        for name, mutate in attacks.items():
            changed = copy.deepcopy(request)
            mutate(changed)
            lines[name] = json.dumps(changed).encode()
    return lines


def show_json(*args: str) -> dict[str, Any]:
    done = stockade("telemetry", "show", "--json", *args)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"Traceback" not in done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _counts(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in ("file", "lines", "skipped_lines")}


def test_every_odd_line_is_skipped_and_the_rest_summarised(tmp_path: Path) -> None:
    path = record_runs()
    before = show_json("--file", str(path))
    assert before["invocations"] == 3 and before["skipped_lines"] == 0
    assert before["warnings"] == 1 and len(before["warned"]) == 1
    good = path.read_bytes().splitlines()
    attacks = attack_lines(path)
    # The odd lines before, between and after the good ones.
    path.write_bytes(b"\n".join([*attacks.values(), *good, *attacks.values()]) + b"\n")
    after = show_json("--file", str(path))
    assert after["skipped_lines"] == 2 * len(attacks)
    assert after["lines"] == len(good) + 2 * len(attacks)
    assert _counts(after) == _counts(before)
    filtered = show_json("--file", str(path), "--outcome", "timeout")
    assert filtered["invocations"] == 1 and filtered["skipped_lines"] == 2 * len(attacks)
    text = stockade("telemetry", "show", "--file", str(path))
    assert text.returncode == 0, text.stderr.decode()[-2000:]
    # The summary line wraps at the terminal's width wherever its path puts the words.
    assert f"{2 * len(attacks)} lines skipped" in " ".join(text.stdout.decode().split())


ALL_ATTACKS = [*RAW_ATTACKS, *SPAN_ATTACKS, *METRIC_ATTACKS]


@pytest.mark.parametrize("attack", ALL_ATTACKS)
def test_one_odd_line_is_skipped_whole(attack: str, tmp_path: Path) -> None:
    path = record_runs()
    baseline = read_summary(path)
    line = attack_lines(path)[attack]
    assert list(rows_of(line)) == []  # --follow reads lines one by one
    good = path.read_bytes()
    path.write_bytes(line + b"\n" + good)
    summary = read_summary(path)
    assert (summary.bad_lines, summary.lines) == (1, baseline.lines + 1)
    # Nothing of the odd line is counted: not even the parts of it that look right.
    assert (summary.invocations, summary.spans, summary.outcomes, summary.warnings,
            summary.violations) == (baseline.invocations, baseline.spans, baseline.outcomes,
                                    baseline.warnings, baseline.violations)


def test_an_over_long_line_is_skipped_unread(tmp_path: Path) -> None:
    path = record_runs()
    good = path.read_bytes()
    padding = b'{"resourceLogs": [], "pad": "' + b"x" * reader.MAX_LINE_BYTES + b'"}'
    path.write_bytes(padding + b"\n" + good + padding)  # the last one without its newline
    summary = read_summary(path)
    assert summary.bad_lines == 2 and summary.invocations == 3


def test_a_gigabyte_line_is_read_in_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as file:
        file.truncate(1024**3)  # sparse: one line of a gigabyte of NUL bytes
        file.seek(0, os.SEEK_END)
        file.write(b"\n" + record_runs().read_bytes())
    started = time.monotonic()
    returncode, out, err, peak = stockade_measured("telemetry", "show", "--json", "--file",
                                                   str(path))
    assert returncode == 0, err.decode()[-2000:]
    data = json.loads(out)
    assert data["skipped_lines"] == 1 and data["invocations"] == 3
    assert peak < 256 * 1024**2, peak  # well under the line's size
    assert time.monotonic() - started < 60


def test_recorded_text_with_escapes_and_lone_surrogates_is_shown(tmp_path: Path) -> None:
    path = record_runs()
    spans, _ = good_lines(path)
    _name_value(spans)["value"] = {"stringValue": "\ud800\x1b[2J[bold]x"}
    path.write_bytes(path.read_bytes() + json.dumps(spans).encode() + b"\n")
    done = stockade("telemetry", "show", "--file", str(path))
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "\\ud800\\x1b[2J[bold]x" in done.stdout.decode()


def test_follow_skips_odd_lines_and_goes_on(tmp_path: Path) -> None:
    path = record_runs()
    spans, _ = good_lines(path)
    follower = subprocess.Popen([*STOCKADE, "telemetry", "show", "--follow", "--json",
                                 "--file", str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    try:
        assert follower.stdout is not None
        assert json.loads(follower.stdout.readline())["invocations"] == 3
        with open(path, "ab") as file:
            for line in attack_lines(path).values():
                file.write(line + b"\n")
            file.write(b"x" * (reader.MAX_LINE_BYTES + 10) + b"\n")
            _name_value(spans)["value"] = {"stringValue": "after.wasm"}
            file.write(json.dumps(spans).encode() + b"\n")
        rows = [json.loads(follower.stdout.readline()) for _ in range(3)]
        assert {row["name"] for row in rows} >= {"after.wasm"}
        assert follower.poll() is None
    finally:
        follower.terminate()
        _, err = follower.communicate(10)
    assert b"Traceback" not in err


def _one_line_error(done: subprocess.CompletedProcess[bytes], why: str) -> None:
    assert done.returncode == 125, done
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert why in done.stderr.decode() and b"Traceback" not in done.stderr


@pytest.mark.parametrize("follow", [(), ("--follow",)])
def test_a_fifo_is_refused_without_hanging(tmp_path: Path, follow: tuple[str, ...]) -> None:
    fifo = tmp_path / "telemetry.jsonl"
    os.mkfifo(fifo)
    done = stockade("telemetry", "show", *follow, "--file", str(fifo), timeout=20)
    _one_line_error(done, "not a regular file")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    _one_line_error(stockade("telemetry", "show", "--file", str(tmp_path)), "directory")
    (tmp_path / "state" / "telemetry.jsonl").mkdir(parents=True)  # the default path
    _one_line_error(stockade("telemetry", "show"), "directory")


def test_a_device_is_refused() -> None:
    _one_line_error(stockade("telemetry", "show", "--file", "/dev/zero", timeout=20),
                    "not a regular file")


def test_a_file_that_fails_to_read_is_one_line() -> None:
    # Opens (a regular file to stat), then every read fails: EIO, for root too.
    _one_line_error(stockade("telemetry", "show", "--file", "/proc/self/mem"),
                    "cannot read")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_one_line(tmp_path: Path) -> None:
    path = record_runs()
    path.chmod(0)
    _one_line_error(stockade("telemetry", "show", "--file", str(path)), "ermission denied")


def test_a_missing_file_is_not_an_error(tmp_path: Path) -> None:
    done = stockade("telemetry", "show", "--file", str(tmp_path / "none"))
    assert done.returncode == 0 and b"no telemetry at" in done.stdout


@pytest.mark.parametrize("last", ["99999999999999999999999", "100001"])
def test_a_huge_last_is_refused(last: str) -> None:
    """`-n` had no ceiling: the deque it sized raised OverflowError, a traceback (found
    by review); each row it keeps is memory."""
    path = record_runs()
    done = stockade("telemetry", "show", "-n", last)
    # click's usage error, as for any option's value out of its range
    assert done.returncode == 125 and b"Traceback" not in done.stderr, done.stderr
    assert b"'--last': " in done.stderr and b"1<=x<=10000" in done.stderr, done.stderr
    done = stockade("telemetry", "show", "--json", "-n", last)
    assert done.returncode == 125 and b"Traceback" not in done.stderr, done.stderr
    assert json.loads(done.stdout)["exit_code"] == 125
    with pytest.raises(ValueError):
        read_summary(path, recent=int(last))
    assert show_json("-n", "10000")["invocations"] == 3


def test_a_missing_file_under_json_is_a_json_object(tmp_path: Path) -> None:
    """It printed the human sentence on stdout (found by review)."""
    for args in (("--file", str(tmp_path / "none")), ()):
        data = show_json(*args)
        assert data["invocations"] == 0 and data["lines"] == 0 and data["recent"] == []
        assert data["file"] == str(tmp_path / ("none" if args else "state/telemetry.jsonl"))


def test_a_long_since_is_quoted_short() -> None:
    """A 5,000-digit --since was echoed whole (found by review)."""
    for value in ("9" * 5000, "x" * 5000):
        done = stockade("telemetry", "show", "--since", value)
        _one_line_error(done, "--since")
        assert len(done.stderr) < 200, done.stderr
