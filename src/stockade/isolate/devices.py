"""Which block devices a worker writes to, and how to throttle them (`IoThrottle`).

Throttling applies to whole disks, so a partition is mapped to the disk holding it.
Files on virtual file systems (tmpfs, overlay, device number major 0) have no device
to throttle and are skipped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..policy.units import format_size

__all__ = ["IoThrottle", "block_devices", "throttles_for"]


@dataclass(frozen=True)
class IoThrottle:
    """Rates for one disk `device` ("major:minor"): bytes/s and operations/s, None = free."""

    device: str
    write_bps: int | None = None
    write_iops: int | None = None
    read_bps: int | None = None
    read_iops: int | None = None

    def _pairs(self) -> list[tuple[str, int]]:
        pairs = [("wbps", self.write_bps), ("wiops", self.write_iops),
                 ("rbps", self.read_bps), ("riops", self.read_iops)]
        return [(key, value) for key, value in pairs if value is not None]

    def v1_lines(self) -> list[tuple[str, str]]:
        """(file, value) pairs for the v1 blkio controller."""
        files = {"wbps": "write_bps_device", "wiops": "write_iops_device",
                 "rbps": "read_bps_device", "riops": "read_iops_device"}
        return [(f"blkio.throttle.{files[key]}", f"{self.device} {value}")
                for key, value in self._pairs()]

    def v2_line(self) -> str:
        """One line for the v2 `io.max` file."""
        return " ".join([self.device, *(f"{key}={value}" for key, value in self._pairs())])

    def describe(self) -> str:
        """Human form, e.g. '254:0 write 64MiB/s 2000 IOPS'."""
        parts = [self.device]
        if self.write_bps is not None:
            parts.append(f"write {format_size(self.write_bps)}/s")
        if self.write_iops is not None:
            parts.append(f"{self.write_iops} write IOPS")
        if self.read_bps is not None:
            parts.append(f"read {format_size(self.read_bps)}/s")
        if self.read_iops is not None:
            parts.append(f"{self.read_iops} read IOPS")
        return " ".join(parts)


def _whole_disk(major: int, minor: int) -> str | None:
    sysfs = Path(f"/sys/dev/block/{major}:{minor}")
    if not sysfs.exists():
        return None
    if (sysfs / "partition").exists():
        with contextlib.suppress(OSError):
            return (sysfs.resolve().parent / "dev").read_text().strip()
        return None
    return f"{major}:{minor}"


def block_devices(paths: Iterable[Path]) -> list[str]:
    """The distinct whole disks ("major:minor") holding the given existing paths."""
    found: list[str] = []
    for path in paths:
        try:
            dev = path.stat().st_dev
        except OSError:
            continue
        if os.major(dev) == 0:
            continue
        disk = _whole_disk(os.major(dev), os.minor(dev))
        if disk is not None and disk not in found:
            found.append(disk)
    return found


def throttles_for(paths: Iterable[Path], write_bps: int | None, write_iops: int | None,
                  read_bps: int | None, read_iops: int | None) -> tuple[IoThrottle, ...]:
    """One `IoThrottle` per disk behind `paths`; empty when every rate is None."""
    if all(value is None for value in (write_bps, write_iops, read_bps, read_iops)):
        return ()
    return tuple(IoThrottle(device, write_bps, write_iops, read_bps, read_iops)
                 for device in block_devices(paths))
