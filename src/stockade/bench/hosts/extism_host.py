"""The peer Python host: the Extism Python SDK running a WASI command module.

Extism calls an export with an input buffer; it has no argv and no stdin for WASI
commands, so only the hello guest runs here. Its WASI stdout is the process's fd 1, which
the agent points at a capture file; `EXTISM_ENABLE_WASI_OUTPUT=1` must be set before the
SDK loads (the agent does it). `options["reuse"]` keeps one plugin for every call instead
of a fresh plugin per call.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .base import Host, HostUnavailable, Layout, Request, Sample, finish_sample

__all__ = ["ExtismHost", "EXTISM_ENV"]

EXTISM_ENV = {"EXTISM_ENABLE_WASI_OUTPUT": "1"}


class ExtismHost(Host):
    """`extism.Plugin(compiled, wasi=True).call("_start", b"")` per request."""

    def __init__(self, layout: Layout, options: dict[str, Any]) -> None:
        super().__init__(layout, options)
        try:
            import extism  # type: ignore[import-untyped]
        except ImportError as exc:
            raise HostUnavailable(f"the Extism Python SDK is not installed: {exc}") from exc
        self.extism = extism
        self.reuse = bool(options.get("reuse", False))
        self.capture = int(options["capture_fd"])
        self.compiled: dict[str, Any] = {}
        self.plugins: dict[str, Any] = {}

    def _read_capture(self) -> bytes:
        os.lseek(self.capture, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self.capture, 1 << 16):
            chunks.append(chunk)
        os.ftruncate(self.capture, 0)
        os.lseek(self.capture, 0, os.SEEK_SET)
        return b"".join(chunks)

    def run(self, request: Request) -> Sample:
        """One call; the clock covers plugin creation (unless reused), the call and output."""
        if request.args or request.stdin:
            return Sample(wall_ms=0.0, ok=False,
                          error="Extism passes no argv or stdin to WASI commands")
        compiled = self.compiled.get(request.guest)
        if compiled is None:
            data = self.layout.wasm(request.guest).read_bytes()
            compiled = self.extism.extism.CompiledPlugin(data, wasi=True)
            self.compiled[request.guest] = compiled
        started, cpu = time.perf_counter(), time.process_time()
        error = ""
        try:
            plugin = self.plugins.get(request.guest) if self.reuse else None
            if plugin is None:
                plugin = self.extism.Plugin(compiled, wasi=True)
                if self.reuse:
                    self.plugins[request.guest] = plugin
            plugin.call("_start", b"")
        except self.extism.Error as exc:
            error = str(exc).splitlines()[0] if str(exc) else "extism call failed"
        stdout = self._read_capture()
        return finish_sample(started, cpu, stdout, b"", not error, error)
