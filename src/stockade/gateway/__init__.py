"""The serverless gateway: HTTP functions in fresh WebAssembly instances, per request.

    stockade.toml ──load_manifest──► Manifest (functions, tenants, [server])
    Supervisor (server.py)  N worker processes sharing one port, drain, reload
    └── worker: uvicorn + the guarded protocol (protocol.py) ──► GatewayApp.answer
        (app.py) ──► layers: metrics, tracing, errors, routing, limits ──► Invoker: CGI
        environment in, guest run inline or on a thread (fast path or sandbox), CGI
        output out

Only `load_manifest` and the data classes are imported eagerly; the service, app and
supervisor load wasmtime and are imported from their modules.
"""

from __future__ import annotations

from .manifest import FunctionSpec, Manifest, load_manifest, parse_manifest
from .problem import (
    BadGateway,
    BadRequest,
    Forbidden,
    GatewayTimeout,
    HttpProblem,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unavailable,
)
from .settings import Quota, ServerSettings

__all__ = [
    "FunctionSpec",
    "Manifest",
    "Quota",
    "ServerSettings",
    "load_manifest",
    "parse_manifest",
    "HttpProblem",
    "BadRequest",
    "Forbidden",
    "NotFound",
    "MethodNotAllowed",
    "PayloadTooLarge",
    "TooManyRequests",
    "BadGateway",
    "Unavailable",
    "GatewayTimeout",
]
