"""`inspect_module`: a static report on a module, read from its bytes, never run.

One pass over the section headers; then wasmtime's validator (`engine.validity`) says
whether the module loads, and whether only with Wasm GC: a module it refuses is reported
as malformed, as `stockade run` refuses it, before any section is decoded or its code
priced. Both run in a bounded child (`inspect.validation`): the validator's memory is
not bounded by the file's size. Only then is each section of interest decoded by the
bounded reader in `stockade.binary`, so what is built is bounded by wasmparser's limits
(at most 1,000,000 imports, exports or functions, 100,000 data or element segments), not
by the file's size: 8 MiB of 2-byte data segments cost 490 MB and 64 MiB 3.5 GB when the
reader went first. Custom sections, which no engine validates, are read once each (the
first `name` and `producers`) and boundedly. The 26 MB CPython for WASI reads in well
under a second. Signatures are read against the module's bytes: those over other bytes
are listed apart (`signatures_invalid`), never as the module's signers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .. import binary as wasm
from ..binary import Export, Import, Limits, MalformedModule
from ..codework import Work
from ..engine.guard import compile_budget, compile_cost
from ..trust.signing import Signatures, read_signatures
from .capabilities import Capabilities, group_imports
from .validation import review

__all__ = ["Inspection", "Finding", "inspect_module", "RISKS", "LARGEST"]

RISKS = ("high", "medium", "low")
LARGEST = 5  # largest function bodies reported


@dataclass(frozen=True)
class Finding:
    """One thing worth a reviewer's attention, with its risk (high, medium, low)."""

    risk: str
    message: str


@dataclass
class Inspection:
    """Everything `stockade inspect` reports about one module."""

    name: str
    size: int
    sha256: str
    sections: list[wasm.Section] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)
    capabilities: Capabilities = field(default_factory=Capabilities)
    exports: list[Export] = field(default_factory=list)
    memories: list[tuple[Limits, bool]] = field(default_factory=list)  # (limits, imported)
    tables: list[tuple[Limits, bool]] = field(default_factory=list)
    data_segments: list[wasm.DataSegment] = field(default_factory=list)
    element_segments: list[int] = field(default_factory=list)
    start: int | None = None
    gc_heap: bool = False  # Wasm GC or exception handling: objects in a GC heap
    imported_functions: int = 0
    defined_functions: int = 0
    bodies: list[tuple[int, int]] = field(default_factory=list)  # (size, locals)
    work: list[Work] = field(default_factory=list)  # per function (codework)
    producers: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    module_name: str | None = None
    named_functions: int = 0
    signatures: list[dict[str, Any]] = field(default_factory=list)  # over this module
    signatures_invalid: list[dict[str, Any]] = field(default_factory=list)  # over others
    signature_error: str | None = None
    signature_data: Signatures = field(default_factory=Signatures)  # what verifying reads
    custom_errors: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def compile_cost(self) -> float:
        """Predicted CPU seconds to compile (the compile guard's model)."""
        return compile_cost(self.bodies, self.work)

    @property
    def data_bytes(self) -> int:
        """Bytes of all data segments."""
        return sum(segment.size for segment in self.data_segments)

    def largest_bodies(self) -> list[tuple[int, int, int]]:
        """(function index, body bytes, locals) of the largest bodies, largest first."""
        order = sorted(range(len(self.bodies)), key=lambda i: -self.bodies[i][0])[:LARGEST]
        return [(self.imported_functions + i, *self.bodies[i]) for i in order]

    def custom_sections(self) -> list[tuple[str, int]]:
        """(name, payload bytes) of every custom section."""
        return [(s.name, s.size) for s in self.sections if s.id == wasm.CUSTOM]

    def as_dict(self) -> dict[str, Any]:
        """The `--json` report (documented in the README)."""
        return {
            "module": self.name, "size_bytes": self.size, "sha256": self.sha256,
            "sections": [{"kind": s.kind, "offset": s.offset, "size_bytes": s.size}
                         for s in self.sections],
            "imports": self.capabilities.as_dict(),
            "exports": [{"name": e.name, "kind": e.kind, "index": e.index}
                        for e in self.exports],
            "memories": [_memory(limits, imported) for limits, imported in self.memories],
            "tables": [{"imported": imported, "initial": limits.minimum,
                        "maximum": limits.maximum} for limits, imported in self.tables],
            "data": {"segments": len(self.data_segments), "total_bytes": self.data_bytes,
                     "largest_bytes": max((s.size for s in self.data_segments), default=0),
                     "active_bytes": sum(s.size for s in self.data_segments if s.active)},
            "elements": {"segments": len(self.element_segments),
                         "entries": sum(self.element_segments)},
            "start": self.start,
            "gc_heap": self.gc_heap,
            "functions": {"imported": self.imported_functions,
                          "defined": self.defined_functions,
                          "largest": [{"index": i, "body_bytes": b, "locals": n}
                                      for i, b, n in self.largest_bodies()]},
            "compile": {"predicted_cpu_s": round(self.compile_cost, 3),
                        "default_budget_s": compile_budget(60.0),
                        "gc_units": sum(units for units, _, _ in self.work)},
            "custom_sections": [{"name": n, "size_bytes": b} for n, b in self.custom_sections()],
            "producers": {k: [{"name": n, "version": v} for n, v in values]
                          for k, values in self.producers.items()},
            "name": {"module": self.module_name, "functions_named": self.named_functions},
            "signatures": self.signatures, "signatures_invalid": self.signatures_invalid,
            "signature_error": self.signature_error,
            "findings": [{"risk": f.risk, "message": f.message} for f in self.findings],
        }


def _memory(limits: Limits, imported: bool) -> dict[str, Any]:
    page = limits.page_size
    return {"imported": imported, "initial_bytes": limits.minimum * page,
            "maximum_bytes": None if limits.maximum is None else limits.maximum * page,
            "shared": limits.shared, "memory64": limits.is64}


def inspect_module(data: bytes, name: str) -> Inspection:
    """Read `data` (a binary module) into an `Inspection`, findings included. Raises
    MalformedModule naming the offset of the first byte that does not fit, ModuleError
    when validating it meets its bound (`inspect.validation`)."""
    from .findings import assess

    report = Inspection(name, len(data), hashlib.sha256(data).hexdigest())
    seen: set[int] = set()
    for section in wasm.sections(data):  # headers only: at most MAX_SECTIONS
        report.sections.append(section)
        if section.id != wasm.CUSTOM:
            if section.id in seen:
                raise MalformedModule(f"offset {section.offset}: a second {section.kind} section")
            seen.add(section.id)
    # Before any entry is decoded: wasmtime bounds every count (one Python object per
    # entry of a module it refuses cost GBs), and pricing the code of a module it refuses
    # (a function type of 67M values) took seconds.
    reviewed = review(data, name)
    if reviewed.error is not None:
        raise MalformedModule(f"wasmtime refuses it: {reviewed.error}")
    report.gc_heap = reviewed.needs_gc
    customs: set[str] = set()
    for section in report.sections:
        if section.id == wasm.CUSTOM and section.name in _READ_CUSTOM:
            if section.name in customs:  # one walk each, not up to MAX_SECTIONS
                report.custom_errors.append(f"{section.kind} section: a second one, ignored")
                continue
            customs.add(section.name)
        try:
            _read(data, section, report)
        except MalformedModule as exc:
            if section.id == wasm.CUSTOM:  # engines ignore custom sections: so do we
                report.custom_errors.append(f"{section.kind} section: {exc}")
                continue
            raise MalformedModule(f"{section.kind} section: {exc}") from None
    if report.defined_functions != len(report.bodies):
        raise MalformedModule(f"{report.defined_functions} functions declared but "
                              f"{len(report.bodies)} bodies in the code section")
    report.work = reviewed.work or []
    report.capabilities = group_imports(report.imports)
    _signatures(data, report)
    report.findings = assess(report)
    return report


_READ_CUSTOM = ("name", "producers")  # the custom sections the report decodes


def _read(data: bytes, section: wasm.Section, report: Inspection) -> None:
    kind = section.id
    if kind == wasm.IMPORT:
        report.imports = wasm.read_imports(data, section)
        report.imported_functions = sum(1 for i in report.imports if i.kind == "func")
        for item in report.imports:
            if item.limits is not None:
                target = report.memories if item.kind == "memory" else report.tables
                target.append((item.limits, True))
    elif kind == wasm.FUNCTION:
        report.defined_functions = wasm.read_count(data, section)
    elif kind == wasm.TABLE:
        report.tables += [(t, False) for t in wasm.read_table_section(data, section)]
    elif kind == wasm.MEMORY:
        report.memories += [(m, False) for m in wasm.read_limits_section(data, section)]
    elif kind == wasm.EXPORT:
        report.exports = wasm.read_exports(data, section)
    elif kind == wasm.START:
        report.start = wasm.read_start(data, section)
    elif kind == wasm.ELEMENT:
        report.element_segments = wasm.read_element_counts(data, section)
    elif kind == wasm.CODE:
        report.bodies = wasm.read_bodies(data, section)
    elif kind == wasm.DATA:
        report.data_segments = wasm.read_data(data, section)
    elif kind == wasm.CUSTOM and section.name == "producers":
        report.producers = wasm.read_producers(data, section)
    elif kind == wasm.CUSTOM and section.name == "name":
        report.module_name, report.named_functions = wasm.read_name_section(data, section)


def _signatures(data: bytes, report: Inspection) -> None:
    """The signatures whose set covers the module (claimed signers: no key checks them
    here) and those over other bytes, which no key verifies for it: a section naming a
    trusted key's id over a hash set of nothing was shown as that key's signature."""
    found = report.signature_data = read_signatures(data)
    report.signature_error = found.error
    for sets, listed in ((found.covering, report.signatures),
                         (found.stale, report.signatures_invalid)):
        for signed in sets:
            for entry in signed.signatures:
                listed.append({"key_id": entry.key_id.hex() if entry.key_id else None,
                               "algorithm": "ed25519", "hashes": len(signed.hashes)})
