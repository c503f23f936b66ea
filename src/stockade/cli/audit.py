"""`stockade audit verify`: check the keyed hash chain of the audit log."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..errors import UsageError
from .paths import PathParam

__all__ = ["audit"]


@click.group("audit")
def audit() -> None:
    """The audit log of security events (violations, denials, quota hits, breaker changes)."""


@audit.command("verify")
@click.argument("path", required=False, type=PathParam("file", "audit log file"))
def verify(path: Path | None) -> None:
    """Verify the audit log (default: audit.jsonl in the state directory), its rotated
    files (PATH.1, PATH.2, ...) and its head.

    Exits 0 when every record is intact, 1 naming the first changed, removed, reordered
    or unkeyed record, a `tamper` record, a head the log does not match (a deleted log
    included), or a symlink or anything but a regular file where a log file should be
    (a log replaced, even by a link to a good copy); 125 when the audit key cannot be
    used (missing is 1, others-readable is 125), when a file cannot be read, when
    PATH names no log at all, or when the state directory can hold none (every run
    there loses its record).
    """
    from ..telemetry import verify as verify_log

    try:
        report = verify_log(path)
    except OSError as exc:
        raise UsageError(f"{path or 'audit log'}: cannot read: {exc.strerror}") from None
    if path is not None and report.ok and not report.records and not os.path.lexists(path):
        # Only the default log may be absent (nothing audited yet): a PATH with nothing
        # there, head or rotated files included, is a typo, not an intact log.
        raise UsageError(f"{path}: no audit log there")
    click.echo(str(report), err=not report.ok)
    if not report.ok:
        sys.exit(1)
