"""`stockade-runtime`: the OCI runtime command line (runc's and crun's), for Wasm bundles.

containerd's runc shim (`ctr run --runc-binary`, `runtimes.<name>.options.BinaryName`)
and Podman (`--runtime`) drive it: `create` validates the bundle and starts the container
process, which prepares the module and waits on a FIFO; `start` releases it; the shim
reaps it and reports its exit code. Errors go to stderr and, as runc does, to `--log` in
`--log-format` (json lines for the shims).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..errors import StockadeError, UsageError
from ..paths import import_path, module_command
from ..regularfile import replace_file
from .state import ContainerState, container_dir, id_lock, lock_path, proc_start_time, status_of

__all__ = ["main", "runtime"]

OCI_VERSION = "1.0.2"


def _default_root() -> str:
    if os.geteuid() == 0:
        return "/run/stockade-runtime"
    return str(Path(os.environ.get("XDG_RUNTIME_DIR", "/tmp")) / "stockade-runtime")


class _Context:
    def __init__(self, root: Path, log: Path | None, log_format: str) -> None:
        self.root, self.log, self.log_format = root, log, log_format

    def report(self, message: str) -> None:
        """Write an error to stderr and the log file (never raising)."""
        sys.stderr.write(f"stockade-runtime: {message}\n")
        if self.log is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = json.dumps({"level": "error", "msg": message, "time": stamp}) \
            if self.log_format == "json" else \
            f'time="{stamp}" level=error msg={json.dumps(message)}'  # quoted, as logrus does
        with contextlib.suppress(OSError), open(self.log, "a") as handle:
            handle.write(line + "\n")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(path_type=Path), default=_default_root,
              help="Directory for container state.")
@click.option("--log", type=click.Path(path_type=Path), help="Where errors are logged.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text")
@click.option("--systemd-cgroup", is_flag=True, hidden=True)
@click.option("--debug", is_flag=True, hidden=True)
@click.option("--criu", hidden=True)
@click.option("--rootless", hidden=True)
@click.option("--cgroup-manager", hidden=True)  # crun's, passed by Podman's conmon
@click.version_option(package_name="stockade", prog_name="stockade-runtime",
                      message=f"%(prog)s version %(version)s\nspec: {OCI_VERSION}")
@click.pass_context
def runtime(ctx: click.Context, /, root: Path, log: Path | None, log_format: str,
            **_ignored: Any) -> None:
    """Run wasi/wasm OCI bundles under Stockade (limits, isolation, telemetry)."""
    ctx.obj = _Context(root, log, log_format)


@runtime.command()
@click.argument("container_id")
@click.option("--bundle", "-b", type=click.Path(path_type=Path), default=".")
@click.option("--pid-file", type=click.Path(path_type=Path))
@click.option("--console-socket", type=click.Path(path_type=Path))
@click.option("--no-pivot", is_flag=True, hidden=True)
@click.option("--no-new-keyring", is_flag=True, hidden=True)
@click.option("--preserve-fds", type=int, default=0, hidden=True)
@click.pass_obj
def create(ctx: _Context, /, container_id: str, bundle: Path, pid_file: Path | None,
           console_socket: Path | None, **_ignored: Any) -> None:
    """Create container ID from --bundle; its module waits for `start`."""
    from .bundle import read_bundle

    directory = container_dir(ctx.root, container_id)
    if pid_file is not None and not pid_file.parent.is_dir():
        raise UsageError(f"--pid-file {pid_file}: its directory {pid_file.parent} does not "
                         "exist")
    bundle = bundle.resolve()
    spec = read_bundle(bundle)
    spec.close()  # judged here; the container process reads and holds it itself
    ctx.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The lock inside: a signal deferred to the block's end acts once it is let go.
    with _signals_deferred(), id_lock(ctx.root, container_id):
        _create(directory, container_id, bundle, spec.config, pid_file, console_socket)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGTERM, SIGINT and SIGHUP wait until the block ends, then act as they would have:
    one between the container's directory and its `state.json` left a directory no
    command could use and a process waiting on its FIFO for ever (found by review). A
    handler, not a blocked mask: the container process inherits the mask, never a
    handler (exec resets it)."""
    caught: list[int] = []
    names = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    before = {number: signal.signal(number, lambda got, _: caught.append(got))
              for number in names}
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
        if caught:
            signal.raise_signal(caught[0])


def _create(directory: Path, container_id: str, bundle: Path, config: dict[str, Any],
            pid_file: Path | None, console_socket: Path | None) -> None:
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        raise UsageError(f"container {container_id!r} already exists") from None
    # The container process waits for "created" on this pipe before it waits for
    # `start`: killed before its state was whole (SIGKILL cannot be deferred), `create`
    # left a process waiting on its FIFO for ever, which no command could find.
    created_r, created_w = os.pipe()
    child: subprocess.Popen[bytes] | None = None
    try:
        os.mkfifo(directory / "exec.fifo", 0o600)
        stdio: dict[str, Any] = {}
        if console_socket is not None:
            stdio = _console(console_socket)
        # Never importing from the working directory (-P), where a shim runs this: a
        # bundle's `stockade/__init__.py` ran as root (found by review).
        child = subprocess.Popen(
            module_command("stockade.runtime.init", str(directory.absolute()), str(bundle),
                           str(created_r)),
            start_new_session=True, close_fds=True, pass_fds=(created_r,), cwd="/",
            env={**os.environ, "PYTHONPATH": import_path()}, **stdio)
        for handle in set(stdio.values()):
            os.close(handle)
        started = proc_start_time(child.pid) or 0
        annotations = config.get("annotations") or {}
        ContainerState(container_id, str(bundle), child.pid, started,
                       time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       annotations).save(directory)
        if pid_file is not None:
            _write_pid(pid_file, child.pid)
        os.write(created_w, b"1")
    except BaseException:
        if child is not None:
            # Ended before its directory goes: removed under it, the process wrote a
            # second error line (its module link's path) to the shim's stderr.
            os.close(created_w)
            created_w = -1
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        shutil.rmtree(directory, ignore_errors=True)
        raise
    finally:
        os.close(created_r)
        if created_w >= 0:
            os.close(created_w)  # closed without "1" (an error above): the process ends


def _write_pid(path: Path, pid: int) -> None:
    """`pid` into `path`, whole: through a new file of a name no one can guess (a
    symlink planted at the fixed `.NAME.tmp` had root write the pid through it, found
    by review), renamed into place."""
    try:
        replace_file(path, str(pid).encode())
    except OSError as exc:  # its text named the temporary file, not what to fix
        raise UsageError(f"--pid-file {path}: cannot write it ({exc.strerror})") from None


def _console(path: Path) -> dict[str, Any]:
    """A pseudo-terminal for the container: the master goes to the console socket (as
    runc sends it), the slave becomes the process's stdio."""
    master, slave = os.openpty()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        socket.send_fds(sock, [os.ttyname(slave).encode()], [master])
    os.close(master)
    return {"stdin": slave, "stdout": slave, "stderr": slave}


@runtime.command()
@click.argument("container_id")
@click.pass_obj
def start(ctx: _Context, container_id: str) -> None:
    """Start the created container ID (release its waiting process)."""
    directory = container_dir(ctx.root, container_id)
    state = ContainerState.load(directory)
    if status_of(state, directory) != "created":
        raise UsageError(f"container {container_id!r} is not in the created state")
    fd = os.open(directory / "exec.fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        deadline = time.monotonic() + 30
        while not (_readable(fd) and os.read(fd, 1)):
            if proc_start_time(state.pid) != state.start_time:
                raise UsageError(f"container {container_id!r} exited before it started")
            if time.monotonic() > deadline:
                raise UsageError(f"container {container_id!r} did not start in 30 s")
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            (directory / "exec.fifo").unlink()


def _readable(fd: int) -> bool:
    import select

    ready, _, _ = select.select([fd], [], [], 0.05)
    return bool(ready)


@runtime.command()
@click.argument("container_id")
@click.pass_obj
def state(ctx: _Context, container_id: str) -> None:
    """Print the state of container ID as JSON."""
    directory = container_dir(ctx.root, container_id)
    saved = ContainerState.load(directory)
    status = status_of(saved, directory)
    click.echo(json.dumps({
        "ociVersion": OCI_VERSION, "id": saved.id, "status": status,
        "pid": saved.pid if status != "stopped" else 0, "bundle": saved.bundle,
        "rootfs": str(Path(saved.bundle) / "rootfs"), "created": saved.created,
        "owner": "", "annotations": saved.annotations}, indent=2))


_SIGNALS = {name.removeprefix("SIG"): int(value)
            for name, value in signal.Signals.__members__.items()}


@runtime.command()
@click.argument("container_id")
@click.argument("signal_name", default="SIGTERM")
@click.option("--all", "-a", "all_", is_flag=True, help="Signal every process (there is one).")
@click.pass_obj
def kill(ctx: _Context, container_id: str, signal_name: str, all_: bool) -> None:
    """Send SIGNAL (name or number; default SIGTERM) to container ID."""
    directory = container_dir(ctx.root, container_id)
    saved = ContainerState.load(directory)
    number = int(signal_name) if signal_name.isascii() and signal_name.isdigit() \
        and len(signal_name) <= 3 else \
        _SIGNALS.get(signal_name.upper().removeprefix("SIG"))
    # os.kill's EINVAL for a number no signal has was a bare errno, exit 1. 0 checks
    # that the process exists, as kill(2) and runc take it.
    if number is None or not 0 <= number <= signal.SIGRTMAX:
        raise UsageError(f"unknown signal {signal_name!r} (a name, or 0-{signal.SIGRTMAX})")
    if status_of(saved, directory) == "stopped":
        raise UsageError(f"container {container_id!r} is not running")
    with contextlib.suppress(ProcessLookupError):
        os.kill(saved.pid, number)


@runtime.command()
@click.argument("container_id")
@click.option("--force", "-f", is_flag=True, help="Kill the container if it still runs.")
@click.pass_obj
def delete(ctx: _Context, container_id: str, force: bool) -> None:
    """Delete container ID (stopped, or any state with --force)."""
    directory = container_dir(ctx.root, container_id)
    if not directory.exists():
        if force:
            if lock_path(ctx.root, container_id).exists():  # a killed create's lock
                with id_lock(ctx.root, container_id):
                    pass
            return
        raise UsageError(f"container {container_id!r} does not exist")
    with id_lock(ctx.root, container_id):
        _delete(directory, container_id, force)


def _delete(directory: Path, container_id: str, force: bool) -> None:
    if not (directory / "state.json").exists():
        if force:
            # What a `create` killed before its state was whole left (its container
            # process ends by itself): the id could be neither used nor deleted.
            shutil.rmtree(directory, ignore_errors=True)
            return
        raise UsageError(f"container {container_id!r} does not exist")
    saved = ContainerState.load(directory)
    if status_of(saved, directory) != "stopped":
        if not force:
            raise UsageError(f"container {container_id!r} is still running; use --force")
        with contextlib.suppress(ProcessLookupError):
            os.kill(saved.pid, signal.SIGKILL)
    shutil.rmtree(directory, ignore_errors=True)


@runtime.command()
def features() -> None:
    """Print what this runtime supports (runc's `features` JSON)."""
    click.echo(json.dumps({
        "ociVersionMin": "1.0.0", "ociVersionMax": OCI_VERSION, "hooks": [],
        "mountOptions": ["ro", "rw", "bind", "rbind"],
        "linux": {"namespaces": [], "capabilities": [], "cgroup": {"v1": False, "v2": False}},
        "annotations": {"io.stockade.profile": "strict|default|permissive",
                        "io.stockade.timeout": "DURATION", "io.stockade.fuel": "N",
                        "org.opencontainers.image.platform": "wasi/wasm"},
    }, indent=2))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: errors are one line on stderr and in --log, never a traceback."""
    context: _Context | None = None
    try:
        with runtime.make_context("stockade-runtime", list(sys.argv[1:] if argv is None
                                                           else argv)) as ctx:
            context = _Context(ctx.params["root"], ctx.params.get("log"),
                               ctx.params.get("log_format") or "text")
            runtime.invoke(ctx)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(125)
    except StockadeError as exc:
        (context or _Context(Path("."), None, "text")).report(exc.message)
        sys.exit(exc.exit_code)
    except OSError as exc:
        (context or _Context(Path("."), None, "text")).report(str(exc))
        sys.exit(1)
