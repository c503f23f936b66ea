"""`Needs`: the answers `stockade advise` decides from, validated when built.

Answers come from flags, from an interactive session, or from a module's imports
(`needs_from_module`): a module that imports sockets needs a network, one that imports
only WASI preview 1 already runs under Stockade as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..inspect import Import

if TYPE_CHECKING:
    from ..inspect.report import Inspection

__all__ = ["Needs", "ModuleFacts", "needs_from_module", "CHOICES", "LANGUAGE_SUPPORT"]

# Allowed answers of the questions that take one of a few words.
CHOICES: dict[str, tuple[str, ...]] = {
    "dependencies": ("none", "few", "many", "complex"),
    "io": ("light", "heavy"),
    "network": ("none", "http", "complex"),
    "isolation": ("trusted", "tenant", "hostile"),
}

# How well a language reaches WASI preview 1 today: "native" (compiles to a module),
# "interpreter" (its interpreter runs as a module: pure code only), or "poor".
LANGUAGE_SUPPORT: dict[str, str] = {
    "c": "native", "c++": "native", "rust": "native", "zig": "native", "go": "native",
    "tinygo": "native", "assemblyscript": "native", "swift": "native",
    "python": "interpreter", "javascript": "interpreter", "typescript": "interpreter",
    "ruby": "interpreter", "php": "interpreter", "lua": "interpreter",
    "java": "poor", "kotlin": "poor", "c#": "poor", ".net": "poor", "erlang": "poor",
    "elixir": "poor", "scala": "poor",
}

_SOCKET_MODULES = ("wasix", "wasi:sockets", "wasi_sockets")
_THREAD_IMPORTS = ("wasi.thread-spawn",)


@dataclass(frozen=True)
class ModuleFacts:
    """What a module's imports say about its needs."""

    name: str
    imports: int
    sockets: tuple[str, ...] = ()
    threads: bool = False
    unknown: tuple[str, ...] = ()

    @property
    def runs_as_is(self) -> bool:
        """True when Stockade provides everything the module imports."""
        return not (self.sockets or self.threads or self.unknown)


@dataclass(frozen=True)
class Needs:
    """The workload, as answers to the decision tree's questions.

    `startup_budget_ms` is the cold start the workload can afford (None: not a concern);
    `density` instances per host (None: not stated). (No rule decides on a request rate,
    so none is asked.)
    Raises UsageError naming the question for an answer outside its range.
    """

    full_os: bool = False
    dependencies: str = "few"
    languages: tuple[str, ...] = ()
    startup_budget_ms: float | None = None
    density: int | None = None
    io: str = "light"
    network: str = "none"
    isolation: str = "tenant"
    gpu: bool = False
    module: ModuleFacts | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for question, allowed in CHOICES.items():
            value = getattr(self, question)
            if value not in allowed:
                raise UsageError(f"--{question}: {value!r} is not one of {', '.join(allowed)}")
        for question in ("startup_budget_ms", "density"):
            value = getattr(self, question)
            if value is not None and value <= 0:
                flag = question.removesuffix("_ms").replace("_", "-")
                raise UsageError(f"--{flag}: must be positive, not {value}")
        unknown = [lang for lang in self.languages if lang not in LANGUAGE_SUPPORT]
        if unknown:
            raise UsageError(f"--language: unknown {', '.join(unknown)} (known: "
                             f"{', '.join(sorted(LANGUAGE_SUPPORT))})")

    @property
    def language_support(self) -> str:
        """The weakest WASI support among the languages ("native" when none are named)."""
        order = ("native", "interpreter", "poor")
        levels = [LANGUAGE_SUPPORT[lang] for lang in self.languages] or ["native"]
        return max(levels, key=order.index)

    def to_dict(self) -> dict[str, object]:
        """The answers as plain data (the module's facts included when read)."""
        data: dict[str, object] = {
            "full_os": self.full_os, "dependencies": self.dependencies,
            "languages": list(self.languages), "startup_budget_ms": self.startup_budget_ms,
            "density": self.density, "io": self.io, "network": self.network,
            "isolation": self.isolation, "gpu": self.gpu,
        }
        if self.module is not None:
            facts = self.module
            data["module"] = {"name": facts.name, "imports": facts.imports,
                              "sockets": list(facts.sockets), "threads": facts.threads,
                              "unknown": list(facts.unknown), "runs_as_is": facts.runs_as_is}
        return data


def module_facts(name: str, imports: list[Import]) -> ModuleFacts:
    """Classify a module's imports."""
    from ..hostcalls.abi import MODULE as WASI
    from ..hostcalls.abi import PREVIEW1_FUNCTIONS

    sockets, unknown, threads = [], [], False
    for item in imports:
        if item.module.startswith(_SOCKET_MODULES) and "sock" in item.name:
            sockets.append(item.qualified)
        elif item.qualified in _THREAD_IMPORTS:
            threads = True
        elif item.module == WASI and item.name in PREVIEW1_FUNCTIONS and item.kind == "func":
            continue
        else:
            unknown.append(item.qualified)
    return ModuleFacts(name, len(imports), tuple(sockets), threads, tuple(unknown))


def needs_from_module(report: Inspection, needs: Needs) -> Needs:
    """`needs` with what an inspected module's imports imply: sockets mean a complex
    network (WASI preview 1 has no way to open one)."""
    facts = module_facts(report.name, report.imports)
    network = "complex" if facts.sockets else needs.network
    return replace(needs, module=facts, network=network)
