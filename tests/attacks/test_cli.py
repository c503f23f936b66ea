"""`stockade attack` from the command line: exit codes, JSON report, listing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import GUESTS, stockade

# Attack verdicts read the machine's device flushes, writes and kernel threads.
pytestmark = pytest.mark.alone


def test_contained_attacks_exit_zero_with_a_json_report() -> None:
    done = stockade("attack", "--profile", "strict", "--isolate", "none", "--json",
                    "--only", "cpu_loop,threads", "--guests", str(GUESTS), "--timeout", "10s")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["profile"] == "strict" and report["mode"] == "stockade"
    assert report["summary"] == {"contained": 2, "degraded": 0, "escaped": 0, "error": 0}
    first = report["attacks"][0]
    assert {"name", "verdict", "outcome", "impact"} <= set(first)
    assert first["name"] == "cpu_loop" and first["outcome"] == "fuel_exhausted"
    assert {"wall_s", "cpu_user_s", "cpu_sys_s", "machine_iowait_s", "machine_system_s",
            "kernel_threads_s", "device_flushes",
            "device_write_bytes", "rss_growth_bytes", "inodes_created", "fds_held",
            "output_bytes", "breach_to_containment_ms"} <= set(first["impact"])


def test_baseline_shows_the_exposure_and_exits_nonzero() -> None:
    done = stockade("attack", "--baseline", "--only", "cpu_loop", "--watchdog", "1s",
                    "--guests", str(GUESTS))
    assert done.returncode == 1
    table = done.stdout.decode()
    assert "cpu_loop" in table and "watchdog_kill" in table and "escaped" in table


def test_unknown_attack_is_a_usage_error_and_list_names_all() -> None:
    done = stockade("attack", "--only", "nope", "--guests", str(GUESTS))
    assert done.returncode == 125
    assert b"no such attack" in done.stderr and b"Traceback" not in done.stderr
    listed = stockade("attack", "--list").stdout.decode().splitlines()
    assert len(listed) == 30 and listed[0].startswith("cpu_loop")


@pytest.mark.parametrize("baseline", [False, True])
def test_a_guest_that_cannot_be_loaded_is_an_error_not_contained(
        tmp_path: Path, baseline: bool) -> None:
    # An attack that never ran proves nothing: it fails the suite.
    (tmp_path / "attacks").mkdir()
    whole = (GUESTS / "attacks" / "cpu_loop.wasm").read_bytes()
    (tmp_path / "attacks" / "cpu_loop.wasm").write_bytes(whole[:100])
    done = stockade("attack", "--json", "--only", "cpu_loop", "--guests", str(tmp_path),
                    *(["--baseline"] if baseline else ["--isolate", "none"]))
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    (attack,) = report["attacks"]
    assert attack["verdict"] == "error", attack
    assert "cannot be loaded" in attack["reasons"][0]
    assert report["summary"] == {"contained": 0, "degraded": 0, "escaped": 0, "error": 1}
    table = stockade("attack", "--only", "cpu_loop", "--guests", str(tmp_path),
                     "--isolate", "none")
    assert table.returncode == 1 and b"0 contained" in table.stdout
    assert b"1 error" in table.stdout and b"Traceback" not in table.stderr


def test_a_denied_import_is_still_contained() -> None:
    # Refused for what it imports, by the policy: that is containment, not a broken guest.
    done = stockade("attack", "--json", "--only", "threads,net_wasix", "--isolate", "none",
                    "--guests", str(GUESTS))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"]["contained"] == 2
