"""`stockade advise`: Wasm, container, microVM or a hybrid, with the reasons in numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .paths import PathParam

__all__ = ["advise"]

_QUESTION_FLAGS = ("full_os", "dependencies", "languages", "startup_budget", "density", "io",
                   "network", "isolation", "gpu", "module")


def _duration_ms(value: str | None) -> float | None:
    if value is None:
        return None
    from ..errors import UsageError
    from ..policy.units import parse_duration

    if not value.strip():
        raise UsageError("--startup-budget: an empty answer; give a duration, e.g. 50ms")

    try:
        return parse_duration(value) * 1000.0
    except ValueError as exc:
        raise UsageError(f"--startup-budget: {exc}") from None


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.strip().lower() for item in values for v in item.split(",") if v.strip())


def _languages(values: tuple[str, ...]) -> tuple[str, ...]:
    """The languages of `--language` flags, each naming at least one."""
    from ..errors import UsageError

    for value in values:
        if not _split((value,)):
            raise UsageError(f"--language: an empty answer ({value!r}); name a language, "
                             "e.g. --language rust")
    return _split(values)


def _ask(answers: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """The questions not answered by a flag (`given`), asked one by one on stderr;
    UsageError when standard input ends first, or is closed (an interrupt stays an
    interrupt)."""
    from ..errors import UsageError

    if sys.stdin is None:  # started with fd 0 closed: input() would raise RuntimeError
        raise UsageError("no answer: standard input ended")
    try:
        return _questions(answers, given)
    except click.Abort as exc:
        if isinstance(exc.__context__, EOFError):  # click raises Abort from None
            raise UsageError("no answer: standard input ended") from None
        raise


def _questions(answers: dict[str, Any], given: set[str]) -> dict[str, Any]:
    from ..advise import CHOICES

    # A flag given with --interactive is an answer: asking again with another default
    # made Enter drop it (--full-os became No, and the advice Wasm). Prompts go to
    # stderr so that --json's stdout stays one JSON object.
    if "full_os" not in given:
        answers["full_os"] = click.confirm("Does it need a full OS, kernel features or "
                                           "system services?", default=False, err=True)
    for question, prompt in (("dependencies", "Dependencies"), ("io", "I/O profile"),
                             ("network", "Network needs"), ("isolation", "Whose code is it")):
        if question not in given:
            answers[question] = click.prompt(prompt, type=click.Choice(CHOICES[question]),
                                             default=answers[question], err=True)
    if "languages" not in given:
        languages = click.prompt("Languages (comma-separated, empty for none)", default="",
                                 show_default=False, err=True)
        answers["languages"] = _split((languages,))
    if "startup_budget" not in given:
        budget = click.prompt("Cold-start budget (e.g. 50ms; empty if it does not matter)",
                              default="", show_default=False, err=True)
        answers["startup_budget_ms"] = _duration_ms(budget or None)
    if "gpu" not in given:
        answers["gpu"] = click.confirm("Does it need a GPU?", default=False, err=True)
    return answers


def _figures(results: Path | None, probe: bool, build: Path | None, as_json: bool,
             warnings: list[str]) -> Any:
    """The figures to cite: published ones, replaced by --results' and --probe's."""
    from ..advise import from_results, load_results, published, results_source
    from ..advise.figures import ImplausibleResults
    from ..errors import UsageError

    figures = published()
    if results is not None:
        run = load_results(results)
        try:
            measured = from_results(run, results_source(run, str(results)))
        except ImplausibleResults as exc:
            raise UsageError(f"--results: {results}: {exc}") from None
        if not measured:  # else it reads as advice from the user's own machine
            warnings.append(f"--results: {results}: no usable measurements; citing "
                            "published figures")
        figures = figures.with_measured(measured)
    if probe:
        from ..advise.probe import probe as run_probe

        if not as_json:
            click.echo("stockade: measuring this machine (about 10-30 s) ...", err=True)
        try:
            figures = figures.with_measured(run_probe(build))
        except ImplausibleResults as exc:
            raise UsageError(f"--probe: {exc}") from None
    return figures


@click.command("advise")
@click.option("--full-os", is_flag=True, help="It needs a full OS, kernel features or services.")
@click.option("--dependencies", type=click.Choice(["none", "few", "many", "complex"]),
              default="few", show_default=True,
              help="complex: system packages or services a whole OS must provide.")
@click.option("--language", "languages", multiple=True, metavar="LANG[,LANG]",
              help="Languages it is written in (c, rust, go, python, javascript, java, ...).")
@click.option("--startup-budget", "startup_budget", metavar="DURATION", default=None,
              help="The cold start it can afford, e.g. 50ms.")
@click.option("--rps", type=click.FloatRange(min=0, min_open=True), default=None,
              hidden=True, help="Not used: no rule decides on it (kept so scripts run).")
@click.option("--density", type=click.IntRange(min=1), default=None,
              help="Instances per host.")
@click.option("--io", type=click.Choice(["light", "heavy"]), default="light", show_default=True,
              help="heavy: databases, file systems, large transfers.")
@click.option("--network", type=click.Choice(["none", "http", "complex"]), default="none",
              show_default=True, help="complex: its own sockets, several ports or protocols.")
@click.option("--isolation", type=click.Choice(["trusted", "tenant", "hostile"]),
              default="tenant", show_default=True, help="Whose code it is.")
@click.option("--gpu", is_flag=True, help="It needs a GPU.")
@click.option("--module", "module", metavar="MODULE", default=None,
              help="Read what a module (.wasm, .wat or oci://REF) imports (sockets, threads, ...).")
@click.option("--results", "results", type=PathParam("file", "results file"),
              default=None, help="Cite the figures of a `stockade bench` results.json.")
@click.option("--probe", is_flag=True, help="Measure this machine first (under 30 s).")
@click.option("--build", type=PathParam("directory"), default=None,
              help="Build directory with the benchmark guests (--probe) [default: the "
                   "installed package's, or the checkout's build/].")
@click.option("--interactive/--no-interactive", default=None,
              help="Ask the questions (default: on a terminal when none is given).")
@click.option("--json", "as_json", is_flag=True, help="Print the advice as one JSON object.")
def advise(full_os: bool, dependencies: str, languages: tuple[str, ...],
           startup_budget: str | None, rps: float | None, density: int | None, io: str,
           network: str, isolation: str, gpu: bool, module: str | None, results: Path | None,
           probe: bool, build: Path | None, interactive: bool | None, as_json: bool) -> None:
    """Recommend WebAssembly under Stockade, a container, a microVM or a hybrid for a
    workload, following the seed's decision tree (full OS -> VM; cold start under 50 ms
    -> Wasm; I/O-heavy -> containers; otherwise a hybrid by layer), with the reasons in
    numbers, the OTLP export profile and the Stockade policy to start from. A
    --startup-budget is compared with the measured start-up of the form recommended; a
    "Caveat:" line says when it cannot be met.

    \b
    Figures come from --results (a saved `stockade bench` run), from --probe (measured
    now), or else from the project's latest committed run and published sources, each
    labelled with where it comes from. With --interactive, only the questions no flag
    answered are asked (on stderr).

    \b
    Examples:
      stockade advise --startup-budget 20ms --isolation hostile
      stockade advise --module app.wasm --results bench-results/2026-12-01/results.json
      stockade advise --io heavy --language java --json
    """
    from ..advise import Needs, needs_from_module
    from ..advise import advise as decide

    ctx = click.get_current_context()
    given = {name for name in _QUESTION_FLAGS
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    warnings: list[str] = []
    if rps is not None:  # the seed's tree has no rule on a request rate
        warnings.append("--rps: not used (no rule of the decision tree decides on it); "
                        "ignored")
    answers: dict[str, Any] = {
        "full_os": full_os, "dependencies": dependencies, "languages": _languages(languages),
        "startup_budget_ms": _duration_ms(startup_budget),
        "density": density, "io": io, "network": network,
        "isolation": isolation, "gpu": gpu,
    }
    if interactive is None:  # a closed stream (None) is no terminal
        interactive = (not given and not as_json and sys.stdin is not None
                       and sys.stdin.isatty() and sys.stdout is not None
                       and sys.stdout.isatty())
    if interactive:
        answers = _ask(answers, given)
    needs = Needs(**answers)
    if module is not None:
        from ..errors import UsageError
        from .inspect import inspected

        if not module.strip():
            raise UsageError("--module: an empty answer; give a module file or oci://REF")
        needs = needs_from_module(inspected(module), needs)
    figures = _figures(results, probe, build, as_json, warnings)
    advice = decide(needs, figures)
    for warning in warnings:
        click.echo(f"stockade: warning: {warning}", err=True)
    if as_json:
        data = advice.to_dict()
        data["needs"] = needs.to_dict()
        data["cited"] = [f.to_dict() for r in advice.reasons for f in r.figures]
        data["warnings"] = warnings
        click.echo(json.dumps(data, indent=1, allow_nan=False))
        return
    click.echo(_render(advice))


def _render(advice: Any) -> str:
    lines = [f"Recommendation: {advice.title}"]
    if advice.layers:
        for layer, (platform, otlp_name) in advice.layers.items():
            lines.append(f"  {layer:<9} {platform:<16} OTLP profile {otlp_name}")
    # Right under the recommendation: what it cannot do is not a footnote.
    lines += [f"Caveat: {caveat}" for caveat in advice.caveats]
    lines += ["", "Why:"]
    sources: list[str] = []
    for reason in advice.reasons:
        marks = []
        for figure in reason.figures:
            if figure.source not in sources:
                sources.append(figure.source)
            marks.append(str(sources.index(figure.source) + 1))
        cite = f" [{','.join(dict.fromkeys(marks))}]" if marks else ""
        lines.append(f"  - {reason.text}{cite}")
    if advice.changes:
        lines += ["", "Harden:"] + [f"  - {change}" for change in advice.changes]
    if advice.otlp is not None:
        otlp = advice.otlp
        lines += ["", f"OTLP export: profile {otlp.name} (batch {otlp.batch_size}, every "
                      f"{otlp.interval:g} s, {otlp.protocol}, compression {otlp.compression}, "
                      f"sampling {otlp.sampling_ratio:.0%}): STOCKADE_TELEMETRY={otlp.name} or "
                      f"[server] telemetry = \"{otlp.name}\""]
    if advice.policy_toml:
        lines += ["", f"Stockade policy to start from (stockade run {advice.run_flags} "
                      "--policy policy.toml):", ""]
        lines += ["  " + line if line else "" for line in advice.policy_toml.splitlines()]
    if sources:
        lines += ["", "Sources:"] + [f"  [{i}] {s}" for i, s in enumerate(sources, 1)]
    lines.append(f"Path: {' -> '.join(advice.path)}")
    return "\n".join(lines)
