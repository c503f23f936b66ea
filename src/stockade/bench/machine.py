"""What machine a benchmark ran on: CPU, memory, kernel, OS, and tool versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata

__all__ = ["machine_info", "load_average"]


def _first_line(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
    except OSError:
        return platform.system()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (empty where unknown)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, object]:
    """Facts about this machine and the versions of everything measured."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "wasmtime_py": _version("wasmtime"),
        "extism": _version("extism"),
        "node": _first_line(["node", "--version"]),
        "crun": _first_line(["crun", "--version"]),
        "cc": _first_line(["cc", "--version"]),
        "clang": _first_line(["clang", "--version"]),
        "virtualization": _first_line(["systemd-detect-virt"]),
    }
