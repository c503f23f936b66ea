"""The container's process: prepare the run, wait for `start`, run the module, exit with
its code (the shim reaps this process and reports that code as the container's).

Run as `python -m stockade.runtime.init STATE_DIR BUNDLE CREATED_FD`, with the
container's stdio; `create` writes one byte to CREATED_FD once the container's state is
whole, and closes it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Wait on `STATE_DIR/exec.fifo`, then run the bundle; returns the exit code."""
    from ..errors import StockadeError

    state_dir, bundle_path = Path(argv[0]), Path(argv[1])
    try:
        from ..cli.execute import refuse_observed, run_observed
        from ..invocation import Invocation
        from .bundle import read_bundle
        from .process import unsigned_process

        read_bundle(bundle_path, state_dir).close()  # refused at `create` already, where it can be
        if not _created(int(argv[2])):
            return 125  # `create` ended (killed) before the container's state was whole
        # Blocks until `start` opens the other end: nothing of the guest runs before.
        fd = os.open(state_dir / "exec.fifo", os.O_WRONLY)
        os.write(fd, b"0")
        os.close(fd)
        # Read and checked again now, and the guest's directories are opened from the
        # descriptors this check was made on: a directory swapped for a symlink since
        # `create`, or while the guest starts, changes nothing the guest sees.
        # The module's link lies in the container's directory: `delete` removes it, also
        # after this process was killed (in the temporary directory it stayed).
        with read_bundle(bundle_path, state_dir) as bundle:
            name = bundle.config.get("annotations", {}).get("io.kubernetes.cri.container-name")
            invocation = Invocation(args=bundle.args, name=name or state_dir.name)
            # Denied as an unsigned module is (126, audited): config.json is signed by no one.
            refusal = unsigned_process(bundle)
            if refusal is not None:
                result = refuse_observed(bundle.module, bundle.policy, invocation, refusal,
                                         None)
            else:
                result = run_observed(bundle.module, bundle.policy, invocation, None, None)
    except StockadeError as exc:
        sys.stderr.write(f"stockade-runtime: {exc.message}\n")
        return exc.exit_code
    except OSError as exc:  # the bundle changed under the run: one line, not a traceback
        sys.stderr.write(f"stockade-runtime: {exc}\n")
        return 125
    for fd, data in ((1, result.stdout), (2, result.stderr)):
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:  # the reader went away: the exit code still tells the shim
            break
    if result.outcome.value != "exited":
        sys.stderr.write(f"stockade-runtime: {result.outcome.value}: {result.message} "
                         f"[exit {result.exit_code}]\n")
    return result.exit_code


def _created(fd: int) -> bool:
    """Whether `create` said the container's state is whole (one byte), not closed the
    pipe first."""
    try:
        return os.read(fd, 1) == b"1"
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
