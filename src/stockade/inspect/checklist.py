"""The hardening checklist, evaluated: pre-deploy, runtime and review items, each pass,
warn or fail with the reason and the fix.

Thresholds (the recommended value passes, up to the second warns, beyond fails):
memory 128 MiB / 512 MiB; timeout 30 s / 120 s (none fails). A policy with neither
fuel nor a timeout fails; so does a module with high-risk findings, a signature a trust
policy requires and does not find (decided as `run` decides: `trust.enforce.verdict`), a
policy requiring image signatures with no image (cosign) key to verify one, a trust
another user could rewrite (its policy or manifest file, or a key file or directory, not
this user's or root's or writable by others: refused when keys are read), a disabled or
broken audit log, breakers disabled or kept in a database they cannot use (they fail
open). A gateway function's `oci://` image whose config sets a process (`Entrypoint`
arguments, `Cmd`, `Env`, `WorkingDir`) warns: the gateway never applies it (arguments
come from requests, variables from the manifest), where `run` would, and under
module-signature trust refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..policy import Policy
from ..policy.units import format_duration, format_size

if TYPE_CHECKING:
    from .report import Inspection

__all__ = ["Item", "Subject", "evaluate", "STATUSES"]

STATUSES = ("pass", "warn", "fail")
MiB = 1024**2
MEMORY = (128 * MiB, 512 * MiB)
TIMEOUT = (30.0, 120.0)


@dataclass(frozen=True)
class Item:
    """One checklist item's verdict."""

    section: str  # pre-deploy, runtime, review
    check: str
    subject: str
    status: str
    reason: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        """JSON form."""
        return {"section": self.section, "check": self.check, "subject": self.subject,
                "status": self.status, "reason": self.reason, "fix": self.fix}


@dataclass(frozen=True)
class Subject:
    """What is checked: a policy, under a label, and optionally the module it runs."""

    label: str
    policy: Policy
    module: Path | None = None
    image: str | None = None  # a gateway function's pinned `REF@sha256:…` it serves


def _graded(value: float, bounds: tuple[float, float]) -> str:
    return "pass" if value <= bounds[0] else "warn" if value <= bounds[1] else "fail"


def _policy_items(subject: Subject) -> list[Item]:
    limits, caps, label = subject.policy.limits, subject.policy.capabilities, subject.label
    items = []
    if limits.fuel is None and limits.timeout is None:
        items.append(Item("pre-deploy", "cpu limit", label, "fail",
                          "neither fuel nor a timeout: a spinning guest never stops",
                          "set limits.fuel or limits.timeout"))
    else:
        what = [f"fuel {limits.fuel:,}" if limits.fuel else "", "timeout" if limits.timeout
                else ""]
        items.append(Item("pre-deploy", "cpu limit", label, "pass",
                          " and ".join(w for w in what if w) + " set"))
    status = _graded(limits.max_memory, MEMORY)
    items.append(Item("pre-deploy", "memory limit", label, status,
                      f"max_memory {format_size(limits.max_memory)} (recommended <= 128MiB)",
                      "" if status == "pass" else 'set limits.max_memory = "128MiB" or less'))
    if limits.timeout is None:
        items.append(Item("pre-deploy", "timeout", label, "fail", "no timeout",
                          'set limits.timeout = "30s" or less'))
    else:
        status = _graded(limits.timeout, TIMEOUT)
        items.append(Item("pre-deploy", "timeout", label, status,
                          f"timeout {format_duration(limits.timeout)} (recommended <= 30s)",
                          "" if status == "pass" else 'set limits.timeout = "30s" or less'))
    items.append(_grants(subject, caps))
    trust = subject.policy.trust
    shared = _shared_trust(subject) if trust.require_signature else []
    if shared:
        items.append(Item("review", "signature required", label, "fail",
                          "; ".join(shared) + " (whoever can rewrite the trust chooses what "
                          "runs)", "make each file this user's, not writable by group or "
                          "others (chmod go-w FILE)"))
    elif trust.require_image_signature and not _image_keys(subject):
        items.append(Item("review", "signature required", label, "fail",
                          "require_image_signature = true, but no image (cosign) key among "
                          f"the {len(trust.keys)} key source(s): no module can ever run",
                          "add the image signer's cosign public key (cosign.pub) to "
                          "[trust] keys"))
    elif trust.require_signature:
        items.append(Item("review", "signature required", label, "pass",
                          f"[trust] requires a signature by {len(trust.keys)} key source(s)"))
    else:
        items.append(Item("review", "signature required", label, "warn",
                          "modules run without a signature check",
                          '[trust] require_signature = true, keys = ["signer.pub"]'))
    return items


def _image_keys(subject: Subject) -> int:
    """How many image (cosign) keys `subject`'s trust holds (its key files are readable:
    `_shared_trust` found no problem)."""
    from ..trust.enforce import image_keys

    return len(image_keys(subject.policy.trust.keys))


def _shared_trust(subject: Subject) -> list[str]:
    """Why another user could rewrite `subject`'s trust: a key file or directory, as
    reading the keys refuses them (a policy file or manifest so writable is refused when
    loaded, before any item is checked)."""
    from ..trust.enforce import trusted_keys
    from ..trust.keys import KeyFileError

    problems = []
    for key in subject.policy.trust.keys:
        try:
            trusted_keys((key,))
        except KeyFileError as exc:
            problems.append(exc.message)
    return problems


def _grants(subject: Subject, caps: Any) -> Item:
    label = subject.label
    writable = [g for g in caps.dirs if g.writable]
    if subject.module is None or not subject.module.exists():
        if writable:
            return Item("pre-deploy", "minimal WASI grants", label, "warn",
                        f"{len(writable)} writable director(ies) granted",
                        "grant directories read-only unless the module must write")
        return Item("pre-deploy", "minimal WASI grants", label, "pass",
                    f"{len(caps.dirs)} read-only director(ies), "
                    f"{len(caps.env_allow)} passed-through variable(s)")
    report = _inspection(subject.module)
    if report is None:
        return Item("pre-deploy", "minimal WASI grants", label, "warn",
                    "module could not be inspected", "see the module review item")
    extra = []
    if caps.dirs and not report.capabilities.uses("filesystem"):
        extra.append(f"{len(caps.dirs)} director(ies) for a module importing no filesystem call")
    reads_env = any("environ" in n for n in report.capabilities.groups.get("args/env", []))
    if (caps.env_allow or caps.env) and not reads_env:
        extra.append("environment variables for a module that never reads them")
    if extra:
        return Item("pre-deploy", "minimal WASI grants", label, "warn", "; ".join(extra),
                    "remove grants the module does not import (`stockade inspect --policy`)")
    return Item("pre-deploy", "minimal WASI grants", label, "pass",
                "grants match what the module imports")


# Per path: the inspection and whether the file was text, or why it failed.
_inspected: dict[Path, tuple[Inspection, bool] | Exception] = {}


def _inspect(path: Path) -> None:
    """Read and inspect `path` once (its signatures are verified from that reading).
    Raises ModuleNotFound or ModuleError."""
    from .modulefile import inspect_read

    _inspected[path] = inspect_read(path, path.name)


def _inspection(path: Path) -> Inspection | None:
    """The module's inspection, or None when it cannot be read (cached per path)."""
    if path not in _inspected:
        try:
            _inspect(path)
        except Exception as exc:  # noqa: BLE001 - unreadable, malformed, bad WAT: reported
            _inspected[path] = exc
    found = _inspected[path]
    return None if isinstance(found, Exception) else found[0]


def _was_text(path: Path) -> bool:
    """Whether the module inspected at `path` was WebAssembly text."""
    found = _inspected.get(path)
    return isinstance(found, tuple) and found[1]


def _module_items(subject: Subject) -> list[Item]:
    assert subject.module is not None
    path, label = subject.module, f"{subject.label}: {subject.module.name}"
    report = _inspection(path)
    if report is None:
        return [Item("review", "module inspected", label, "fail",
                     f"cannot inspect: {_inspected.get(path)}", "fix or rebuild the module")]
    high = [f.message for f in report.findings if f.risk == "high"]
    items = [Item("review", "module inspected", label, "fail" if high else "pass",
                  "; ".join(high) if high else
                  f"no high-risk findings ({sum(f.risk == 'medium' for f in report.findings)} "
                  "medium)", "see `stockade inspect`" if high else "")]
    trust = subject.policy.trust
    if trust.require_signature and _was_text(path):
        from .modulefile import TEXT_UNSIGNED

        items.append(Item("review", "signature valid", label, "fail", TEXT_UNSIGNED,
                          "sign the .wasm it compiles to: stockade sign --key KEY"))
    elif trust.require_signature:
        from ..trust.enforce import verdict
        from ..trust.keys import KeyFileError

        # `run`'s own decision, on the signatures of the bytes inspected: a second read
        # could meet others (or a FIFO).
        try:
            admitted, why = verdict(report.sha256, report.signature_data, trust)
        except KeyFileError as exc:  # the policy item says why the keys are refused
            admitted, why = False, exc.message
        fix = ("run it as an oci:// image signed by a trusted cosign key: stockade oci sign "
               "--key cosign.key REF" if trust.require_image_signature
               else "sign it: stockade sign --key KEY")
        items.append(Item("review", "signature valid", label, "pass" if admitted else "fail",
                          why, "" if admitted else fix))
    elif report.signatures:
        items.append(Item("review", "signature valid", label, "warn",
                          "signed, but no trusted keys to verify it with",
                          "add [trust] keys and require_signature"))
    return items


def _image_item(subject: Subject) -> Item | None:
    """What of its image's process a gateway function uses: none (`gateway` hands the
    guest a request's arguments and the manifest's variables, never the image config's),
    said as a warning when the image sets one, which `run` would apply; None when it
    sets none."""
    from ..errors import StockadeError
    from ..oci import resolve
    from ..oci.resolve import process_fields

    label = subject.label
    try:  # pinned by digest, pulled when the manifest was loaded: read from the store
        resolved = resolve(f"oci://{subject.image}")
    except StockadeError as exc:
        return Item("review", "image process", label, "warn",
                    f"cannot read the image {subject.image}: {exc.message}",
                    "pull it again: stockade oci pull REF")
    fields = process_fields(resolved.pulled, (), ())
    if not fields:
        return None
    trust = subject.policy.trust
    digest = resolved.pulled.module_digest.removeprefix("sha256:")
    run = (" (`stockade run` of the image would refuse it: no image signature by a "
           "trusted key covers it)"
           if trust.require_signature and digest not in trust.vouched else "")
    return Item("review", "image process", label, "warn",
                f"the image config of {subject.image} sets {', '.join(fields)}: not used, "
                "the gateway never applies an image's process (arguments come from "
                f"requests, variables from the manifest){run}",
                "give the function what it needs in the manifest (env), or build the image "
                "without a process of its own")


def _host_items(server: Any | None, state: Any | None = None) -> list[Item]:
    items = []
    try:
        from ..isolate.protections import protections

        found = protections()
    except Exception as exc:  # noqa: BLE001 - the item says why
        found = []
        items.append(Item("pre-deploy", "worker isolation", "host", "warn",
                          f"no isolation worker could start: {exc}", "run `stockade doctor`"))
    for wanted in ("cgroup", "seccomp"):
        matches = [p for p in found if wanted in p.name.lower()]
        if found and matches:
            active = all(p.active for p in matches)
            items.append(Item("pre-deploy", f"{wanted} for the worker", "host",
                              "pass" if active else "warn",
                              "; ".join(f"{p.name}: {p.detail}" for p in matches),
                              "" if active else "see `stockade doctor` for what is missing"))
    from ..telemetry.settings import resolve_settings

    profile = getattr(server, "telemetry", None)
    settings = resolve_settings(profile)
    if settings.exports:
        items.append(Item("runtime", "monitoring and alerting", "host", "pass",
                          "OTLP export to " + ", ".join(sorted(set(settings.endpoints.values())))))
    else:
        items.append(Item("runtime", "monitoring and alerting", "host", "warn",
                          "telemetry goes to a local file only: nothing can alert on it",
                          "set OTEL_EXPORTER_OTLP_ENDPOINT to your collector"))
    if server is None:
        items.append(Item("runtime", "circuit breaker", "host", "warn",
                          "`stockade run` consults breakers only with --breaker",
                          "serve functions through the gateway, or run with --breaker"))
    elif not server.breakers:
        items.append(Item("runtime", "circuit breaker", "manifest", "fail",
                          "breakers = false", "remove `breakers = false` from [server]"))
    else:
        items.append(_breaker_item(state))
    items.append(_audit_item(server))
    items.append(Item("review", "attack suite", "host", "warn",
                      "containment on this host is not recorded here",
                      "run `stockade attack` on this host before deploying"))
    return items


def _breaker_item(state: Any | None) -> Item:
    """Breakers on: kept in the shared store, or in this host's database, which must be
    one they can use (on a damaged one they fail open: every run allowed)."""
    if state is not None and state.shared:
        return Item("runtime", "circuit breaker", "manifest", "pass",
                    "breakers on (shared by the replicas)")
    from ..telemetry.breaker import default_path, unusable

    problem = unusable()
    if problem:
        return Item("runtime", "circuit breaker", "host", "fail",
                    f"breaker database {default_path()}: {problem}: breakers fail open "
                    "(every run allowed)",
                    "move it aside (the next run makes a new one); see `stockade breaker list`")
    return Item("runtime", "circuit breaker", "manifest", "pass", "breakers on")


def _audit_item(server: Any | None) -> Item:
    if server is not None and not server.audit:
        return Item("runtime", "audit log", "manifest", "fail", "audit = false",
                    "remove `audit = false` from [server]")
    from ..errors import StockadeError
    from ..telemetry.audit import verify

    try:
        report = verify()
    except (OSError, StockadeError) as exc:
        return Item("runtime", "audit log", "host", "fail", f"cannot verify: {exc}",
                    "check the state directory and the audit key")
    if not report.ok:
        return Item("runtime", "audit log", "host", "fail", str(report),
                    "investigate: `stockade audit verify`")
    return Item("runtime", "audit log", "host", "pass", str(report))


def evaluate(policy_file: Path | None, manifest_file: Path | None, module: Path | None,
             host: bool = True) -> list[Item]:
    """Every checklist item for the given policy file, manifest and module (the default
    profile when neither file is given); `host` adds this host's items. Raises
    PolicyError for a broken file, ModuleNotFound or ModuleError for a `module` that is
    not one (as `inspect` refuses it)."""
    from ..policy import load_policy

    if module is not None:
        _inspect(module)
    subjects: list[Subject] = []
    server = state = None
    if policy_file is not None:
        subjects.append(Subject(policy_file.name, load_policy(policy_file), module))
    if manifest_file is not None:
        from ..gateway.manifest import load_manifest

        manifest = load_manifest(manifest_file)
        server, state = manifest.server, manifest.state
        for spec in manifest.functions:
            subjects.append(Subject(f"function {spec.name}", spec.policy, module or spec.module,
                                    None if module is not None else spec.image))
    if not subjects:
        subjects.append(Subject("default profile", Policy.from_profile("default"), module))
    items = []
    for subject in subjects:
        items += _policy_items(subject)
        if subject.module is not None:
            items += _module_items(subject)
        image = _image_item(subject) if subject.image is not None else None
        if image is not None:
            items.append(image)
    if host:
        items += _host_items(server, state)
    order = ("pre-deploy", "runtime", "review")
    return sorted(items, key=lambda item: order.index(item.section))
