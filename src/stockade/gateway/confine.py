"""Defence in depth for a gateway worker process once it holds its listening socket.

`confine_server_process` is the one place a gateway worker gives up what it does not
need to serve: it runs right after the socket is bound and before any thread starts
(capabilities are per thread), so every thread and every pool worker started later
inherits the result. Today it drops all capabilities but file access (which the
AoT cache, the state directory and the pools' cgroups need), sets `no_new_privs` and
turns off core dumps; each step is reported, never raised.
"""

from __future__ import annotations

import ctypes
import os
import resource

from ..isolate.privileges import drop_capabilities
from ..isolate.protections import Protection

__all__ = ["confine_server_process"]

_PR_SET_NO_NEW_PRIVS = 38


def _no_new_privs() -> Protection:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return Protection("no_new_privs", False, os.strerror(ctypes.get_errno()))
    return Protection("no_new_privs", True, "exec can never grant privileges")


def _no_core() -> Protection:
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        return Protection("rlimit core", False, str(exc))
    return Protection("rlimit core", True, "no core dumps (request bodies stay in memory)")


def confine_server_process() -> list[Protection]:
    """Confine the calling gateway worker process (see the module docstring); returns
    what was applied, each protection active or unavailable with the reason."""
    return [drop_capabilities(), _no_new_privs(), _no_core()]
