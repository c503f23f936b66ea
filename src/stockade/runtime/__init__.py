"""`stockade-runtime`: Stockade as an OCI runtime for wasi/wasm bundles."""

from __future__ import annotations

from .bundle import Bundle, read_bundle

__all__ = ["Bundle", "read_bundle"]
