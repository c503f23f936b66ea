"""A gateway worker's in-process guests share a part of its descriptors: however many
runs hoard files, their opens meet their quota, and the worker keeps accepting
connections for everyone else."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx

from tests.conftest import guest

from .conftest import gateway_env, gateway_with_open_files, module


def test_runs_hoarding_descriptors_meet_their_quota_and_others_are_served(
        tmp_path: Path, shared_cache: Path) -> None:
    """Eight runs of the default profile could hold 2,048 descriptors, though a worker
    keeps 512 beside its connections: under `ulimit -n 1024` the worker sat at 1,024,
    another tenant's request was reset, and the runs' opens failed with EIO, outcome
    `exited` (found by review). In-process guests now share `GUEST_DESCRIPTORS`: a run
    past its room is stopped with `fd_quota`."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("x")
    manifest = tmp_path / "stockade.toml"
    manifest.write_text(f"""
[server]
workers = 1
threads = 8
telemetry = "off"
breakers = false

[tenant.hog]
[tenant.other]

[[function]]
name = "hog"
route = "/hog"
module = "{guest("fdhold.wasm")}"
tenant = "hog"
isolate = "none"
profile = "default"
argv = ["fdhold", "/data/f", "200", "2"]
dirs = ["{data}:/data"]

[[function]]
name = "hello"
route = "/hello"
module = "{module("hello")}"
tenant = "other"
isolate = "none"
""")
    server = gateway_with_open_files(manifest, gateway_env(shared_cache, tmp_path / "state"),
                                     1024)
    try:
        answers: list[httpx.Response] = []

        def hog() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                answers.append(client.get("/hog"))

        hogs = [threading.Thread(target=hog) for _ in range(8)]
        for thread in hogs:
            thread.start()
        for _ in range(20):  # while they hold what they opened
            assert server.client.get("/hello").status_code == 200
        for thread in hogs:
            thread.join()
    finally:
        server.stop()
    problems = [json.loads(answer.text) for answer in answers]
    outcomes = sorted(problem["outcome"] for problem in problems)
    assert len(outcomes) == 8 and "fd_quota" in outcomes, problems
    # Those given room held their 200 and exited 0 (no CGI answer: 502, "exited"); a
    # failed open exits 1.
    failed = [problem for problem in problems
              if problem["outcome"] != "fd_quota" and problem.get("exit_code")]
    assert not failed, failed
