"""`advise(needs, figures) -> Advice`: walk the rule table, fill reasons with figures, and
say what to start from: the OTLP export profile and the Stockade policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..telemetry.profiles import PROFILES, ExportProfile
from .figures import Figure, Figures
from .needs import Needs
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
                "figures": "measured" if self.measured else "published"}


def _fill(rule: Rule, needs: Needs, figures: Figures) -> Reason:
    used: list[Figure] = []

    def replace(match: re.Match[str]) -> str:
        key, source = match.group(1), match.group(2)
        if key == "density":
            return str(needs.density)
        figure = figures.get(key)
        if figure is None:
            return "(not measured)"
        if figure not in used:
            used.append(figure)
        return figure.source if source else figure.text()

    return Reason(rule.id, _FIELD.sub(replace, rule.reason), tuple(used))


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
                  PROFILES[_OTLP[chosen.platform]], policy, flags, figures.measured)
