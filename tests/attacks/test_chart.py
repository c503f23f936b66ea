"""`stockade attack --chart`: the suite's chart from a live run and from saved reports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import refused, stockade

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _matplotlib() -> None:
    pytest.importorskip("matplotlib", reason="charts are the optional stockade[bench] extra")


def test_chart_of_stockade_beside_plain_wasmtime(tmp_path: Path) -> None:
    live = tmp_path / "strict.png"
    strict = stockade("attack", "--profile", "strict", "--isolate", "none", "--json",
                      "--only", "cpu_loop,threads", "--chart", str(live))
    assert strict.returncode == 0, strict.stderr
    assert live.read_bytes().startswith(PNG)
    plain = stockade("attack", "--baseline", "--json", "--only", "cpu_loop,threads",
                     "--watchdog", "1s")
    assert plain.returncode == 1  # plain wasmtime lets cpu_loop run until the watchdog
    (tmp_path / "strict.json").write_bytes(strict.stdout)
    (tmp_path / "plain.json").write_bytes(plain.stdout)
    chart = tmp_path / "both.png"
    done = stockade("attack", "--chart", str(chart), "--from", str(tmp_path / "strict.json"),
                    "--from", str(tmp_path / "plain.json"))
    assert done.returncode == 0, done.stderr
    assert chart.read_bytes().startswith(PNG)


def test_bad_reports_are_one_line_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    done = stockade("attack", "--chart", str(tmp_path / "x.png"), "--from", str(junk))
    assert done.returncode == 125 and b"not a JSON report" in done.stderr
    assert b"Traceback" not in done.stderr
    other = tmp_path / "other.json"
    other.write_text('{"outcome": "exited"}')
    done = stockade("attack", "--chart", str(tmp_path / "x.png"), "--from", str(other))
    assert done.returncode == 125 and b"not a `stockade attack --json` report" in done.stderr
    done = stockade("attack", "--from", str(other))
    assert done.returncode == 125 and b"--from needs --chart" in done.stderr
    assert not (tmp_path / "x.png").exists()


def _report(attacks: object) -> str:
    return json.dumps({"profile": "strict", "mode": "stockade", "attacks": attacks})


GOOD = [{"name": "cpu_loop", "verdict": "contained", "outcome": "timeout",
         "impact": {"cpu_user_s": 0.5, "cpu_sys_s": 0.1, "kernel_threads_s": 0.0}}]


@pytest.mark.parametrize("text", [
    '{"attacks": [1]}', '{"attacks": [{}]}', '{"attacks": [{"name": "a"}]}',
    "[" * 100_000,
    _report([{**GOOD[0], "impact": {"cpu_user_s": "x"}}]),
    _report([{**GOOD[0], "impact": {"cpu_user_s": float("nan")}}]),
    _report([{**GOOD[0], "name": ["a"]}]),
    _report([{**GOOD[0], "name": f"a{i}"} for i in range(2000)]),
    # Drawn as they were: a name of 1 MB took matplotlib minutes and 700 MB.
    _report([{**GOOD[0], "name": "A" * 1_000_000}]),
    _report([{**GOOD[0], "outcome": "ab\n" * 1000}]),
])
def test_malformed_reports_are_one_line_errors(tmp_path: Path, text: str) -> None:
    report = tmp_path / "r.json"
    report.write_text(text)
    done = stockade("attack", "--chart", str(tmp_path / "x.png"), "--from", str(report))
    refused(done, f"--from {report}")
    assert not (tmp_path / "x.png").exists()


def test_text_from_a_report_is_not_read_as_mathtext(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    report.write_text(_report([{**GOOD[0], "name": "$\\frac{$", "outcome": "$x^$"}]))
    done = stockade("attack", "--chart", str(tmp_path / "x.png"), "--from", str(report))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.png").read_bytes().startswith(PNG)


def test_reports_that_are_not_regular_files_are_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.json")
    with (tmp_path / "sparse.json").open("wb") as sparse:
        sparse.truncate(2 * 1024**3)
    for source in (str(tmp_path / "pipe.json"), "/dev/zero", str(tmp_path / "sparse.json"),
                   str(tmp_path / "missing.json"), str(tmp_path)):
        done = stockade("attack", "--chart", str(tmp_path / "x.png"), "--from", source,
                        timeout=30)
        refused(done, f"--from {source}")
    assert not (tmp_path / "x.png").exists()


def test_the_chart_is_written_only_as_a_new_regular_file(tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    report = tmp_path / "r.json"
    report.write_text(_report(GOOD))
    (tmp_path / "target").write_text("precious")
    (tmp_path / "link.png").symlink_to(tmp_path / "target")
    for chart in (str(tmp_path / "link.png"), "/dev/full", str(tmp_path / "x.wasm"),
                  str(tmp_path / "noext"), str(tmp_path / "no" / "dir.png")):
        done = stockade("attack", "--chart", chart, "--from", str(report))
        refused(done, "--chart")
    assert (tmp_path / "target").read_text() == "precious"
    assert (tmp_path / "link.png").is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["link.png", "r.json", "target"]
    svg = tmp_path / "r.svg"
    assert stockade("attack", "--chart", str(svg), "--from", str(report)).returncode == 0
    assert svg.read_bytes().lstrip().startswith(b"<?xml")


def test_a_chart_of_reports_with_json_is_one_json_object(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    report.write_text(_report(GOOD))
    chart = tmp_path / "r2.png"
    done = stockade("attack", "--json", "--chart", str(chart), "--from", str(report))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"chart": str(chart), "reports": [str(report)]}
    assert chart.read_bytes().startswith(PNG)
    bad = stockade("attack", "--json", "--chart", str(tmp_path / "x.wasm"), "--from",
                   str(report))
    assert bad.returncode == 125 and json.loads(bad.stdout)["exit_code"] == 125


def test_an_unsupported_chart_format_is_refused_before_the_suite_runs(tmp_path: Path) -> None:
    done = stockade("attack", "--only", "cpu_loop", "--chart", str(tmp_path / "x.wasm"))
    refused(done, "--chart")
    assert b"cpu_loop" not in done.stdout + done.stderr  # nothing ran
