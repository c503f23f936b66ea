"""Every attack module is built and loads; the C guests behave as their usage says.

Behaviour is checked with small arguments under plain wasmtime (the baseline child),
so these tests do not depend on the sandbox's limits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from stockade.attacks import ATTACKS, Attack
from stockade.attacks.baseline import run_plain
from tests.conftest import guest


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    return wasmtime.Engine()


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_module_is_built_and_valid(attack: Attack, engine: wasmtime.Engine) -> None:
    data = guest(attack.module).read_bytes()
    wasmtime.Module.validate(engine, data)
    if attack.name != "compile_bomb":  # compiling it is the attack (seconds)
        module = wasmtime.Module(engine, data)
        assert "_start" in [export.name for export in module.exports]


def plain(tmp_path: Path, name: str, *args: str, scratch: bool = False,
          devices: bool = False) -> tuple[str, str, Path]:
    box = tmp_path / "scratch"
    box.mkdir(exist_ok=True)
    dirs = [(box, "/scratch", True)] if scratch else []
    if devices:
        dirs.append((Path("/dev"), "/dev", False))
    run = run_plain(guest(f"attacks/{name}.wasm"), args, tuple(dirs), tmp_path, watchdog=20.0)
    return run.outcome, run.stdout.decode(), box


def test_cpu_loop_stops_on_its_own(tmp_path: Path) -> None:
    outcome, out, _ = plain(tmp_path, "cpu_loop", "0")
    assert outcome == "exited" and "cpu_loop:" in out


def test_memory_grow_touches_what_it_asks_for(tmp_path: Path) -> None:
    outcome, out, _ = plain(tmp_path, "memory_grow", "8")
    assert outcome == "exited" and "stopped at 8 MiB" in out


def test_disk_write_and_inode_flood_write_into_scratch(tmp_path: Path) -> None:
    _, out, box = plain(tmp_path, "disk_write", "2", scratch=True)
    assert "wrote 2 MiB" in out and (box / "big.bin").stat().st_size == 2 * 1024**2
    _, out, box = plain(tmp_path, "inode_flood", "50", "/scratch", "10", scratch=True)
    assert "created 50 files" in out and len(list(box.glob("f*"))) == 50


@pytest.mark.parametrize("mode", ["fsync", "fdatasync"])
def test_sync_storm_keeps_its_file_one_byte_long(tmp_path: Path, mode: str) -> None:
    _, out, box = plain(tmp_path, "fsync_storm", mode, "10", "20", scratch=True)
    assert f"20 rounds of pwrite+{mode}, 0 failed" in out
    assert (box / "sync.bin").stat().st_size == 1


def test_tiny_io_and_entropy_count_their_calls(tmp_path: Path) -> None:
    _, out, _ = plain(tmp_path, "tiny_io", "both", "10", "100", scratch=True)
    assert "100 rounds (both), 0 failed" in out
    _, out, _ = plain(tmp_path, "entropy_flood", "10", "64", "100")
    assert "100 calls of 64 bytes, 0 failed" in out


def test_escape_reports_each_attempt(tmp_path: Path) -> None:
    outcome, out, _ = plain(tmp_path, "escape", scratch=True)
    assert outcome == "exited"
    assert "blocked absolute: open /etc/passwd" in out
    assert "escape: 0 breaches" in out  # plain wasmtime confines paths too
    assert not (tmp_path / "moved_outside.txt").exists()


def test_deep_tree_nests_relative_to_each_level(tmp_path: Path) -> None:
    _, out, box = plain(tmp_path, "deep_tree", "30", "255", "10", scratch=True)
    assert "reached depth 30, path length 7680" in out
    assert (box / ("d" * 255)).is_dir()


def test_sleep_storm_and_descriptor_hoard_are_bounded(tmp_path: Path) -> None:
    _, out, _ = plain(tmp_path, "sleep_storm", "many", "10", "10")
    assert "10 sleeps of 10 us" in out
    _, out, _ = plain(tmp_path, "fd_hoard", "20", "/scratch", scratch=True)
    assert "holding 20 descriptors" in out


def test_stack_recursion_exhausts_the_wasm_stack(tmp_path: Path) -> None:
    outcome, _, _ = plain(tmp_path, "stack_recursion")
    assert outcome == "trap"


def test_device_open_reports_devices_as_breaches(tmp_path: Path) -> None:
    _, out, _ = plain(tmp_path, "device_open", "/dev", "1", devices=True)
    assert "BREACH opened /dev/null" in out  # plain wasmtime opens devices in a preopen
    assert "device_open:" in out


@pytest.mark.parametrize("name", ["threads", "net_wasix"])
def test_modules_needing_other_imports_do_not_link_in_plain_wasmtime(
        tmp_path: Path, name: str) -> None:
    outcome, _, _ = plain(tmp_path, name)
    assert outcome == "error"
