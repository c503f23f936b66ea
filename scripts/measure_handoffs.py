"""How often a gateway request hands a round trip off to `RedisState`'s state thread.

Drives one gate (a tenant with rate and concurrency quotas far from their limits, and a
breaker, as every gateway function has by default) on an event loop at a fixed request
rate against a real `redis-server` it starts, each request holding its lease for
`--service` seconds, and counts what is submitted to the state thread: admission
pipelines (a credit's renewal or a single admission) and release flushes.

    .venv/bin/python scripts/measure_handoffs.py [--rate 1000] [--seconds 4]
        [--service 0.002] [--no-breaker]

Counts, not times: the figure is hand-offs per request. Needs redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from typing import Any

import redis

from stockade.state import GateSpec, LocalState, Quota, StateSettings
from stockade.state.redisgate import RedisGate
from stockade.state.redisstate import RedisState


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(port: int, directory: str) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("measure_handoffs: redis-server is missing")
    process = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port),
                                "--save", "", "--appendonly", "no", "--dir", directory],
                               stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        try:
            with redis.Redis(port=port, socket_timeout=0.5) as client:
                if client.ping():
                    return process
        except redis.ConnectionError:
            time.sleep(0.02)
    process.kill()
    raise SystemExit("measure_handoffs: redis-server did not answer within 10 s")


async def _drive(gate: RedisGate, rate: float, seconds: float, service: float) -> int:
    loop = asyncio.get_running_loop()

    async def request() -> None:
        lease = await gate.admit_async()
        await asyncio.sleep(service)
        lease.release(0.0001)

    tasks = []
    start = loop.time()
    sent = 0
    while loop.time() - start < seconds:
        delay = start + sent / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(request()))
        sent += 1
    await asyncio.gather(*tasks)
    await asyncio.sleep(0.3)  # credits settle, the last releases go
    return sent


def main() -> int:
    """Print the hand-offs per request; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--service", type=float, default=0.002,
                        help="seconds each request holds its lease")
    parser.add_argument("--no-breaker", action="store_true",
                        help="a gate without a breaker (credits live 50 ms, not 20 ms)")
    args = parser.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        server = _start_redis(port, directory)
        try:
            state = RedisState(StateSettings(f"redis://127.0.0.1:{port}/0", timeout=1.0),
                               LocalState(), env={})
            counts: Counter[str] = Counter()
            submit = state._executor.submit

            def counted(fn: Any, *rest: Any) -> Any:
                counts[getattr(fn, "__name__", repr(fn))] += 1
                return submit(fn, *rest)

            state._executor.submit = counted  # type: ignore[method-assign]
            quota = Quota(rate=100_000, burst=100_000, concurrency=1000)
            gate = state.gate(GateSpec("hello", "web", Quota(), quota, 30.0,
                                       None if args.no_breaker else "function:hello"))
            sent = asyncio.run(_drive(gate, args.rate, args.seconds, args.service))
            state.close()
        finally:
            server.terminate()
            server.wait()
    total = sum(counts.values())
    print(f"{sent} requests at {args.rate:g}/s: {counts['_pipeline']} admission pipelines, "
          f"{counts['flush']} release flushes: {total / sent:.4f} hand-offs per request "
          f"(1 in {sent / max(total, 1):.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
