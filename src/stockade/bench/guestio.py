"""What benchmark guests print, and how to compare it across backends.

Kernels print one line, ``bench kernel=K size=N hot_ns=T checksum=C`` (stdout, or stderr
for the echo guest whose stdout is the payload). The hot-loop time `T` separates start-up
from work; the checksum must be the same on every backend. Guests without a report line
(hello, CPython) are compared by the SHA-256 of their standard output.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = ["KernelReport", "parse_report", "fingerprint", "output_digest"]

_REPORT = re.compile(
    rb"bench kernel=(?P<kernel>\w+) size=(?P<size>\d+) hot_ns=(?P<hot>\d+) "
    rb"checksum=(?P<checksum>[0-9a-f]+)"
)
# Report lines are short; searching only the tail of a 16 MiB stream keeps parsing cheap.
_TAIL = 512


@dataclass(frozen=True)
class KernelReport:
    """One parsed report line."""

    kernel: str
    size: int
    hot_ns: int
    checksum: str


def parse_report(*streams: bytes) -> KernelReport | None:
    """The last report line found at the end of any of `streams`, or None."""
    for stream in streams:
        matches = list(_REPORT.finditer(stream[-_TAIL:]))
        if matches:
            last = matches[-1]
            return KernelReport(
                kernel=last["kernel"].decode(),
                size=int(last["size"]),
                hot_ns=int(last["hot"]),
                checksum=last["checksum"].decode(),
            )
    return None


def output_digest(stdout: bytes) -> str:
    """Short SHA-256 of a guest's standard output."""
    return hashlib.sha256(stdout).hexdigest()[:16]


def fingerprint(stdout: bytes, stderr: bytes) -> tuple[str, int | None]:
    """(what must agree across backends, hot-loop nanoseconds or None) for one run.

    With a report line on stderr (echo) the payload on stdout is what must agree;
    with one on stdout the kernel, size and checksum must; otherwise the whole stdout.
    """
    report = parse_report(stdout, stderr)
    if report is None:
        return output_digest(stdout), None
    if parse_report(stdout) is None:
        return output_digest(stdout), report.hot_ns
    return f"{report.kernel}:{report.size}:{report.checksum}", report.hot_ns
