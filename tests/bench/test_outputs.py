"""`stockade bench`'s options and outputs: --only and --out refused before measuring,
results kept when the outputs cannot be written at the end, outputs never written through
a planted link, SIGTERM cleaned up like Ctrl-C, and the report's labels."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stockade.bench import BenchResults, write_outputs
from stockade.bench.charts import charts_available
from stockade.bench.hosts.base import Sample
from stockade.bench.report import render_report, summary_table
from stockade.bench.results import BackendInfo, Measurement
from stockade.cli import main

from ..conftest import STOCKADE, refused, stockade


def _results() -> BenchResults:
    """A run of three backends on hello: a native process (first output measured), the
    isolated worker (kind "process", a warm worker: no first output) and the microVM
    per request (9 s a request)."""
    results = BenchResults(
        meta={"started": "2026-12-07T00:00:00", "plan": {"name": "synthetic", "counts": {}}},
        backends=[BackendInfo("native", "native process", "process"),
                  BackendInfo("stockade-isolated", "Stockade isolated worker (C API, warm)",
                              "process"),
                  BackendInfo("vm", "microVM per request (QEMU microvm)", "process")],
        workloads=[{"key": "startup/hello", "group": "startup", "label": "hello"}])
    for backend, sample in (
            ("native", Sample(wall_ms=0.5, first_ms=0.4, rss_kb=600, digest="aa")),
            ("stockade-isolated", Sample(wall_ms=0.3, rss_kb=60_000, digest="aa")),
            ("vm", Sample(wall_ms=9000.0, first_ms=8800.0, rss_kb=220_000, digest="aa"))):
        measurement = Measurement(backend, "startup/hello")
        for _ in range(3):
            measurement.add(sample)
        results.measurements.append(measurement)
    return results


def _row(table: str, title: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {title} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


# -- report labels ------------------------------------------------------------------------


def test_a_warm_worker_shows_no_cold_start() -> None:
    table = summary_table(_results())
    assert _row(table, "native process")[1] == "400 µs"
    assert _row(table, "Stockade isolated worker (C API, warm)")[1] == "—"  # not 300 µs
    assert _row(table, "microVM per request (QEMU microvm)")[1] == "8800 ms"
    assert _row(table, "native process")[-1] == "0.6 MiB"  # not "1 MiB"
    assert _row(table, "microVM per request (QEMU microvm)")[-1] == "215 MiB"


def test_small_throughputs_keep_their_digits() -> None:
    report = render_report(_results())
    startup = report.split("## Start-up and per-call latency (hello)", 1)[1]
    assert "0.111/s" in _row(startup, "microVM per request (QEMU microvm)")
    assert "2,000/s" in _row(startup, "native process")
    assert "| 0/s |" not in report


# -- --only -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", ",", " , "])
def test_only_naming_nothing_is_refused(value: str, tmp_path: Path) -> None:
    # --build of nothing: were --only not checked first, this refuses (125) for the build,
    # not for --only, rather than running every backend.
    done = stockade("bench", "--quick", "--only", value, "--out", str(tmp_path / "out"),
                    "--build", str(tmp_path / "nothing"))
    refused(done, "--only", "names no backend")
    assert not (tmp_path / "out").exists()


# -- --out, checked before measuring ------------------------------------------------------


def test_out_that_cannot_hold_the_results_is_refused_before_measuring(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "at-all")
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "report.md").symlink_to(tmp_path / "victim")
    for out in ("/dev/full", str(tmp_path / "file" / "sub"), str(tmp_path / "dangling"),
                str(planted)):
        started = time.monotonic()
        done = stockade("bench", "--quick", "--only", "stockade", "--out", out)
        refused(done, "--out")
        assert time.monotonic() - started < 30  # refused up front, nothing measured
    assert not (tmp_path / "victim").exists()
    assert [p.name for p in planted.iterdir()] == ["report.md"]


def test_results_are_kept_when_the_outputs_fail_at_the_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import stockade.bench as bench

    def failing(results: BenchResults, out: object) -> list[str]:
        raise OSError(28, "No space left on device", str(Path(str(out)) / "results.json"))

    monkeypatch.setattr(bench, "run_bench", lambda options, progress: _results())
    monkeypatch.setattr(bench, "write_outputs", failing)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.raises(SystemExit) as stopped:
        main(["bench", "--quick", "--only", "stockade", "--out", str(tmp_path / "out")])
    assert stopped.value.code == 125
    err = capsys.readouterr().err
    assert "No space left on device" in err and "results kept in" in err
    kept = Path(err.split("results kept in ", 1)[1].split()[0])
    assert kept.is_file() and kept.parent.parent == tmp_path
    again = BenchResults.load(kept)
    assert [b.name for b in again.backends] == ["native", "stockade-isolated", "vm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", kept.parent.name]


# -- outputs never go through a link ------------------------------------------------------


def test_outputs_are_not_written_through_planted_links(tmp_path: Path) -> None:
    names = ["results.json", "report.md"]
    if charts_available():
        names.append("latency_cdf.png")
    for name in names:
        out = tmp_path / f"out-{name}"
        out.mkdir()
        victim = tmp_path / f"victim-{name}"
        victim.write_text("untouched")
        (out / name).symlink_to(victim)
        with pytest.raises(OSError, match="not a regular file"):
            write_outputs(_results(), out)
        assert victim.read_text() == "untouched"
        (out / name).unlink()
        written = write_outputs(_results(), out)
    assert {"results.json", "report.md"} <= set(written)
    assert all((out / name).is_file() and not (out / name).is_symlink() for name in written)
    results = _results()
    (out / "again.json").symlink_to(tmp_path / "victim-again")
    with pytest.raises(OSError, match="not a regular file"):
        results.save(out / "again.json")
    assert not (tmp_path / "victim-again").exists()


# -- SIGTERM ------------------------------------------------------------------------------


def _group_alive(pgid: int) -> list[int]:
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            alive.append(int(entry.name))
    return alive


def test_sigterm_to_the_process_group_cleans_up_like_ctrl_c(tmp_path: Path) -> None:
    """What `timeout` does: SIGTERM to the whole group while the agents measure. The work
    directory goes, and nothing of the group is left running."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen([*STOCKADE, "bench", "--quick", "--only", "wasmtime", "--out",
                             str(tmp_path / "out")], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        logs: list[Path] = []
        while not logs:  # the agents are starting: their logs are in the work directory
            assert proc.poll() is None and time.monotonic() < deadline
            logs = [p for p in tmp.glob("stockade-bench-*/logs/wasmtime.log")]
            time.sleep(0.1)
        time.sleep(3)  # both agents up and measuring
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert b"Traceback" not in err and b"terminated" in err
    assert not list(tmp.iterdir())
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group_alive(proc.pid) == []


def test_sigterm_to_an_agent_runs_its_hosts_cleanup(tmp_path: Path) -> None:
    """The wasmtime agent's scratch directory in /dev/shm is removed on SIGTERM, as on
    Ctrl-C (it stayed behind, a directory a run)."""
    spy = (
        "import sys, tempfile\n"
        "from stockade.bench import agent\n"
        "class Spy(tempfile.TemporaryDirectory):\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        super().__init__(*args, **kwargs)\n"
        "        print(self.name, file=sys.stderr, flush=True)\n"
        "tempfile.TemporaryDirectory = Spy\n"
        "agent.main()\n"
    )
    from stockade.bench.hosts.base import Layout

    from ..conftest import ROOT

    build = ROOT / "build"
    layout = Layout(build / "guests" / "bench", build / "native" / "bench", tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", spy], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        import json

        proc.stdin.write(json.dumps({"host": "wasmtime", "layout": layout.to_dict(),
                                     "options": {"strategy": "cranelift"}}) + "\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == {"ready": True}
        scratch = Path(proc.stderr.readline().strip())
        assert scratch.is_dir() and scratch.name.startswith("stockade-bench-wasmtime-")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()
    assert not scratch.exists()
