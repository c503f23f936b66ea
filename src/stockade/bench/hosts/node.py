"""Node.js `node:wasi` (V8) as a host: warm (one node process, a fresh WASI instance per
request, module compiled once) and per request (`node host.mjs once MODULE ARGS`).

The host script is kept here as text and written into the benchmark's work directory,
so the package needs no data files.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..guestio import fingerprint, parse_report
from .base import Host, HostUnavailable, Layout, Request, Sample, scratch_root

__all__ = ["NodeHost", "NODE_HOST_JS", "NODE_FLAGS", "write_node_script", "node_executable"]

# Node 20's V8 aborted (SIGABRT/SIGSEGV) in 9 of 12 runs of the 16 MiB memcpy guest on
# these machines, never with its helper threads off; the report says so.
NODE_FLAGS = ("--no-warnings", "--single-threaded")

NODE_HOST_JS = r"""
import { WASI } from 'node:wasi';
import { readFileSync, readSync, writeSync, openSync, closeSync } from 'node:fs';
import { createHash } from 'node:crypto';

// Synchronous throughout: running guests from inside an async line iterator crashed V8
// (SIGSEGV) on guests with large memories.
const [mode, ...rest] = process.argv.slice(2);
const modules = new Map();
function compiled(path) {
  let module = modules.get(path);
  if (!module) {
    module = new WebAssembly.Module(readFileSync(path));
    modules.set(path, module);
  }
  return module;
}
function runOnce(path, args, stdin, stdout, stderr) {
  const wasi = new WASI({ version: 'preview1', args: [path, ...args], env: {},
                          stdin, stdout, stderr, returnOnExit: true });
  const instance = new WebAssembly.Instance(compiled(path), wasi.getImportObject());
  return wasi.start(instance);
}
let pending = Buffer.alloc(0);
function nextLine() {
  const chunk = Buffer.alloc(65536);
  for (;;) {
    const at = pending.indexOf(10);
    if (at >= 0) {
      const line = pending.subarray(0, at).toString();
      pending = pending.subarray(at + 1);
      return line;
    }
    let got;
    try { got = readSync(0, chunk, 0, chunk.length, null); }
    catch (e) { if (e.code === 'EAGAIN') continue; throw e; }
    if (got === 0) return null;
    pending = Buffer.concat([pending, chunk.subarray(0, got)]);
  }
}
if (mode === 'once') {
  const [path, ...args] = rest;
  process.exitCode = runOnce(path, args, 0, 1, 2);
} else {
  const outPath = rest[0] + '/stdout', errPath = rest[0] + '/stderr';
  for (let line = nextLine(); line !== null; line = nextLine()) {
    const req = JSON.parse(line);
    compiled(req.module);
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const input = openSync(req.stdin || '/dev/null', 'r');
    const out = openSync(outPath, 'w+'), err = openSync(errPath, 'w+');
    let code, error = '';
    try {
      code = runOnce(req.module, req.args, input, out, err);
    } catch (e) {
      code = -1; error = String(e).split('\n')[0];
    }
    for (const fd of [input, out, err]) closeSync(fd);
    const stdout = readFileSync(outPath), stderr = readFileSync(errPath);
    const t1 = process.hrtime.bigint();
    const cpu = process.cpuUsage(cpu0);
    writeSync(1, JSON.stringify({
      wall_ns: Number(t1 - t0), cpu_us: cpu.user + cpu.system, code, error,
      rss_kb: process.resourceUsage().maxRSS,
      stdout: stdout.length <= 4096 ? stdout.toString('base64') : null,
      stdout_sha256: createHash('sha256').update(stdout).digest('hex').slice(0, 16),
      stderr: stderr.subarray(Math.max(0, stderr.length - 512)).toString('base64'),
    }) + '\n');
  }
}
"""


def node_executable() -> str | None:
    """Path of `node`, or None."""
    return shutil.which("node")


def write_node_script(directory: Path) -> Path:
    """Write the host script into `directory` and return its path."""
    path = directory / "stockade-bench-node-host.mjs"
    path.write_text(NODE_HOST_JS)
    return path


class NodeHost(Host):
    """A long-lived `node` process serving requests over JSON lines.

    Options: `node` (executable), `script` (from `write_node_script`).
    """

    def __init__(self, layout: Layout, options: dict[str, Any]) -> None:
        super().__init__(layout, options)
        node = options.get("node") or node_executable()
        if not node:
            raise HostUnavailable("node is not installed")
        self.scratch = tempfile.TemporaryDirectory(prefix="stockade-bench-node-",
                                                   dir=scratch_root())
        self.cmd = [str(node), *NODE_FLAGS, str(options["script"]), "serve",
                    self.scratch.name]
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[str]:
        return subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def _crashed(self) -> Sample:
        # node itself died (V8 has aborted here on guests with large memories): record the
        # failure and start a new node so later requests still run.
        code = self.proc.wait()
        self._stop()
        self.proc = self._spawn()
        return Sample(wall_ms=0.0, ok=False, error=f"node crashed (exit code {code})")

    def run(self, request: Request) -> Sample:
        """Send one request; node times it (fresh WASI instance, output read back)."""
        if self.proc.stdin is None or self.proc.stdout is None:
            raise HostUnavailable("node host has no pipes")
        message = {"module": str(self.layout.wasm(request.guest)), "args": list(request.args),
                   "stdin": request.stdin}
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self._crashed()
        line = self.proc.stdout.readline()
        if not line:
            return self._crashed()
        reply = json.loads(line)
        stderr = base64.b64decode(reply["stderr"])
        if reply["stdout"] is not None:
            digest, hot = fingerprint(base64.b64decode(reply["stdout"]), stderr)
        else:
            report = parse_report(stderr)
            digest, hot = reply["stdout_sha256"], None if report is None else report.hot_ns
        ok = reply["code"] == 0
        error = reply["error"] or ("" if ok else f"exit {reply['code']}")
        return Sample(wall_ms=reply["wall_ns"] / 1e6, cpu_ms=reply["cpu_us"] / 1000.0,
                      rss_kb=int(reply["rss_kb"]), hot_ns=hot, digest=digest, ok=ok, error=error)

    def _stop(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass

    def close(self) -> None:
        """Stop the node process and remove scratch files."""
        self._stop()
        self.scratch.cleanup()
