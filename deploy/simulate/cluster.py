#!/usr/bin/env python3
"""A Stockade cluster on one machine: N `stockade serve` replicas as separate "nodes",
one `redis-server` and HAProxy in front, all from the same manifest.

    deploy/simulate/cluster.py up   --replicas 3 --state redis --manifest stockade.toml
    deploy/simulate/cluster.py status
    deploy/simulate/cluster.py down

Each node is a network namespace with its own address on a private bridge (as root, with
`ip netns`); where namespaces cannot be made, the nodes get distinct loopback addresses
(127.0.0.x) instead, and `up` says why. Redis listens on the bridge's address, HAProxy
on 127.0.0.1 (`--port`, default a free one), checking every replica's /readyz.

Everything lives in one run directory (`--dir`, default `$TMPDIR/stockade-cluster`):
`cluster.json` (the topology), `pids/NAME.pid`, `logs/NAME.log`, each node's state,
cache and config directories, `haproxy.cfg` and `stockade.toml` (the manifest with its
`[state]` table set by `--state`). `down` stops every process by the PID it recorded
(SIGTERM, then SIGKILL after `--grace` seconds) and removes the namespaces and the bridge.

Exit codes: 0 done, 1 a component failed to start (everything started is stopped
again), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["Cluster", "Node", "ClusterError", "main"]

# Processes this process started, by PID: reaped through their Popen (a Popen dropped
# while its process runs is reported as a leak).
_children: dict[int, subprocess.Popen[bytes]] = {}
START_TIMEOUT = 90.0  # seconds for every replica to answer /readyz
STATE_FILE = "cluster.json"


class ClusterError(Exception):
    """A component failed to start or stop; the message says which and where its log is."""


@dataclass
class Node:
    """One replica: its name, network namespace (None on loopback), address and port."""

    name: str
    address: str
    port: int
    netns: str | None = None
    veth: str | None = None

    @property
    def url(self) -> str:
        """The replica's own URL, reachable from the host's namespace."""
        return f"http://{self.address}:{self.port}"


@dataclass
class Cluster:
    """The topology of a simulated cluster, saved as `cluster.json` in `run_dir`."""

    run_dir: Path
    replicas: int = 3
    state: str = "local"
    manifest: str = ""
    port: int = 0
    workers: int = 1
    on_unavailable: str = "fail_closed"
    redis_password: str = ""
    mode: str = "netns"  # or "loopback"
    fallback_reason: str = ""
    bridge: str | None = None
    bridge_address: str = ""
    redis_port: int = 0
    manifest_file: str = ""  # the manifest the replicas serve
    nodes: list[Node] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)

    # -- paths ---------------------------------------------------------------------------

    def path(self, *parts: str) -> Path:
        """A path inside the run directory."""
        return self.run_dir.joinpath(*parts)

    @property
    def url(self) -> str:
        """The load balancer's URL: the cluster as its clients see it."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        """`redis://HOST:PORT/0` of the cluster's Redis (empty with local state)."""
        return f"redis://{self.bridge_address}:{self.redis_port}/0" if self.redis_port else ""

    def save(self) -> None:
        """Write `cluster.json` (atomically: `down` must always find a whole file)."""
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        partial = self.path(STATE_FILE + ".part")
        partial.write_text(json.dumps(data, indent=2))
        partial.replace(self.path(STATE_FILE))

    @classmethod
    def load(cls, run_dir: Path) -> Cluster:
        """The cluster recorded in `run_dir`. Raises ClusterError when there is none."""
        try:
            data = json.loads((run_dir / STATE_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise ClusterError(f"no cluster in {run_dir}: {exc}") from None
        data["run_dir"] = Path(data["run_dir"])
        data["nodes"] = [Node(**node) for node in data["nodes"]]
        return cls(**data)

    # -- up ------------------------------------------------------------------------------

    def up(self) -> None:
        """Start Redis (with `state = "redis"`), the replicas and HAProxy, and wait until
        every replica is ready and HAProxy serves. On failure everything started is
        stopped again and ClusterError raised."""
        for sub in ("pids", "logs"):
            self.path(sub).mkdir(parents=True, exist_ok=True)
        self.save()
        try:
            self._network()
            self.save()
            if self.state == "redis":
                self.start_redis()
            self._write_manifest()
            for node in self.nodes:
                self._start_replica(node)
            self.save()
            for node in self.nodes:
                self._wait_ready(node)
            self._start_haproxy()
            self.save()
            self._wait_balancer()
        except BaseException:
            self.down()
            raise

    def _network(self) -> None:
        # Names and a /24 of their own: clusters (other tests, other users) may coexist.
        tag = secrets.token_hex(3)
        used = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        while True:
            subnet = f"10.{secrets.choice(range(200, 250))}.{secrets.randbelow(250)}"
            if f" {subnet}." not in used:
                break
        reason = _netns_unavailable()
        if reason:
            self.mode, self.fallback_reason = "loopback", reason
            print(f"cluster: network namespaces unavailable ({reason}): nodes get "
                  "distinct loopback addresses instead", file=sys.stderr)
            self.bridge_address = "127.0.0.1"
            self.nodes = [Node(f"node{i}", f"127.0.0.{10 + i}", 8080)
                          for i in range(1, self.replicas + 1)]
            return
        self.bridge = f"skbr{tag}"
        self.bridge_address = f"{subnet}.1"
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(1, self.replicas + 1):
            node = Node(f"node{i}", f"{subnet}.{10 + i}", 8080, netns=f"sk{tag}n{i}",
                        veth=f"sk{tag}v{i}")
            self.nodes.append(node)
            self.save()  # so `down` finds what exists if the next step fails
            assert node.netns is not None and node.veth is not None
            _ip("netns", "add", node.netns)
            _ip("link", "add", node.veth, "type", "veth", "peer", "name", "eth0",
                "netns", node.netns)
            _ip("link", "set", node.veth, "master", self.bridge, "up")
            _ip("-n", node.netns, "addr", "add", f"{node.address}/24", "dev", "eth0")
            _ip("-n", node.netns, "link", "set", "eth0", "up")
            _ip("-n", node.netns, "link", "set", "lo", "up")
            _ip("-n", node.netns, "route", "add", "default", "via", self.bridge_address)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        log = self.path("logs", f"{name}.log").open("ab")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        _children[process.pid] = process
        self.pids[name] = process.pid
        self.path("pids", f"{name}.pid").write_text(f"{process.pid}\n")
        self.save()
        return process.pid

    def start_redis(self) -> None:
        """Start redis-server on the bridge's address (again on the same port after
        `kill("redis")`: the replicas reconnect to it)."""
        redis = shutil.which("redis-server")
        if redis is None:
            raise ClusterError("redis-server is not installed (Debian: redis-server)")
        self.redis_port = self.redis_port or _free_port(self.bridge_address)
        argv = [redis, "--bind", self.bridge_address, "--port", str(self.redis_port),
                "--save", "", "--appendonly", "no", "--protected-mode", "no",
                "--dir", str(self.path())]
        if self.redis_password:
            argv += ["--requirepass", self.redis_password]
        self._spawn("redis", argv)
        _wait_port(self.bridge_address, self.redis_port, 10.0, self.path("logs", "redis.log"))

    def _write_manifest(self) -> None:
        """The manifest every replica serves: the user's, plus `[state]` from `--state`
        (written beside it, as `.cluster-*.toml`: module paths are relative to it)."""
        source = Path(self.manifest).resolve()
        text = source.read_text()
        if "state" in tomllib.loads(text):
            raise ClusterError(f"{source}: has a [state] table; the cluster sets it from "
                               "--state (remove it)")
        if self.state != "redis":
            self.manifest_file = str(source)
            return
        text += (f'\n[state]\nbackend = "{self.redis_url}"\n'
                 f'on_unavailable = "{self.on_unavailable}"\n')
        target = source.with_name(f".cluster-{os.getpid()}-{source.name}")
        target.write_text(text)
        self.manifest_file = str(target)
        self.save()
        shutil.copy(target, self.path("stockade.toml"))

    def _start_replica(self, node: Node) -> None:
        home = self.path(node.name)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("STOCKADE_", "XDG_"))}
        env.update(STOCKADE_STATE_DIR=str(home / "state"),
                   STOCKADE_CACHE_DIR=str(home / "cache"),
                   STOCKADE_CONFIG_DIR=str(home / "config"),
                   STOCKADE_REPLICA_ID=node.name,
                   OTEL_SERVICE_NAME="stockade-gateway",
                   STOCKADE_TELEMETRY="off")
        if self.redis_password:
            env["STOCKADE_REDIS_PASSWORD"] = self.redis_password
        argv = [sys.executable, "-m", "stockade", "serve", "--config", self.manifest_file,
                "--host", node.address, "--port", str(node.port),
                "--workers", str(self.workers)]
        if node.netns:
            argv = ["ip", "netns", "exec", node.netns, *argv]  # execs: the PID is serve's
        self._spawn(node.name, argv, env)

    def _wait_ready(self, node: Node) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not _alive(self.pids[node.name]):
                raise ClusterError(f"{node.name} exited: see {self.path('logs', node.name)}.log")
            if _status(f"{node.url}/readyz") == 200:
                return
            time.sleep(0.1)
        raise ClusterError(f"{node.name} not ready within {START_TIMEOUT:.0f} s: see "
                           f"{self.path('logs', node.name)}.log")

    def _start_haproxy(self) -> None:
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(haproxy).exists():
            raise ClusterError("haproxy is not installed (Debian: haproxy)")
        self.port = self.port or _free_port("127.0.0.1")
        config = self.path("haproxy.cfg")
        config.write_text(haproxy_config(self))
        check = subprocess.run([haproxy, "-c", "-q", "-f", str(config)],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise ClusterError(f"haproxy.cfg refused: {check.stderr.strip()}")
        # Foreground (-db): its PID is ours to signal, its log goes to logs/haproxy.log.
        self._spawn("haproxy", [haproxy, "-db", "-f", str(config)])

    def _wait_balancer(self) -> None:
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            if not _alive(self.pids["haproxy"]):
                raise ClusterError(f"haproxy exited: see {self.path('logs', 'haproxy.log')}")
            if _status(f"{self.url}/readyz") == 200:
                return
            time.sleep(0.1)
        raise ClusterError("haproxy did not serve within 20 s")

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to a component (`node1`, `redis`, `haproxy`); SIGKILL takes the
        whole node (a replica's worker processes share its session), as a lost host
        would. The component counts as stopped from then on."""
        pid = self.pids.pop(name)
        self.save()
        if sig == signal.SIGKILL:
            _signal(-pid, sig)
        _signal(pid, sig)
        deadline = time.monotonic() + 30.0
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(pid):  # never leave it behind
            _signal(-pid, signal.SIGKILL)
            _signal(pid, signal.SIGKILL)
        self.path("pids", f"{name}.pid").unlink(missing_ok=True)

    # -- down ----------------------------------------------------------------------------

    def down(self, grace: float = 10.0) -> None:
        """Stop every recorded process by PID (SIGTERM, SIGKILL after `grace` seconds),
        remove the namespaces, the bridge and the cluster's manifest. Safe to repeat."""
        order = ["haproxy", *[n.name for n in self.nodes], "redis"]
        names = [n for n in order if n in self.pids] + \
            [n for n in self.pids if n not in order]
        for name in names:
            _signal(self.pids[name], signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name in names:
            while _alive(self.pids[name]) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(self.pids[name]):
                _signal(self.pids[name], signal.SIGKILL)
                # The supervisor's session holds its workers: end them too.
                _signal(-self.pids[name], signal.SIGKILL)
            self.path("pids", f"{name}.pid").unlink(missing_ok=True)
        for node in self.nodes:
            if node.veth:
                _ip("link", "del", node.veth, check=False)
            if node.netns:
                _ip("netns", "del", node.netns, check=False)
        if self.bridge:
            _ip("link", "del", self.bridge, check=False)
        if self.manifest_file and Path(self.manifest_file).name.startswith(".cluster-"):
            Path(self.manifest_file).unlink(missing_ok=True)
        self.pids = {}
        self.save()


def haproxy_config(cluster: Cluster) -> str:
    """HAProxy in front of the replicas: round robin, /readyz checked every 200 ms (a
    draining replica leaves within ~0.5 s), connection failures retried on another
    replica (a request never sent is never lost), requests logged to stdout."""
    servers = "\n".join(
        f"    server {n.name} {n.address}:{n.port} check" for n in cluster.nodes)
    return f"""\
global
    maxconn 4096
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 5s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response

frontend stockade
    bind 127.0.0.1:{cluster.port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    # A loaded replica may answer slowly: a check times out only after 2 s (a draining
    # one answers 503 at once, and is out after 3 checks, ~0.3 s).
    timeout check 2s
    default-server inter 200ms fastinter 100ms downinter 500ms fall 3 rise 2
{servers}
"""


# -- helpers ----------------------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _netns_unavailable() -> str:
    """Why network namespaces cannot be used here, or '' when they can."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no `ip` command (Debian: iproute2)"
    probe = f"skprobe{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"`ip netns add` failed: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ""


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(host: str, port: int, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise ClusterError(f"nothing listens on {host}:{port} after {timeout:.0f} s: see {log}")


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    # Not started by this process (`down` from another one): ask the kernel.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie we cannot reap still "exists": treat it as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="cluster.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "stockade-cluster",
                        help="the run directory (pid files, logs, topology)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--state", choices=["local", "redis"], default="local")
    parser.add_argument("--on-unavailable", choices=["fail_closed", "fail_open"],
                        default="fail_closed")
    parser.add_argument("--manifest", type=Path,
                        default=Path(__file__).resolve().parents[2] / "examples" / "stockade.toml")
    parser.add_argument("--port", type=int, default=0, help="HAProxy's port (0: a free one)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per replica")
    parser.add_argument("--redis-password", default="",
                        help="Redis requirepass (passed as STOCKADE_REDIS_PASSWORD)")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds before SIGKILL")
    args = parser.parse_args(argv)
    run_dir = args.dir.resolve()
    try:
        if args.command == "up":
            if not 1 <= args.replicas <= 32:
                parser.error("--replicas: from 1 to 32")
            if (run_dir / STATE_FILE).exists() and Cluster.load(run_dir).pids:
                raise ClusterError(f"a cluster is already up in {run_dir}: run `down` first")
            if not args.manifest.is_file():
                parser.error(f"--manifest: {args.manifest}: no such file")
            cluster = Cluster(run_dir, args.replicas, args.state, str(args.manifest),
                              args.port, args.workers, args.on_unavailable,
                              args.redis_password)
            cluster.up()
            print(json.dumps({"url": cluster.url, "mode": cluster.mode,
                              "redis": cluster.redis_url,
                              "nodes": {n.name: n.url for n in cluster.nodes}}))
        elif args.command == "down":
            Cluster.load(run_dir).down(args.grace)
        else:
            cluster = Cluster.load(run_dir)
            for name, pid in cluster.pids.items():
                print(f"{name}\t{pid}\t{'up' if _alive(pid) else 'gone'}")
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
