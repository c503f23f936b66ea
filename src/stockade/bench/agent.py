"""The agent: one process per backend that runs and times guests on request.

Started as ``python -m stockade.bench.agent``; the first line on stdin is the start-up
message ``{"host": NAME, "layout": {...}, "options": {...}, "env": {...}}``; it answers
``{"ready": true}`` or ``{"ready": false, "reason": "..."}``. Then one JSON request per
line: ``{"op": "run", "request": {...}, "count": N}`` -> ``{"samples": [...]}``,
``{"op": "artifacts"}`` -> ``{"artifacts": {...}}``, ``{"op": "close"}``.

Answers go to a duplicate of the original stdout; fd 1 itself is pointed at a capture
file, because some hosts (Extism) let guests write straight to the process's stdout.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import sys
import tempfile
import traceback
from typing import IO, Any

from .hosts import HOSTS, Host, HostUnavailable, Layout, Request, Sample
from .hosts.base import scratch_root

__all__ = ["main", "serve"]


def _build(message: dict[str, Any], capture_fd: int) -> Host:
    os.environ.update(message.get("env", {}))
    name = message["host"]
    entry = HOSTS.get(name)
    if entry is None:
        raise HostUnavailable(f"no host named {name!r}")
    module = importlib.import_module(f"{__package__}.hosts.{entry[0]}")
    options = {**message.get("options", {}), "capture_fd": capture_fd}
    host: Host = getattr(module, entry[1])(Layout.from_dict(message["layout"]), options)
    return host


def _run(host: Host, request: Request) -> Sample:
    try:
        sample = host.run(request)
    except HostUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - a failed run is data, not a crash
        return Sample(wall_ms=0.0, ok=False, error=f"{type(exc).__name__}: {exc}")
    if sample.rss_kb is None:
        sample.rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return sample


def serve(lines: IO[str], answers: IO[str], capture_fd: int) -> None:
    """Answer the start-up message and then requests until `close` or end of input."""

    def answer(data: dict[str, Any]) -> None:
        answers.write(json.dumps(data) + "\n")
        answers.flush()

    try:
        host = _build(json.loads(lines.readline()), capture_fd)
    except HostUnavailable as exc:
        answer({"ready": False, "reason": str(exc)})
        return
    except Exception as exc:  # noqa: BLE001 - reported as the skip reason
        last = traceback.format_exception_only(exc)[-1].strip()
        answer({"ready": False, "reason": f"host failed to start: {last}"})
        return
    answer({"ready": True})
    try:
        for line in lines:
            message = json.loads(line)
            if message["op"] == "run":
                request = Request(**{**message["request"],
                                     "args": tuple(message["request"]["args"])})
                samples = [_run(host, request) for _ in range(int(message["count"]))]
                answer({"samples": [s.to_dict() for s in samples]})
            elif message["op"] == "artifacts":
                answer({"artifacts": host.artifacts()})
            else:
                break
    finally:
        host.close()


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (the harness stopping, or `timeout` signalling the process group) ends the
    agent as Ctrl-C does: the host's `close` runs (scratch directories in /dev/shm, a
    warm VM, node) instead of the process just vanishing."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop: let the cleanup finish
    raise KeyboardInterrupt


def main() -> None:
    """Entry point of `python -m stockade.bench.agent`."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    capture = tempfile.TemporaryFile(dir=scratch_root())
    os.dup2(capture.fileno(), 1)
    serve(sys.stdin, answers, 1)


if __name__ == "__main__":
    main()
