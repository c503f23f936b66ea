"""`stockade bench` on the command line: options and errors (the full run is the report)."""

from __future__ import annotations

from pathlib import Path

from ..conftest import stockade


def test_help_lists_the_options() -> None:
    done = stockade("bench", "--help")
    assert done.returncode == 0
    for option in (b"--quick", b"--only", b"--out"):
        assert option in done.stdout


def test_missing_build_is_a_usage_error(tmp_path: Path) -> None:
    done = stockade("bench", "--quick", "--build", str(tmp_path / "nothing"),
                    "--out", str(tmp_path / "out"))
    assert done.returncode == 125
    assert b"build_guests.py" in done.stderr
    assert b"Traceback" not in done.stderr
