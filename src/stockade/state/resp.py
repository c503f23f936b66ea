"""The shared state's script calls in Redis's protocol (RESP), mostly encoded once.

redis-py encodes every argument of every command on every call (~5 µs each in
Python); an admission has twenty. A gate's keys and quota arguments never change, so
they are encoded when the gate is made, and a request encodes only its lease id, its
count of refusals and the releases it carries. `Releases` holds one tenant's queued
releases, already encoded, for the next admission of that tenant or for `RELEASE`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..telemetry.decision import LATEST  # beyond any time, wait or count the store keeps

__all__ = ["bulk", "bulks", "evalsha", "script_load", "Releases", "number", "LATEST"]


def number(text: object, at_most: float = LATEST) -> float:
    """A number a script answered or a breaker stored: finite, 0 to `at_most`. Raises
    ValueError (TypeError for what is not text): `inf` or `1e20` as a breaker's time
    raised OverflowError where it was shown, a Retry-After of `nan` where it was sent."""
    value = float(text)  # type: ignore[arg-type]
    if not 0 <= value <= at_most:  # NaN fails too
        raise ValueError(f"{str(text)[:40]!r} is out of range")
    return value


def bulk(value: str) -> bytes:
    """`value` as a RESP bulk string."""
    data = value.encode("utf-8", "surrogatepass")
    return b"$%d\r\n%s\r\n" % (len(data), data)


def bulks(values: Sequence[str]) -> bytes:
    """`values` as consecutive RESP bulk strings."""
    return b"".join(bulk(value) for value in values)


def evalsha(sha: str, count: int, numkeys: int, *parts: bytes) -> bytes:
    """EVALSHA of the script `sha` with `numkeys` keys: `parts` hold `count` bulk
    strings, keys first."""
    return b"".join((b"*%d\r\n$7\r\nEVALSHA\r\n" % (count + 3), bulk(sha),
                     bulk(str(numkeys)), *parts))


def script_load(source: str) -> bytes:
    """SCRIPT LOAD of the Lua `source`."""
    return b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n" + bulk(source)


class Releases:
    """One tenant's releases not yet sent: for the `RELEASE` script, KEYS = tenant
    quota, tenant leases, then each release's function leases; ARGV = three per
    release (lease id, CPU seconds used, tenant CPU seconds per minute)."""

    __slots__ = ("head", "keys", "args", "count")

    def __init__(self, tenant_quota: str, tenant_leases: str) -> None:
        self.head = bulk(tenant_quota) + bulk(tenant_leases)
        self.keys: list[bytes] = []
        self.args: list[bytes] = []
        self.count = 0

    def add(self, function_leases: bytes, lease_id: str, cpu_seconds: str,
            cpu_limit: bytes) -> None:
        """Queue one release (`function_leases` and `cpu_limit` already encoded)."""
        self.keys.append(function_leases)
        self.args.extend((bulk(lease_id), bulk(cpu_seconds), cpu_limit))
        self.count += 1

    def release(self, sha: str) -> bytes:
        """The `RELEASE` script's call for these releases."""
        return evalsha(sha, 2 + 4 * self.count, 2 + self.count, self.head, *self.keys,
                       *self.args)

    def slots_only(self) -> Releases:
        """These releases charging no CPU: to send again after a round trip that may
        have run them (a lease removed twice is removed once, CPU charged twice is
        charged twice)."""
        again = Releases.__new__(Releases)
        again.head, again.keys, again.count = self.head, list(self.keys), self.count
        none = bulk("0")
        again.args = [none if index % 3 == 1 else arg for index, arg in enumerate(self.args)]
        return again
