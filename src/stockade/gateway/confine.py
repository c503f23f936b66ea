"""Defence in depth for a gateway worker process once it holds its listening socket.

`confine_server_process` is the one place a gateway worker gives up what it does not
need to serve: it runs right after the socket is bound and before any thread starts
(capabilities are per thread), so every thread and every pool worker started later
inherits the result. It drops every capability (root keeps its uid, so the files it
owns stay reachable: the AoT cache, the state directory, the pools' cgroups), sets
`no_new_privs`, turns off core dumps and makes the process not dumpable (`not_dumpable`,
the supervisor too); each step is reported, never raised. The
functions themselves run in pool workers (`poolworker.py`), which confine themselves
further.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource

from ..isolate.identity import drop_privileges, identity_for
from ..isolate.protections import Protection

__all__ = ["confine_server_process", "not_dumpable", "log_protections"]

logger = logging.getLogger("stockade.gateway")

_PR_SET_DUMPABLE = 4


def _no_core() -> Protection:
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        return Protection("rlimit core", False, str(exc))
    return Protection("rlimit core", True, "no core dumps (request bodies stay in memory)")


def not_dumpable() -> Protection:
    """Make the calling process not dumpable: another process of the same user can then
    neither trace it nor open its descriptors through /proc (the connection table's
    memfd, which it could write). A process that changes uid is made so by the kernel;
    one started by its user is not."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        return Protection("not dumpable", False, os.strerror(ctypes.get_errno()))
    return Protection("not dumpable", True, "no same-user tracing or /proc/<pid>/fd")


def confine_server_process() -> list[Protection]:
    """Confine the calling gateway worker process (see the module docstring); returns
    what was applied, each protection active or unavailable with the reason."""
    return [*drop_privileges(identity_for(None)), _no_core(), not_dumpable()]


def log_protections(protections: list[Protection]) -> None:
    """One debug line per protection: applied, or unavailable and why."""
    for protection in protections:
        logger.debug("%s: %s (%s)", protection.name,
                     "active" if protection.active else "unavailable", protection.detail)
