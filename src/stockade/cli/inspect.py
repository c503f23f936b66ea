"""`stockade inspect`: what a module asks for and what a reviewer should know, never run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..inspect.report import Inspection

__all__ = ["inspect", "read_module", "inspected"]


def module_file(module: str) -> tuple[Path, str]:
    """The file of a MODULE argument and its display name: `oci://REF` is resolved as
    `run` resolves it (`oci.resolve`: from the local store, pulled once when absent)."""
    from .source import module_path

    if module.startswith("oci://"):
        from ..oci import resolve

        return resolve(module).path, module
    path = module_path(module)
    return path, path.name


def read_module(module: str, text: bool = True) -> tuple[bytes, str]:
    """The binary bytes of MODULE (`.wasm`, `oci://REF`, or `.wat` translated unless not
    `text`) and its display name. Raises ModuleNotFound, ModuleError, UsageError or the
    OCI errors; reads at most MAX_MODULE_BYTES."""
    from ..inspect.modulefile import module_binary

    path, name = module_file(module)
    return module_binary(path, name, text), name


def inspected(module: str) -> Inspection:
    """The inspection of MODULE (see `read_module`); ModuleError for a malformed one."""
    from ..inspect.modulefile import inspect_file

    return inspect_file(*module_file(module))


@click.command("inspect")
@click.argument("module")
@click.option("--json", "as_json", is_flag=True, help="One JSON report on stdout.")
@click.option("--policy", "as_policy", is_flag=True,
              help="Print the least-privilege policy TOML that lets the module run.")
def inspect(module: str, as_json: bool, as_policy: bool) -> None:
    """Report what MODULE (.wasm, .wat or oci://REF) imports, declares and carries,
    without running it.

    Imports are grouped by capability (anything Stockade refuses is named), with exports,
    memories and tables, data and element sizes, the start function, the largest
    function bodies and the compile cost, custom sections (producers, name), signatures
    and findings ranked by risk. Exit 126 for a malformed module (the message names the
    offset).
    """
    from ..errors import UsageError
    from ..inspect.least import least_privilege_policy

    if as_policy and as_json:  # TOML was printed where JSON was asked for
        raise UsageError("--policy prints TOML, --json one JSON report: choose one")
    report = inspected(module)
    if as_policy:
        click.echo(least_privilege_policy(report), nl=False)
    elif as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(render(report))


def _size(size: int) -> str:
    from ..policy.units import format_size

    return format_size(size) if size >= 1024 else f"{size} B"


def _list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def render(report: Inspection) -> str:
    """The human report."""
    from ..display import printable as p
    from ..engine.guard import compile_budget

    out = [f"{p(report.name)}  {report.size:,} bytes  sha256 {report.sha256}"]
    caps = report.capabilities
    out.append(f"imports ({caps.total}):" if caps.total else "imports: none")
    for group, names in caps.groups.items():
        short = [n.split(".", 1)[1] if n.startswith("wasi_snapshot_preview1.") else n
                 for n in names]
        out.append(f"  {group:<13} {p(_list(short))}")
    for name, why in caps.denied[:8]:
        out.append(f"  ! {p(name)}: {why}")
    exports = [f"{p(e.name)} ({e.kind})" for e in report.exports]
    out.append(f"exports: {_list(exports) or 'none'}")
    for limits, imported in report.memories:
        page = limits.page_size
        maximum = "no maximum" if limits.maximum is None else \
            f"maximum {_size(limits.maximum * page)}"
        extra = "".join([", shared" if limits.shared else "", ", 64-bit" if limits.is64 else "",
                         ", imported" if imported else ""])
        out.append(f"memory: initial {_size(limits.minimum * page)}, {maximum}{extra}")
    for limits, imported in report.tables:
        maximum = "no maximum" if limits.maximum is None else f"maximum {limits.maximum}"
        out.append(f"table: initial {limits.minimum} elements, {maximum}"
                   + (", imported" if imported else ""))
    segments = report.data_segments
    out.append(f"data: {len(segments)} segments, {_size(report.data_bytes)}"
               + (f" (largest {_size(max(s.size for s in segments))})" if segments else ""))
    out.append(f"elements: {len(report.element_segments)} segments, "
               f"{sum(report.element_segments)} entries")
    out.append(f"start function: {'none' if report.start is None else report.start}")
    largest = ", ".join(f"#{i} {_size(b)} ({n} locals)" for i, b, n in report.largest_bodies())
    out.append(f"functions: {report.imported_functions} imported, {report.defined_functions} "
               f"defined; largest bodies: {largest or 'none'}")
    gc_units = sum(units for units, _, _ in report.work)
    out.append(f"compile cost: about {report.compile_cost:.2f} s of CPU (budget "
               f"{compile_budget(60.0):.0f} s under the default profile)"
               + (f"; GC work {gc_units:,} units (fields initialised, reference barriers)"
                  if gc_units else ""))
    customs = [f"{p(n)} ({_size(b)})" for n, b in report.custom_sections()]
    out.append(f"custom sections: {_list(customs) or 'none'}")
    for field_name, values in report.producers.items():
        out.append(f"  {p(field_name)}: " + p(", ".join(f"{n} {v}".strip() for n, v in values)))
    if report.module_name is not None or report.named_functions:
        out.append(f"  name: module {p(report.module_name or '-')}, "
                   f"{report.named_functions} functions named")
    if report.signature_error:
        out.append(f"signatures: unreadable ({report.signature_error})")
    elif report.signatures:
        out.append("signatures (not verified: `verify --key`): " + _list(
            [f"key id {s['key_id'] or '(none)'} ({s['algorithm']})" for s in report.signatures]))
    else:
        out.append("signatures: none")
    if report.signatures_invalid:
        out.append(f"signatures over other bytes: {len(report.signatures_invalid)}")
    out.append("findings:" if report.findings else "findings: none")
    for finding in report.findings:
        out.append(f"  {finding.risk.upper():<7} {p(finding.message)}")
    return "\n".join(out)
