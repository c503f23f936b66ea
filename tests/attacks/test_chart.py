"""`stockade attack --chart`: the suite's chart from a live run and from saved reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import stockade

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
