"""A `--dir` directory removed or replaced between its check and its preopen.

The check and the preopen must be one resolution: whatever happens to the path after
the check, the guest sees the directory that was checked (or the run is refused with one
line and the usage exit code), never what the path names by then, and never a
traceback. The window is reached deterministically: the check step
(`sandbox.wasi.checked_preopens`, as each backend calls it) is followed at once by the
swap, before anything else of the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stockade.cli import main
from stockade.sandbox import capi, sandbox, wasi
from tests.conftest import guest

USAGE_EXIT = 125


def _replace(data: Path, tmp: Path) -> None:
    data.rename(tmp / "moved")
    data.mkdir()
    (data / "planted.txt").write_text("not what was checked")


def _symlink(data: Path, tmp: Path) -> None:
    data.rename(tmp / "moved")
    data.symlink_to(tmp / "forbidden")


def _remove(data: Path, tmp: Path) -> None:
    (data / "checked.txt").unlink()
    data.rmdir()


SWAPS: dict[str, Callable[[Path, Path], None]] = {
    "replaced by another directory": _replace,
    "replaced by a symlink to a forbidden one": _symlink,
    "removed": _remove,
}


@pytest.mark.parametrize("backend", ["capi", "wasmtime"])
@pytest.mark.parametrize("swap", list(SWAPS))
def test_a_dir_swapped_after_its_check_is_never_what_the_guest_sees(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        backend: str, swap: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "checked.txt").write_text("checked")
    forbidden = tmp_path / "forbidden"
    forbidden.mkdir()
    (forbidden / "secret.txt").write_text("host secret")
    checks = []

    def check_then_swap(*args: Any, **kwargs: Any) -> Any:
        checked = wasi.checked_preopens(*args, **kwargs)
        SWAPS[swap](data, tmp_path)
        checks.append(swap)
        return checked

    for owner in (sandbox, capi):
        monkeypatch.setattr(owner, "checked_preopens", check_then_swap)
    monkeypatch.setenv("STOCKADE_BACKEND", backend)
    with pytest.raises(SystemExit) as ended:
        main(["run", "--isolate", "none", "--dir", f"{data}:/d",
              str(guest("readdir_list.wasm")), "/d"])
    out, err = capsys.readouterr()
    assert checks == [swap], "the run never reached the check"
    assert "Traceback" not in err and "Error" not in err, err
    listed = [name for name in out.splitlines() if name not in (".", "..")]
    assert "planted.txt" not in listed and "secret.txt" not in listed, out
    if ended.value.code == 0:
        # The checked directory itself (moved, or removed and now empty).
        names = sorted(listed[:-1])
        assert names == ([] if swap == "removed" else ["checked.txt"]), out
    else:
        assert ended.value.code == USAGE_EXIT, (ended.value.code, out, err)
        assert err.count("\n") == 1 and err.startswith("stockade: "), err
    assert os.listdir(forbidden) == ["secret.txt"]
