"""With `--json`, a command refused on bad input still prints one JSON object on stdout
(`{"error": MESSAGE, "exit_code": N}`), and its one line on stderr."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from ..conftest import STOCKADE, guest, stockade


def _bad_inputs(tmp: Path) -> list[tuple[tuple[str, ...], int]]:
    garbage = tmp / "garbage.wasm"
    garbage.write_bytes(bytes(range(256)))
    policy = tmp / "broken.toml"
    policy.write_text("[limits\n")
    key = tmp / "k.pub"
    key.write_text("not a key\n")
    absent = str(tmp / "absent.wasm")
    return [
        (("verify", "--json", "--key", str(tmp / "none.pub"), str(guest("hello.wasm"))), 125),
        (("verify", "--json", "--key", str(key), str(guest("hello.wasm"))), 125),
        (("inspect", "--json", absent), 127),
        (("inspect", "--json", str(garbage)), 126),
        (("check", "--json", "--no-host", "--policy", str(policy)), 125),
        (("check", "--json", "--no-host", "--module", absent), 127),
        (("advise", "--json", "--module", str(garbage)), 126),
        (("advise", "--json", "--io", "medium"), 125),
        (("oci", "inspect", "--json", "not a reference"), 125),
    ]


@pytest.mark.parametrize("case", range(9))
def test_a_refusal_is_one_json_object_too(tmp_path: Path, case: int) -> None:
    args, code = _bad_inputs(tmp_path)[case]
    done = stockade(*args)
    err = done.stderr.decode()
    assert done.returncode == code, err
    assert "Traceback" not in err
    error = json.loads(done.stdout)
    assert error["exit_code"] == code
    assert isinstance(error["error"], str) and error["error"] in err


def test_without_json_nothing_goes_to_stdout(tmp_path: Path) -> None:
    done = stockade("inspect", str(tmp_path / "absent.wasm"))
    assert done.returncode == 127 and done.stdout == b""


def test_a_failed_verification_is_still_its_one_report(tmp_path: Path) -> None:
    from stockade.trust.keys import SecretKey

    key = tmp_path / "k.pub"
    key.write_bytes(SecretKey(bytes([9]) * 32).public.pem())
    done = stockade("verify", "--json", "--key", str(key), str(guest("hello.wasm")))
    assert done.returncode == 126
    assert done.stdout.count(b"\n") == 1  # its report, no second object
    report = json.loads(done.stdout)
    assert report["verified"] is False and "exit_code" not in report


def test_run_keeps_its_own_error_object(tmp_path: Path) -> None:
    done = stockade("run", "--json", str(tmp_path / "absent.wasm"))
    assert done.returncode == 127 and done.stdout.count(b"\n") == 1
    assert json.loads(done.stdout)["outcome"] == "error"


@pytest.mark.parametrize("stdout", ["closed", "full"])
@pytest.mark.parametrize("command", ["inspect", "run"])
def test_a_stdout_that_takes_nothing_costs_the_json_not_the_line(tmp_path: Path, stdout: str,
                                                                 command: str) -> None:
    # Writing the error object raised inside the error handler: a traceback, exit 1.
    target = str(tmp_path / "absent.wasm") if command == "inspect" else str(guest("hello.wasm"))
    redirect = ">&-" if stdout == "closed" else ">/dev/full"
    line = " ".join(shlex.quote(word) for word in (*STOCKADE, command, "--json", target))
    done = subprocess.run(["sh", "-c", f"{line} {redirect}"], capture_output=True,
                          timeout=120, check=False)
    err = done.stderr.decode()
    assert "Traceback" not in err and "Exception ignored" not in err, err
    if command == "run" and stdout == "closed":  # nothing asked to see it: the run's own
        assert (done.returncode, err) == (0, ""), err
        return
    assert done.returncode == (127 if command == "inspect" else 125), err
    assert len(err.strip().splitlines()) == 1, err
