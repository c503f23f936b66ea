"""`AgentHandle`: the parent's side of an agent process (start, request, close)."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from .backends import Backend
from .hosts.base import Layout, Request, Sample

__all__ = ["AgentHandle", "AgentFailed"]

START_TIMEOUT = 120.0


class AgentFailed(Exception):
    """An agent refused to start or died; the message says why."""


class AgentHandle:
    """A running agent for one backend. Raises AgentFailed from `start` with the skip reason."""

    def __init__(self, backend: Backend, layout: Layout, log: Path) -> None:
        self.backend = backend
        self.layout = layout
        self.log_path = log
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    def start(self) -> None:
        """Start the agent and wait for it to be ready."""
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in close()
        cmd = [*self.backend.prefix, sys.executable, "-m", "stockade.bench.agent"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, bufsize=1)
        hello = {"host": self.backend.host, "layout": self.layout.to_dict(),
                 "options": dict(self.backend.options), "env": dict(self.backend.env)}
        reply = self._ask(hello, START_TIMEOUT)
        if not reply.get("ready"):
            self.close()
            raise AgentFailed(str(reply.get("reason", "agent refused to start")))

    def _ask(self, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise AgentFailed("agent not started")
        try:
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            raise AgentFailed(self._died()) from None
        if timeout is not None and not select.select([proc.stdout], [], [], timeout)[0]:
            raise AgentFailed(f"agent did not answer within {timeout:g} s")
        line = proc.stdout.readline()
        if not line:
            raise AgentFailed(self._died())
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _died(self) -> str:
        code = self.proc.wait() if self.proc is not None else None
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:]
        return f"agent exited with code {code}" + (f": {tail[0]}" if tail else "")

    def run(self, request: Request, count: int) -> list[Sample]:
        """Run `request` `count` times; the agent times each one."""
        message = {"op": "run", "count": count,
                   "request": {"guest": request.guest, "args": list(request.args),
                               "stdin": request.stdin}}
        reply = self._ask(message)
        return [Sample.from_dict(s) for s in reply["samples"]]

    def artifacts(self) -> dict[str, int]:
        """Sizes of compiled artifacts the host made."""
        found: dict[str, int] = self._ask({"op": "artifacts"}, 60.0)["artifacts"]
        return found

    def close(self, interrupt: bool = False) -> None:
        """Ask the agent to stop; kill it if it does not. `interrupt`: the run is being
        stopped (Ctrl-C, SIGTERM): SIGTERM it first, which ends even a batch in progress
        through its host's cleanup. Safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if interrupt and proc.poll() is None:
                proc.terminate()
            try:
                if proc.stdin is not None:
                    proc.stdin.write(json.dumps({"op": "close"}) + "\n")
                    proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
