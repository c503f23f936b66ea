"""Names of the shared state's Redis keys: one hash tag per tenant, hostile names safe.

    stockade:{TENANT}:q:t            the tenant's rate (GCRA) and CPU buckets
    stockade:{TENANT}:q:f:FUNCTION   a function's rate bucket
    stockade:{TENANT}:l:t            the tenant's concurrency leases (sorted set, by expiry)
    stockade:{TENANT}:l:f:FUNCTION   a function's concurrency leases
    stockade:{TENANT}:b:KEY          a circuit breaker (KEY: `function:NAME`)
    stockade:{TENANT}:v:KEY          its recent violations (sorted set, by time)

Every key of one tenant carries the same hash tag `{TENANT}`, so one script touches
one Redis Cluster slot. A name is used as is only when it is 1-80 characters of
`[A-Za-z0-9_.:-]` (the manifest's alphabet, and `:` of `function:NAME`); anything else
(braces, new lines, 10 KB) becomes `~` and its SHA-256, which no plain name can equal.
Each name is the last part of its key or sits alone inside the braces, after a fixed
part naming its kind: names can neither collide nor leave their tenant's tag.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

__all__ = ["token", "TenantKeys", "PREFIX"]

PREFIX = "stockade"
_PLAIN = re.compile(r"[A-Za-z0-9_.:-]{1,80}")


def token(name: str) -> str:
    """`name` as a key part: itself when plain (see the module docstring), else
    `~` + the hex SHA-256 of its UTF-8 bytes."""
    if _PLAIN.fullmatch(name):
        return name
    return "~" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


class TenantKeys(NamedTuple):
    """The keys one admission touches (all in the tenant's slot)."""

    tenant_quota: str
    function_quota: str
    tenant_leases: str
    function_leases: str
    breaker: str
    violations: str

    @classmethod
    def of(cls, tenant: str, function: str, breaker: str, prefix: str = PREFIX) -> TenantKeys:
        """The keys of `function` (of `tenant`) and of its breaker `breaker`."""
        base = f"{prefix}:{{{token(tenant)}}}"
        fn, brk = token(function), token(breaker)
        return cls(f"{base}:q:t", f"{base}:q:f:{fn}", f"{base}:l:t", f"{base}:l:f:{fn}",
                   f"{base}:b:{brk}", f"{base}:v:{brk}")
