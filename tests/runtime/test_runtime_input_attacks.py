"""Attacks on `stockade-runtime`'s own inputs: its working directory, `config.json` as a
file and as values, `--pid-file`, a signal's name. Each is refused in one line (or
does nothing), never a traceback, a hang or code run as root (found by review)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import guest
from .direct import RUNTIME, create, host_policy_env, runtime, wait_gone


def _bundle(tmp_path: Path, config: dict[str, object] | None = None) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "rootfs" / "hello.wasm").write_bytes(guest("hello.wasm").read_bytes())
    (bundle / "config.json").write_text(json.dumps(config or {
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["/hello.wasm"], "cwd": "/"}}))
    return bundle


def test_a_bundles_python_files_are_not_imported(tmp_path: Path) -> None:
    """A shim runs the runtime in the bundle directory: the container process was
    `python -m stockade.runtime.init`, which imports from there first."""
    env = host_policy_env(tmp_path, tmp_path)
    bundle = _bundle(tmp_path)
    planted = bundle / "stockade"
    planted.mkdir()
    marker = tmp_path / "planted-code-ran"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    pid_file = tmp_path / "pid"
    with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
        done = subprocess.run([RUNTIME, "--root", str(tmp_path / "root"), "create",
                               "--bundle", str(bundle), "--pid-file", str(pid_file), "c1"],
                              env=env, cwd=bundle, stdout=out, stderr=err, timeout=60,
                              check=False)
    assert done.returncode == 0, (tmp_path / "err").read_text()
    runtime(tmp_path, env, "start", "c1")
    wait_gone(int(pid_file.read_text()))
    assert not marker.exists()
    assert b"Hello" in (tmp_path / "out").read_bytes()


@pytest.mark.parametrize("kind", ["fifo", "device", "symlink"])
def test_a_config_that_is_no_regular_file_is_refused_at_once(tmp_path: Path,
                                                              kind: str) -> None:
    env = host_policy_env(tmp_path, tmp_path)
    bundle = _bundle(tmp_path)
    config = bundle / "config.json"
    config.unlink()
    if kind == "fifo":
        os.mkfifo(config)
    elif kind == "device":
        config.symlink_to("/dev/zero")
    else:
        (bundle / "real.json").write_text("{}")
        config.symlink_to("real.json")
    created = create(tmp_path, env, bundle)  # a FIFO held it for ever
    assert created.returncode == 78 and created.pid is None
    assert "config.json" in created.errors.read_text()
    assert "Traceback" not in created.errors.read_text()


@pytest.mark.parametrize("config", [
    "[" * 200_000 + "]" * 200_000,
    json.dumps({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "annotations": [1],
                "process": {"args": ["/hello.wasm"], "cwd": "/"}}),
    '{"ociVersion": "1.0.2", "root": {"path": "root\\ud800"}, '
    '"process": {"args": ["/hello.wasm"], "cwd": "/"}}',
    json.dumps({"ociVersion": "1.0.2", "root": {"path": "root\0fs"},
                "process": {"args": ["/hello.wasm"], "cwd": "/"}}),
    '{"ociVersion": "1.0.2", "root": {"path": "rootfs"}, '
    '"process": {"args": ["/hello\\udfff.wasm"], "cwd": "/"}}',
    json.dumps({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                "process": {"args": ["/hello.wasm"], "cwd": "/", "env": ["A=b\0c"]}}),
    '{"ociVersion": "1.0.2", "root": {"path": "rootfs"}, '
    '"process": {"args": ["/hello.wasm"], "cwd": "/", "env": ["A=\\ud800"]}}',
], ids=["nested", "annotations-list", "surrogate-root", "nul-root", "surrogate-module",
        "nul-env", "surrogate-env"])
def test_hostile_config_values_are_one_line(tmp_path: Path, config: str) -> None:
    env = host_policy_env(tmp_path, tmp_path)
    bundle = _bundle(tmp_path)
    (bundle / "config.json").write_text(config, errors="surrogatepass")
    created = create(tmp_path, env, bundle)
    errors = created.errors.read_text(errors="replace")
    assert created.returncode == 78 and created.pid is None, errors
    assert "Traceback" not in errors and len(errors.strip().splitlines()) == 1, errors
    assert not (tmp_path / "root" / "c1").exists()


def test_the_pid_file_is_written_through_no_planted_link(tmp_path: Path) -> None:
    env = host_policy_env(tmp_path, tmp_path)
    bundle = _bundle(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / ".pid.tmp").symlink_to(victim)  # the old, fixed temporary name
    created = create(tmp_path, env, bundle)
    assert created.returncode == 0 and created.pid is not None
    try:
        assert victim.read_text() == "precious"
        assert [p.name for p in tmp_path.glob(".pid.*")] == [".pid.tmp"]  # none left
    finally:
        runtime(tmp_path, env, "delete", "--force", "c1")
        wait_gone(created.pid)


@pytest.mark.parametrize("name", ["²", "99999999999999999999", "٣", "999", "65"])
def test_a_signal_that_is_no_signal_is_refused(tmp_path: Path, name: str) -> None:
    """Out of range (`kill c1 999`) reached os.kill: `[Errno 22] Invalid argument`, exit 1."""
    env = host_policy_env(tmp_path, tmp_path)
    created = create(tmp_path, env, _bundle(tmp_path))
    assert created.pid is not None
    try:
        done = runtime(tmp_path, env, "kill", "c1", name)
        assert done.returncode == 125, done.stderr
        assert f"unknown signal '{name}'" in done.stderr and "Errno" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert runtime(tmp_path, env, "kill", "c1", "9").returncode == 0  # valid numbers
    finally:
        runtime(tmp_path, env, "delete", "--force", "c1")
        wait_gone(created.pid)


def test_a_logged_error_is_one_line_whatever_the_bundle_names(tmp_path: Path) -> None:
    """`--log-format text` wrote the message raw inside `msg="..."`: a module name with a
    quote and a new line forged a second log line (found by review)."""
    env = host_policy_env(tmp_path, tmp_path)
    bundle = _bundle(tmp_path, {
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ['/x"\ntime="0" level=info msg="forged'], "cwd": "/"}})
    log = tmp_path / "runtime.log"
    done = subprocess.run([RUNTIME, "--root", str(tmp_path / "root"), "--log", str(log),
                           "--log-format", "text", "create", "--bundle", str(bundle), "c1"],
                          env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 78, done.stderr
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and "level=info" not in lines[0].split("msg=", 1)[0], lines


def test_a_signal_during_create_waits_for_the_state_to_be_whole(tmp_path: Path) -> None:
    """SIGTERM between the container's directory and its state left a directory no
    command could use (`create` said it exists, `state` that it does not, `delete
    --force` did nothing) and a process waiting on its FIFO for ever (found by review).
    Such a signal now acts once the block that writes the state has ended."""
    marker = tmp_path / "block-ended"
    probe = ("import os, signal\n"
             "from stockade.runtime.cli import _signals_deferred\n"
             "with _signals_deferred():\n"
             "    os.kill(os.getpid(), signal.SIGTERM)\n"
             f"    open({str(marker)!r}, 'w').close()\n"
             "print('survived')\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=False)
    assert marker.exists(), done.stderr  # the block ran to its end
    assert done.returncode == -15 and "survived" not in done.stdout  # then the signal


def test_what_a_killed_create_left_is_deleted_by_force(tmp_path: Path) -> None:
    """SIGKILL (which no handler defers) during `create` left the container's directory
    without its state: `state` said it did not exist, `delete --force` did nothing and
    `create` said it existed (found by review)."""
    env = host_policy_env(tmp_path, tmp_path)
    wedged = tmp_path / "root" / "c1"
    wedged.mkdir(parents=True)
    os.mkfifo(wedged / "exec.fifo")
    assert runtime(tmp_path, env, "delete", "--force", "c1").returncode == 0
    assert not wedged.exists()
    created = create(tmp_path, env, _bundle(tmp_path))
    assert created.returncode == 0 and created.pid is not None, created.errors.read_text()
    runtime(tmp_path, env, "delete", "--force", "c1")
    wait_gone(created.pid)


def test_a_container_process_whose_create_died_ends(tmp_path: Path) -> None:
    """Killed after starting the container process and before writing its state,
    `create` left that process waiting for `start` for ever, known to no command. It
    waits for `create`'s word first, and ends when `create` ends without it."""
    env = host_policy_env(tmp_path, tmp_path)
    state = tmp_path / "root" / "c1"
    state.mkdir(parents=True)
    os.mkfifo(state / "exec.fifo")
    created_r, created_w = os.pipe()
    from stockade.paths import module_command

    process = subprocess.Popen(
        module_command("stockade.runtime.init", str(state), str(_bundle(tmp_path)),
                       str(created_r)),
        pass_fds=(created_r,), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(created_r)
    os.close(created_w)  # `create` killed before its word
    try:
        assert process.wait(timeout=60) == 125
    finally:
        process.kill()
        process.wait()


def test_no_descriptor_left_is_no_verdict_on_a_mount(tmp_path: Path) -> None:
    """Out of descriptors, a mount inside the allowed directory was refused as outside
    the host policy's dirs: the refusal named the wrong cause (found by review)."""
    import errno
    import resource

    from stockade.runtime.dirs import beneath

    inner = tmp_path / "inner"
    inner.mkdir()
    root_fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    inner_fd = os.open(inner, os.O_PATH | os.O_DIRECTORY)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    filler: list[int] = []
    try:
        assert beneath(inner_fd, root_fd)
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 8, hard))
        with pytest.raises(OSError) as raised:
            while True:
                filler.append(os.open("/dev/null", os.O_RDONLY))
        assert raised.value.errno == errno.EMFILE
        with pytest.raises(OSError) as refused:
            beneath(inner_fd, root_fd)
        assert refused.value.errno == errno.EMFILE
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        os.close(inner_fd)
        os.close(root_fd)


def test_a_create_in_progress_is_neither_deleted_nor_created_twice(tmp_path: Path) -> None:
    """`delete --force` of a directory without state removed one a `create` was still
    making; a second `create` of the id then ran, and the first wrote its state into the
    second's directory: two container processes, one of them known to no command
    (found by review). A create holds the id's lock until its word is written."""
    from stockade.runtime.state import id_lock

    env = host_policy_env(tmp_path, tmp_path)
    being_made = tmp_path / "root" / "c1"
    being_made.mkdir(parents=True)
    os.mkfifo(being_made / "exec.fifo")
    with id_lock(tmp_path / "root", "c1"):  # as a `create` between mkdir and its state
        deleted = runtime(tmp_path, env, "delete", "--force", "c1")
        assert deleted.returncode != 0 and "being created" in deleted.stderr, deleted.stderr
        assert being_made.exists()
        again = create(tmp_path, env, _bundle(tmp_path))
        assert again.returncode != 0 and again.pid is None
    assert runtime(tmp_path, env, "delete", "--force", "c1").returncode == 0
    assert not being_made.exists() and not list((tmp_path / "root").iterdir())


def test_a_lock_a_killed_create_left_is_removed_by_delete(tmp_path: Path) -> None:
    """A create ended by a signal (or SIGKILL) left `<root>/.<id>.lock`, which a `delete
    --force` of the id (no directory) left for good (found by review)."""
    env = host_policy_env(tmp_path, tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    (root / ".c1.lock").touch()
    assert runtime(tmp_path, env, "delete", "--force", "c1").returncode == 0
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("where", ["missing directory", "a directory"])
def test_a_pid_file_that_cannot_be_written_is_one_clear_line(tmp_path: Path,
                                                              where: str) -> None:
    """The error was the raw errno naming a temporary `.p.XXXXXXXX.part`, exit 1; and the
    container process, its directory removed under it, added a line of its own."""
    env = host_policy_env(tmp_path, tmp_path)
    if where == "missing directory":
        pid_file = tmp_path / "nonexistent" / "dir" / "p"
        said = f"its directory {pid_file.parent} does not exist"
    else:
        pid_file = tmp_path / "p"
        pid_file.mkdir()
        said = f"--pid-file {pid_file}: cannot write it"
    done = subprocess.run([RUNTIME, "--root", str(tmp_path / "root"), "create", "--bundle",
                           str(_bundle(tmp_path)), "--pid-file", str(pid_file), "c1"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 125, done.stderr
    assert said in done.stderr, done.stderr
    assert ".part" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "root" / "c1").exists()
