"""Helpers for the simulated-cluster tests: `deploy/simulate/cluster.py` loaded as a
module, a cluster that is always torn down, a load generator, HAProxy's request log."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from stockade.errors import PolicyError
from stockade.gateway.manifest import parse_manifest

from ..conftest import ROOT

SCRIPT = ROOT / "deploy" / "simulate" / "cluster.py"


def load_script() -> ModuleType:
    """deploy/simulate/cluster.py as a module (it is a script, outside the package)."""
    spec = importlib.util.spec_from_file_location("stockade_cluster_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


script = load_script()


def shared_state_available() -> bool:
    """True when manifests accept `[state] backend = "redis://..."` (the shared-state
    backend is part of this build)."""
    try:
        parse_manifest({"state": {"backend": "redis://127.0.0.1:6379/0"},
                        "function": [{"name": "f", "route": "/f", "module": "f.wasm"}]},
                       Path("probe.toml"))
    except PolicyError as exc:
        if "state" in str(exc):
            return False
        raise
    return True


needs_shared_state = pytest.mark.skipif(
    not shared_state_available(),
    reason="this build has no shared-state backend ([state] backend = \"redis://...\" "
           "is refused): the Redis cluster tests need it")


def needs_tools() -> None:
    """Skip when the machine lacks the cluster's components (the set-up installs them)."""
    for tool in ("haproxy", "redis-server", "ip"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.skip(f"{tool} is not installed (make system installs it)")


@contextmanager
def running_cluster(run_dir: Path, manifest: str, replicas: int = 3, state: str = "local",
                    **options: Any) -> Iterator[Any]:
    """A cluster up for the block, down afterwards whatever happened."""
    needs_tools()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "manifest.toml"
    path.write_text(manifest)
    cluster = script.Cluster(run_dir, replicas, state, str(path), **options)
    try:
        cluster.up()
    except script.ClusterError as exc:
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                         for p in sorted((run_dir / "logs").glob("*.log")))
        pytest.fail(f"cluster did not start: {exc}\n{logs}")
    try:
        yield cluster
    finally:
        cluster.down(grace=15.0)


@dataclass(frozen=True)
class Reply:
    """One request of a load run: when it was sent and answered (monotonic seconds),
    its status (0: no HTTP answer), the client that sent it."""

    sent: float
    done: float
    status: int
    client: int


def hammer(url: str, seconds: float, clients: int, path: str = "/") -> list[Reply]:
    """`clients` threads, each sending requests one after another (keep-alive) for
    `seconds`; every request's reply."""
    replies: list[Reply] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        mine = []
        with httpx.Client(base_url=url, timeout=30.0) as http:
            while (now := time.monotonic()) < stop:
                try:
                    status = http.get(path).status_code
                except httpx.HTTPError:
                    status = 0
                mine.append(Reply(now, time.monotonic(), status, index))
        with lock:
            replies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    return replies


# option httplog: client [date] frontend backend/server timers status bytes cookies
# termination-state connections queues "request"
_LOG = re.compile(r"\] stockade (?P<backend>[^/\s]+)/(?P<server>\S+) \S+ (?P<status>-?\d+) "
                  r"\S+ \S+ \S+ (?P<term>\S{4}) \S+ \S+ \"(?P<method>\S+) (?P<path>\S+)")


def balancer_log(cluster: Any) -> list[dict[str, str]]:
    """HAProxy's request log: backend, server, status, termination state, method, path."""
    text = cluster.path("logs", "haproxy.log").read_text()
    return [m.groupdict() for m in map(_LOG.search, text.splitlines()) if m]


def steady_rate(replies: list[Reply], skip: float) -> float:
    """Accepted (200) requests per second, sent after the first `skip` seconds (once a
    burst allowance is spent), up to the last request sent."""
    start = min(r.sent for r in replies) + skip
    end = max(r.sent for r in replies)
    accepted = sum(1 for r in replies if r.status == 200 and r.sent >= start)
    return accepted / (end - start)
