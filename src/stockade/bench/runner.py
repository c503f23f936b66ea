"""`run_bench`: start one agent per backend, run every workload round-robin, collect;
then the gateway's ratio to its server's ceiling (`gatewayload`), when the plan has it
or `only` names `gateway` (the pseudo-backend of that section).

For each workload the participating backends first run their warm-up iterations, then
`plan.rounds` rounds in which each runs one batch; the order of backends rotates every
round. A backend whose warm-up fails entirely is not run further on that workload (its
error is kept for the report).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from .agents import AgentFailed, AgentHandle
from .artifacts import collect_artifacts
from .backends import Backend, Context, catalogue, precheck
from .hosts.base import Layout
from .hosts.node import node_executable, write_node_script
from .machine import load_average, machine_info
from .plan import NO_GATEWAY, GatewayPlan, Plan
from .results import BackendInfo, BenchResults, Measurement
from .stats import BenchError
from .workloads import Workload, write_payload

__all__ = ["Progress", "Options", "run_bench", "participants", "GATEWAY"]

GATEWAY = "gateway"  # `--only gateway`: the gateway ratio section


class Progress(Protocol):
    """Receives progress: a total once, then advances with a description."""

    def begin(self, total: int) -> None: ...

    def advance(self, description: str, steps: int) -> None: ...

    def note(self, text: str) -> None: ...


class _Silent:
    def begin(self, total: int) -> None:
        pass

    def advance(self, description: str, steps: int) -> None:
        pass

    def note(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class Options:
    """Where things are and what to run. `only` limits backends (native is always kept as
    the baseline when available); `workdir` holds payloads, bundles, logs and the cache."""

    plan: Plan
    layout: Layout
    workdir: Path
    only: tuple[str, ...] = ()


def participants(workload: Workload, backends: Sequence[Backend], plan: Plan) -> list[Backend]:
    """The backends that run `workload` under `plan`."""
    chosen = []
    for backend in backends:
        if workload.group not in backend.groups:
            continue
        if workload.group == "compute":
            sizes = plan.interpreter_variants if backend.interpreter else plan.variants
            if workload.variant not in sizes:
                continue
        chosen.append(backend)
    return chosen


def _context(workdir: Path, layout: Layout) -> Context:
    node = node_executable()
    script = write_node_script(workdir)
    stockade = shutil.which("stockade") or shutil.which(str(Path(sys.executable).parent /
                                                            "stockade"))
    system_python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    return Context(workdir=workdir, cache_dir=workdir / "aot-cache", stockade=stockade,
                   node=node, node_script=script, system_python=system_python,
                   vm_dir=layout.real_dir.parent / "vm")


def _select(backends: list[Backend], only: tuple[str, ...]) -> list[Backend]:
    if not only:
        return backends
    known = {b.name for b in backends}
    unknown = [name for name in only if name not in known and name != GATEWAY]
    if unknown:
        raise BenchError(f"unknown backend(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(sorted(known | {GATEWAY}))}")
    if set(only) == {GATEWAY}:
        return []  # the gateway section alone
    keep = set(only) | {"native"}
    return [b for b in backends if b.name in keep]


def run_bench(options: Options, progress: Progress | None = None) -> BenchResults:
    """Run the plan and return the results (nothing is written to disk but the workdir)."""
    sink = progress or _Silent()
    plan, layout, workdir = options.plan, options.layout, options.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = _context(workdir, layout)
    backends = _select(catalogue(ctx), options.only)
    started = datetime.now(UTC)
    clock = time.perf_counter()
    load_before = load_average()

    workloads = plan.workloads()
    skipped_workloads: dict[str, str] = {}
    for workload in workloads:
        if workload.payload:
            write_payload(workdir, workload.payload)
        module = layout.wasm(workload.guest)
        if not module.exists():
            hint = ("run scripts/fetch_real_guests.py, or `stockade python -c pass` once"
                    if workload.guest == "python" else "run scripts/build_guests.py")
            skipped_workloads[workload.key] = f"{module} is missing ({hint})"
    workloads = [w for w in workloads if w.key not in skipped_workloads]

    infos: list[BackendInfo] = []
    agents: dict[str, AgentHandle] = {}
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    try:
        for backend in backends:
            info = BackendInfo(backend.name, backend.title, backend.kind, backend.note,
                               reference=backend.reference)
            infos.append(info)
            info.skipped = precheck(backend)
            if info.skipped is None:
                agent = AgentHandle(backend, layout, logs / f"{backend.name}.log")
                try:
                    agent.start()
                    agents[backend.name] = agent
                except AgentFailed as exc:
                    agent.close(interrupt=True)  # one that did not answer in time too
                    info.skipped = str(exc)
                except BaseException:
                    agent.close(interrupt=True)
                    raise
            if info.skipped is not None:
                sink.note(f"skipped {backend.name}: {info.skipped}")
        live = [b for b in backends if b.name in agents]
        measurements = _measure(plan, workloads, live, agents, workdir, sink) \
            if backends else []
        artifacts = collect_artifacts(layout, ctx.cache_dir, workdir, agents) \
            if backends else {}
    except BaseException:  # stopped (Ctrl-C, SIGTERM) or failed: the agents too, now
        for agent in agents.values():
            agent.close(interrupt=True)
        raise
    finally:
        for agent in agents.values():
            agent.close()
    gateway = _gateway(plan, options.only, layout, sink)

    meta = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - clock, 1),
        "plan": plan.describe(),
        "machine": machine_info(),
        "load_before": load_before,
        "load_after": load_average(),
    }
    return BenchResults(meta=meta, backends=infos, workloads=[w.to_dict() for w in workloads],
                        measurements=measurements, artifacts=artifacts,
                        skipped_workloads=skipped_workloads, gateway=gateway)


def _gateway(plan: Plan, only: tuple[str, ...], layout: Layout,
             sink: Progress) -> dict[str, object]:
    """The gateway section: measured when the plan has it (and `only` does not leave it
    out) or `only` names it; otherwise {"skipped": why}. A failure is kept as the
    reason, the rest of the run stands."""
    from .gatewayload import measure_ratios, missing

    if only and GATEWAY not in only:
        return {"skipped": f"not among --only {', '.join(only)}"}
    settings = plan.gateway or (GatewayPlan() if GATEWAY in only else None)
    if settings is None:
        return {"skipped": NO_GATEWAY}
    functions = layout.wasm_dir.parent / "functions"
    reason = missing(functions)
    if reason is not None:
        sink.note(f"skipped the gateway ratio: {reason}")
        return {"skipped": reason}
    sink.note(f"gateway ratio: {settings.rounds} interleaved rounds of "
              f"{settings.seconds:g} s per server")
    try:
        return measure_ratios(functions, rounds=settings.rounds, seconds=settings.seconds)
    except BenchError as exc:
        sink.note(f"gateway ratio failed: {exc}")
        return {"skipped": f"failed: {exc}"}


def _measure(plan: Plan, workloads: list[Workload], backends: list[Backend],
             agents: dict[str, AgentHandle], workdir: Path, sink: Progress) -> list[Measurement]:
    schedule = [(w, participants(w, backends, plan)) for w in workloads]
    total = sum(plan.warmup.get(b.cost_for(w.group), 0) + plan.batch(w.group, b.cost_for(w.group))
                * plan.rounds for w, group in schedule for b in group)
    sink.begin(total)
    found: list[Measurement] = []
    for workload, group in schedule:
        request = workload.request(workdir)
        table = {b.name: Measurement(b.name, workload.key) for b in group}
        active = []
        for backend in group:
            cost = backend.cost_for(workload.group)
            if plan.batch(workload.group, cost) == 0:
                continue
            warmup = plan.warmup.get(cost, 0)
            try:
                samples = agents[backend.name].run(request, warmup) if warmup else []
            except AgentFailed as exc:
                table[backend.name].error = str(exc)
                continue
            sink.advance(f"{workload.label}: {backend.name} warm-up", warmup)
            if samples and not any(s.ok for s in samples):
                table[backend.name].error = samples[0].error
                table[backend.name].failures = len(samples)
                continue
            active.append(backend)
        for round_no in range(plan.rounds):
            shift = round_no % len(active) if active else 0
            for backend in active[shift:] + active[:shift]:
                measurement = table[backend.name]
                batch = plan.batch(workload.group, backend.cost_for(workload.group))
                if measurement.error and measurement.count == 0 and measurement.failures:
                    sink.advance(f"{workload.label}: {backend.name}", batch)
                    continue
                try:
                    for sample in agents[backend.name].run(request, batch):
                        measurement.add(sample)
                except AgentFailed as exc:
                    measurement.error = str(exc)
                sink.advance(f"{workload.label}: {backend.name}", batch)
        found.extend(table.values())
    return found
