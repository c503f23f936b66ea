"""Which replica this process serves as: `service.instance.id` in telemetry resources
and the `/metrics` replica series.

`STOCKADE_REPLICA_ID` names it (a Kubernetes pod name, a node name); otherwise it is
this host's name and the server's process id, which `stockade serve` hands its worker
processes (so every worker of one server reports one replica).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["replica_id", "REPLICA_ENV"]

REPLICA_ENV = "STOCKADE_REPLICA_ID"


def replica_id(env: Mapping[str, str] | None = None) -> str:
    """`STOCKADE_REPLICA_ID`, else `HOSTNAME-PID` (this process's id)."""
    env = os.environ if env is None else env
    # The kernel's node name is what gethostname() returns; `socket` (and the enums it
    # builds at import) is not worth loading on `stockade run` for it.
    return env.get(REPLICA_ENV) or f"{os.uname().nodename}-{os.getpid()}"
