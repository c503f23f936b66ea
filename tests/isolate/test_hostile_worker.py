"""A worker taken over by its guest, against its parent: what it says and does not do
is bounded in time, memory and trust (found by review). The workers here are real
processes started as a worker is (`WorkerProcess`), running a hostile program in place
of the worker's."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from stockade import Policy
from stockade.errors import WorkerError
from stockade.isolate import IsolationConfig
from stockade.isolate.handle import EXIT_GRACE, WorkerProcess
from stockade.isolate.plan import plan_for
from stockade.isolate.protocol import PICKLED_REPLY, read_reply, text_of
from stockade.paths import PACKAGE_ROOT


def hostile(tmp_path: Path, body: str) -> WorkerProcess:
    """A worker process running `body` (Python; `out` is its channel to the parent,
    `send(message)` writes one frame on it) instead of the worker's program."""
    (tmp_path / "hostile_worker.py").write_text(textwrap.dedent("""\
        import os, pickle, struct, sys, time
        out = int(sys.argv[2])
        def send(message):
            data = pickle.dumps(message)
            os.write(out, struct.pack(">Q", len(data)) + data)
        """) + textwrap.dedent(body))
    plan = plan_for(Policy.from_profile("default"), IsolationConfig())
    return WorkerProcess(plan, None, sys.executable, program="hostile_worker",
                         env={"PYTHONPATH": f"{PACKAGE_ROOT}{os.pathsep}{tmp_path}"})


def test_a_worker_that_closes_its_channel_and_lives_on_is_killed(tmp_path: Path) -> None:
    """It closed its end of the pipe and slept (no CPU: its CPU limit never fired): the
    parent waited for its exit for ever, a 2 s run was still blocked at 40 s, and a
    gateway's pool lost the slot for good."""
    worker = hostile(tmp_path, "os.close(out)\ntime.sleep(120)\n")
    try:
        with pytest.raises(EOFError):
            worker.receive(time.monotonic() + 30, 1 << 20)
        start = time.monotonic()
        cause = worker.death_cause()
        assert time.monotonic() - start < EXIT_GRACE + 5
        assert "closed its channel but did not exit" in cause
        assert worker.proc.poll() is not None  # killed, and reaped
    finally:
        worker.close()


def test_a_ready_without_its_protections_is_a_worker_error(tmp_path: Path) -> None:
    worker = hostile(tmp_path, 'send(("ready", {"pid": os.getpid()}))\ntime.sleep(120)\n')
    try:
        with pytest.raises(WorkerError, match="malformed 'ready'"):
            worker.wait_ready(30)
        assert worker.proc.poll() is not None
    finally:
        worker.close()


def test_a_reply_pickle_past_its_bound_is_refused_unread() -> None:
    """Each byte of a pickle may build ~240 bytes of objects (EMPTY_SET): a 10 MB reply
    took the parent to 2.4 GB. A reply's pickle is bounded apart from its output."""
    bomb = b"\x80\x04(" + b"\x8f" * (PICKLED_REPLY + 1) + b"l."
    with tempfile.TemporaryFile() as frames:
        frames.write(struct.pack(">Q", len(bomb)) + bomb)
        frames.seek(0)
        with pytest.raises(WorkerError, match="bound"):
            read_reply(frames.fileno(), time.monotonic() + 10, 48 * 1024**2)


def test_a_result_reply_at_its_bound_still_reads() -> None:
    """The bound is the pickle's: a result's output (raw frames after it) may be larger."""
    payload = {"module": "m", "sha256": "0" * 64, "exit_code": 0, "outcome": "exited"}
    data = pickle.dumps(("result", payload, (PICKLED_REPLY * 2, 0)))
    with tempfile.TemporaryFile() as frames:
        frames.write(struct.pack(">Q", len(data)) + data)
        frames.write(struct.pack(">Q", PICKLED_REPLY * 2) + b"o" * (PICKLED_REPLY * 2))
        frames.write(struct.pack(">Q", 0))
        frames.seek(0)
        kind, read = read_reply(frames.fileno(), time.monotonic() + 10, 48 * 1024**2)
    assert kind == "result" and len(read["stdout"]) == PICKLED_REPLY * 2


def test_a_workers_nested_value_is_no_text() -> None:
    """A deeply nested list as `started`'s module raised RecursionError in `str()`: the
    parent's traceback instead of a verdict."""
    nested: list[object] = []
    for _ in range(100_000):
        nested = [nested]
    assert text_of({"module": nested}, "module") == ""
    assert text_of({"message": "x" * 100_000}).endswith("more characters]")
    assert text_of("not a dict") == ""


def test_the_callers_working_directory_is_not_granted_to_its_workers(tmp_path: Path) -> None:
    """`python -m stockade` puts its working directory first on `sys.path`, and the
    workers' Landlock rules granted it: started from `/`, the whole filesystem was
    readable to an escaped guest. A worker (started with -P) never imports from it."""
    (tmp_path / "show_paths.py").write_text(
        "from stockade.isolate.plan import interpreter_paths\n"
        "print('\\n'.join(map(str, interpreter_paths())))\n")
    shown = subprocess.run([sys.executable, "-m", "show_paths"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
                           capture_output=True, text=True, timeout=60, check=True)
    granted = [Path(line) for line in shown.stdout.splitlines()]
    assert granted and not any(tmp_path.is_relative_to(path) for path in granted), granted


def test_an_empty_pythonpath_entry_does_not_grant_the_working_directory(
        tmp_path: Path) -> None:
    """The fix's review: `PYTHONPATH=$PYTHONPATH:/app` with it unset has an empty entry,
    which Python makes the working directory: started from `/`, the workers were granted
    `/` again, and imported from there too."""
    shown = subprocess.run(
        [sys.executable, "-c",
         "from stockade.isolate.plan import interpreter_paths\n"
         "from stockade.paths import import_path\n"
         "print(import_path()); print('\\n'.join(map(str, interpreter_paths())))\n"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": f"{PACKAGE_ROOT}{os.pathsep}"},
        capture_output=True, text=True, timeout=60, check=True)
    passed, *granted = shown.stdout.splitlines()
    assert passed.split(os.pathsep) == [PACKAGE_ROOT, PACKAGE_ROOT]  # no empty entry
    assert granted and not any(tmp_path.is_relative_to(path) for path in granted), granted


def test_the_monitor_never_walks_a_named_directory_that_is_a_link(tmp_path: Path) -> None:
    """The fix's review: a scratch directory the worker named, made a link to `/usr`,
    had its parent walk `/usr` (10,000 entries a sample)."""
    from stockade.telemetry.monitor import _dir_usage

    real = tmp_path / "real"
    real.mkdir()
    (real / "file").write_bytes(b"x" * 100)
    (tmp_path / "link").symlink_to(real)
    assert _dir_usage((tmp_path / "link",)) == (0, 0)
    assert _dir_usage((real,)) == (100, 1)


def test_a_relative_pythonpath_entry_grants_no_parent_of_the_working_directory(
        tmp_path: Path) -> None:
    """The second fix review: `..` in PYTHONPATH, made absolute by Python, granted the
    working directory's parent (and so the directory) to the workers."""
    inner = tmp_path / "project" / "sub"
    inner.mkdir(parents=True)
    shown = subprocess.run(
        [sys.executable, "-c",
         "from stockade.isolate.plan import interpreter_paths\n"
         "print('\\n'.join(map(str, interpreter_paths())))\n"],
        cwd=inner, env={**os.environ, "PYTHONPATH": f"{PACKAGE_ROOT}{os.pathsep}.."},
        capture_output=True, text=True, timeout=60, check=True)
    granted = [Path(line) for line in shown.stdout.splitlines()]
    assert granted and not any(inner.is_relative_to(path) for path in granted), granted


def test_an_isolated_sandbox_runs_module_bytes_without_end() -> None:
    """The second fix review: each run of module bytes loaded them again and their
    engine kept every one: at the ~300th run the worker was out of descriptors, and
    every run after failed. Bytes are kept by digest, and a module forgotten is freed."""
    from stockade import Outcome
    from stockade.isolate import IsolatedSandbox

    modules = [f'(module (func (export "_start")) (global i32 (i32.const {n})))'.encode()
               for n in range(60)]
    with IsolatedSandbox(Policy.from_profile("default")) as sandbox:
        for number in range(360):
            result = sandbox.run(modules[number % 60] if number % 2 else modules[0])
            assert result.outcome is Outcome.EXITED, (number, result.message)
