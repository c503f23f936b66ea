"""Defence in depth for a gateway worker process once it holds its listening socket.

`confine_server_process` is the one place a gateway worker gives up what it does not
need to serve: it runs right after the socket is bound and before any thread starts
(capabilities are per thread), so every thread and every pool worker started later
inherits the result. It drops every capability (root keeps its uid, so the files it
owns stay reachable: the AoT cache, the state directory, the pools' cgroups), sets
`no_new_privs` and turns off core dumps; each step is reported, never raised. The
functions themselves run in pool workers (`poolworker.py`), which confine themselves
further.
"""

from __future__ import annotations

import resource

from ..isolate.identity import drop_privileges, identity_for
from ..isolate.protections import Protection

__all__ = ["confine_server_process"]


def _no_core() -> Protection:
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        return Protection("rlimit core", False, str(exc))
    return Protection("rlimit core", True, "no core dumps (request bodies stay in memory)")


def confine_server_process() -> list[Protection]:
    """Confine the calling gateway worker process (see the module docstring); returns
    what was applied, each protection active or unavailable with the reason."""
    return [*drop_privileges(identity_for(None)), _no_core()]
