"""`advise(needs, figures) -> Advice`: walk the rule table, fill reasons with figures, and
say what to start from: the OTLP export profile and the Stockade policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..telemetry.profiles import PROFILES, ExportProfile
from .figures import Figure, Figures
from .needs import LANGUAGE_SUPPORT, Needs
from .rules import HYBRID_LAYERS, PLATFORMS, RULES, Rule, holds

__all__ = ["Advice", "Reason", "advise"]

# Which OTLP profile each platform exports with (the seed's per-layer table).
_OTLP = {"wasm": "edge", "container": "cloud", "vm": "on-prem", "hybrid": "edge"}
_FIELD = re.compile(r"\{([a-z_.]+?)(\.source)?\}")


@dataclass(frozen=True)
class Reason:
    """One reason: the rule that gave it, its text with figures filled in, the figures."""

    rule: str
    text: str
    figures: tuple[Figure, ...]

    def to_dict(self) -> dict[str, object]:
        """Plain data for `--json`."""
        return {"rule": self.rule, "text": self.text,
                "figures": [figure.to_dict() for figure in self.figures]}


@dataclass(frozen=True)
class Advice:
    """The recommendation: `platform` (vm, wasm, container, hybrid), `layers` for a
    hybrid (layer -> platform, OTLP profile), the `path` of rules tried, the reasons,
    and where to start."""

    platform: str
    path: tuple[str, ...]
    reasons: tuple[Reason, ...]
    changes: tuple[str, ...]
    layers: dict[str, tuple[str, str]] = field(default_factory=dict)
    otlp: ExportProfile | None = None
    policy_toml: str = ""
    run_flags: str = ""
    measured: bool = False
    caveats: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        """The platform in words."""
        return PLATFORMS[self.platform]

    def to_dict(self) -> dict[str, object]:
        """Plain data for `--json`."""
        otlp = self.otlp._asdict() if self.otlp else None
        return {"recommendation": self.platform, "title": self.title, "path": list(self.path),
                "reasons": [reason.to_dict() for reason in self.reasons],
                "changes": list(self.changes),
                "layers": {layer: {"platform": platform, "otlp_profile": otlp_name}
                           for layer, (platform, otlp_name) in self.layers.items()} or None,
                "otlp_profile": otlp,
                "policy": {"toml": self.policy_toml, "run_flags": self.run_flags}
                if self.policy_toml else None,
                "figures": "measured" if self.measured else "published",
                "caveats": list(self.caveats)}


def _fill(rule: Rule, needs: Needs, figures: Figures) -> Reason:
    used: list[Figure] = []

    def replace(match: re.Match[str]) -> str:
        key, source = match.group(1), match.group(2)
        if key == "density":
            return str(needs.density)
        if key == "io_cost":
            return _io_cost(figures, used)
        figure = figures.get(key)
        if figure is None:
            return "(not measured)"
        if figure not in used:
            used.append(figure)
        return figure.source if source else _shown(figure)

    return Reason(rule.id, _FIELD.sub(replace, rule.reason), tuple(used))


def _shown(figure: Figure) -> str:
    # A run's microVM rows under TCG are emulation's cost: say so where the number is.
    return figure.text() + (" under TCG emulation" if "TCG" in figure.label else "")


def _io_cost(figures: Figures, used: list[Figure]) -> str:
    """The I/O rule's figure, said as what it shows: a run where Stockade's echo was not
    slower than native ("0.85x") cannot be the reason Wasm is slow at I/O."""
    figure = figures.get("wasm.io_ratio")
    if figure is None:
        return "every WASI read and write crosses the host-call boundary"
    used.append(figure)
    if figure.value > 1:
        return (f"every WASI read and write crosses the host-call boundary, and Stockade took "
                f"{figure.text()} native's time on a large echo")
    return (f"the seed sends it to containers (native file systems, no host call per read "
            f"and write), though Stockade's large echo took {figure.text()} native's time in "
            f"these figures: the boundary's cost did not show there")


# The start-up of each form a platform can take, fastest first: (figure key, the form
# with `{}` for its time).
_FORMS: dict[str, tuple[tuple[str, str], ...]] = {
    "wasm": (("wasm.warm_ms", "a fresh instance in a running Stockade host (`stockade "
                              "serve`, `SandboxPool`) starts in {}"),
             ("wasm.cold_ms", "a new `stockade run` process starts in {}")),
    "python": (("python.warm_ms", "CPython for WASI in a running Stockade host prints 1 in "
                                  "{}"),
               ("python.cold_ms", "CPython for WASI as a new `stockade run` process prints "
                                  "1 in {}")),
    "container": (("container.startup_ms", "a container (crun) starts a program in {}, "
                                           "before the program's own start-up"),),
    "vm": (("vm.boot_ms", "a microVM boots in {}, before its program's own start-up"),),
}


def _budget(platform: str, needs: Needs, figures: Figures) -> tuple[Reason | None, list[str]]:
    """The workload's cold-start budget against the start-up of the form recommended,
    then of the other platforms; a caveat when no form of the recommendation meets it.
    (The seed's 50 ms picks the platform; whether it meets this budget is measured.)"""
    budget = needs.startup_budget_ms
    if budget is None:
        return None, []
    wasm = "python" if "python" in needs.languages else "wasm"
    mine = wasm if platform in ("wasm", "hybrid") else platform
    limit = Figure("budget", budget, "ms", "", "").text()
    used: list[Figure] = []

    def forms(kind: str) -> list[tuple[Figure, str]]:
        found = [(figure, form) for key, form in _FORMS[kind]
                 if (figure := figures.get(key)) is not None]
        used.extend(figure for figure, _ in found if figure not in used)
        return found

    def clause(figure: Figure, form: str) -> str:
        return form.format(_shown(figure)) + (" (within it)" if figure.value <= budget
                                             else " (over it)")

    own = forms(mine)
    if not own:
        return None, []
    layer = " (its API layer)" if platform == "hybrid" else ""
    text = (f"Against the {limit} cold-start budget{layer}: "
            + "; ".join(clause(figure, form) for figure, form in own) + ".")
    fits = [figure for figure, _ in own if figure.value <= budget]
    if fits and len(fits) < len(own):
        text += " Keep a host running rather than start a process per request."
    others = [clause(figure, form) for kind in (wasm, "container", "vm") if kind != mine
              for figure, form in forms(kind)]
    if others:
        text += " For comparison, " + "; ".join(others) + "."
    caveats = []
    if not fits:
        best, form = own[0]
        title = PLATFORMS[platform]
        caveats.append(f"{title[0].upper()}{title[1:]}{layer} does not meet the {limit} "
                       f"cold-start budget: {form.format(_shown(best))} ({best.source}).")
    unmeasured = [lang for lang in needs.languages
                  if LANGUAGE_SUPPORT[lang] == "interpreter" and lang != "python"]
    if mine in ("wasm", "python") and unmeasured:
        caveats.append(f"The start-up of {', '.join(unmeasured)} as an interpreter compiled "
                       "to Wasm was not measured: only CPython's is (--language python).")
    return Reason("startup-budget", text, tuple(used)), caveats


def _policy(platform: str, needs: Needs) -> tuple[str, str]:
    """The Stockade policy TOML and `stockade run` flags to start from."""
    if platform not in ("wasm", "hybrid"):
        return "", ""
    profile = {"trusted": "default", "tenant": "strict", "hostile": "strict"}[needs.isolation]
    isolate = "none" if needs.isolation == "trusted" else "process"
    # The seed's checklist: memory <= 128 MiB, timeout <= 30 s.
    timeout = "30s" if needs.startup_budget_ms is None else "10s"
    lines = [f'profile = "{profile}"', "", "[limits]", f'timeout = "{timeout}"',
             f'max_memory = "{"16MiB" if profile == "strict" else "128MiB"}"']
    if needs.io == "heavy":
        lines += ['disk_quota = "64MiB"', "max_files = 1000"]
    if needs.module is not None:
        lines.insert(0, f"# for {needs.module.name}: it imports only WASI preview 1; grant "
                        "only the directories it reads (--dir)")
    flags = f"--profile {profile} --isolate {isolate}"
    return "\n".join(lines) + "\n", flags


def _hardens(rule: Rule, platform: str) -> bool:
    # A hybrid's API layer is Wasm: what hardens Wasm hardens it too.
    return rule.platform == platform or (platform == "hybrid" and rule.platform == "wasm")


def advise(needs: Needs, figures: Figures) -> Advice:
    """Walk `RULES` for `needs` and build the advice, citing `figures`."""
    path: list[str] = []
    chosen: Rule | None = None
    for rule in RULES:
        if rule.stage != "choose":
            continue
        path.append(rule.id)
        if all(holds(condition, needs) for condition in rule.conditions):
            chosen = rule
            break
    if chosen is None:  # the table ends with an unconditional rule
        raise RuntimeError("the rule table has no default rule")
    reasons = [_fill(chosen, needs, figures)]
    budget, caveats = _budget(chosen.platform, needs, figures)
    if budget is not None:
        reasons.append(budget)
    changes = []
    for rule in RULES:
        if rule.stage == "harden" and _hardens(rule, chosen.platform) \
                and all(holds(condition, needs) for condition in rule.conditions):
            path.append(rule.id)
            reasons.append(_fill(rule, needs, figures))
            changes.append(rule.change)
    layers = dict(HYBRID_LAYERS) if chosen.platform == "hybrid" else {}
    policy, flags = _policy(chosen.platform, needs)
    return Advice(chosen.platform, tuple(path), tuple(reasons), tuple(changes), layers,
                  PROFILES[_OTLP[chosen.platform]], policy, flags, figures.measured,
                  tuple(caveats))
