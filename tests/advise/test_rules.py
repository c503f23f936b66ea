"""The rule table, walked branch by branch: the seed's tree exactly, then every other rule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from stockade.advise import RULES, Figure, Needs, advise, published
from stockade.advise.rules import HYBRID_LAYERS
from stockade.errors import UsageError

from ..conftest import ROOT

SEED = published()


def _platform(needs: Needs) -> str:
    return advise(needs, SEED).platform


# The seed's tree, answered only with its own questions: (answers, platform).
SEED_TREE = [
    (Needs(full_os=True), "vm"),
    (Needs(dependencies="complex"), "vm"),
    (Needs(full_os=True, startup_budget_ms=10, io="heavy"), "vm"),  # the first question wins
    (Needs(startup_budget_ms=49.9), "wasm"),
    (Needs(startup_budget_ms=10, io="heavy"), "wasm"),  # cold start is asked before I/O
    (Needs(startup_budget_ms=50), "hybrid"),  # "under 50 ms" is strict
    (Needs(io="heavy"), "container"),
    (Needs(startup_budget_ms=200, io="heavy"), "container"),
    (Needs(), "hybrid"),
    (Needs(startup_budget_ms=500), "hybrid"),
]


@pytest.mark.parametrize(("needs", "platform"), SEED_TREE)
def test_the_seed_tree_gives_the_seed_answer(needs: Needs, platform: str) -> None:
    assert _platform(needs) == platform


def test_the_hybrid_puts_each_layer_where_the_seed_does() -> None:
    advice = advise(Needs(), SEED)
    assert advice.layers == HYBRID_LAYERS
    assert advice.layers["api"] == ("wasm", "edge")
    assert advice.layers["business"] == ("container", "cloud")
    assert advice.layers["data"][0] == "vm or container"
    assert advice.to_dict()["layers"] == {
        "api": {"platform": "wasm", "otlp_profile": "edge"},
        "business": {"platform": "container", "otlp_profile": "cloud"},
        "data": {"platform": "vm or container", "otlp_profile": "on-prem"},
    }


def test_the_seed_rules_are_in_the_seed_order() -> None:
    seed = [rule.id for rule in RULES if rule.seed]
    assert seed == ["seed-full-os", "seed-complex-deps", "seed-cold-start", "seed-io-heavy",
                    "seed-hybrid"]
    assert RULES[[r.id for r in RULES].index("seed-hybrid")].conditions == ()


# Every other choosing rule, with answers that reach it and only it.
OTHER_RULES = [
    ("gpu", Needs(gpu=True, startup_budget_ms=5), "container"),
    ("sockets", Needs(network="complex", startup_budget_ms=5), "container"),
    ("no-toolchain", Needs(languages=("java",)), "container"),
    ("density", Needs(density=5000), "wasm"),
]


@pytest.mark.parametrize(("rule", "needs", "platform"), OTHER_RULES)
def test_every_other_rule_is_reached(rule: str, needs: Needs, platform: str) -> None:
    advice = advise(needs, SEED)
    assert advice.platform == platform
    assert advice.path[-1] == rule or rule in advice.path
    assert advice.reasons[0].rule == rule


def test_every_choosing_rule_is_covered() -> None:
    covered = {rule for rule, _, _ in OTHER_RULES} | {"module-runs"}
    covered |= {advise(needs, SEED).reasons[0].rule for needs, _ in SEED_TREE}
    assert covered == {rule.id for rule in RULES if rule.stage == "choose"}


def test_hostile_code_hardens_wasm_and_containers() -> None:
    wasm = advise(Needs(startup_budget_ms=5, isolation="hostile"), SEED)
    assert wasm.platform == "wasm"
    assert "hostile-wasm" in wasm.path
    assert "--profile strict --isolate process" == wasm.run_flags
    assert any("2509.11242" in f.source for r in wasm.reasons for f in r.figures)
    container = advise(Needs(io="heavy", isolation="hostile"), SEED)
    assert "hostile-container" in container.path
    assert "microVM" in " ".join(container.changes)
    trusted = advise(Needs(startup_budget_ms=5, isolation="trusted"), SEED)
    assert trusted.changes == ()
    assert "--isolate none" in trusted.run_flags


def test_interpreted_languages_are_flagged_on_wasm() -> None:
    advice = advise(Needs(startup_budget_ms=5, languages=("python",)), SEED)
    assert advice.platform == "wasm"
    assert "interpreted" in advice.path


def test_each_platform_starts_from_the_seed_otlp_profile() -> None:
    assert advise(Needs(startup_budget_ms=5), SEED).otlp.name == "edge"  # type: ignore[union-attr]
    container = advise(Needs(io="heavy"), SEED).otlp
    assert container is not None
    assert (container.name, container.batch_size, container.protocol) == ("cloud", 512, "grpc")
    assert advise(Needs(full_os=True), SEED).otlp.name == "on-prem"  # type: ignore[union-attr]


def test_reasons_cite_every_figure_with_its_source() -> None:
    for needs, _ in SEED_TREE:
        for reason in advise(needs, SEED).reasons:
            assert "{" not in reason.text and "not measured" not in reason.text
            for figure in reason.figures:
                assert figure.source and not figure.measured


def test_measured_figures_replace_published_ones() -> None:
    mine = Figure("vm.boot_ms", 5400, "ms", "microVM boot (TCG)", "results.json", measured=True)
    figures = SEED.with_measured([mine])
    advice = advise(Needs(full_os=True), figures)
    assert "5400 ms" in advice.reasons[0].text
    assert mine in advice.reasons[0].figures
    assert advice.measured and advice.to_dict()["figures"] == "measured"


@pytest.mark.parametrize(("field", "value"), [
    ("io", "medium"), ("network", "ipv6"), ("isolation", "paranoid"), ("dependencies", "lots"),
    ("startup_budget_ms", -1.0), ("density", 0), ("languages", ("cobol",)),
])
def test_answers_outside_their_range_are_refused(field: str, value: object) -> None:
    with pytest.raises(UsageError) as raised:
        replace(Needs(), **{field: value})
    flag = {"languages": "--language", "startup_budget_ms": "--startup-budget"}.get(
        field, f"--{field}")
    assert raised.value.message.startswith(flag)


# --- the review of the tree's order and of its reasons' honesty -------------------------

FRESH_RUN = ROOT / "docs" / "benchmarks" / "2026-12-07-startup" / "results.json"


@pytest.mark.parametrize("needs", [
    Needs(full_os=True, gpu=True), Needs(full_os=True, startup_budget_ms=5),
    Needs(full_os=True, density=5000, languages=("python",)),
    Needs(full_os=True, network="complex", gpu=True, startup_budget_ms=1),
])
def test_a_full_os_is_never_wasm_nor_a_container(needs: Needs) -> None:
    assert _platform(needs) == "vm"


def test_a_gpu_with_a_full_os_is_a_vm_with_the_gpu_passed_through() -> None:
    advice = advise(Needs(full_os=True, gpu=True), SEED)
    assert advice.platform == "vm" and "gpu-vm" in advice.path
    assert any("passthrough" in change for change in advice.changes)


def test_the_cold_start_reason_compares_the_budget_with_the_form_it_recommends() -> None:
    advice = advise(Needs(startup_budget_ms=20), SEED)
    assert advice.platform == "wasm" and advice.caveats == ()
    text = " ".join(reason.text for reason in advice.reasons)
    assert "within" in text and "over" in text  # a warm instance is, `stockade run` is not
    assert "against" not in text  # no "66 ms against 5 ms for a container" any more


def test_python_under_a_tight_budget_says_wasm_cannot_meet_it() -> None:
    advice = advise(Needs(startup_budget_ms=20, languages=("python",)), SEED)
    assert advice.platform == "wasm"  # the seed's tree still decides
    assert advice.caveats and "20 ms" in advice.caveats[0]
    assert "CPython" in advice.caveats[0]
    assert advice.to_dict()["caveats"] == list(advice.caveats)
    roomy = advise(Needs(startup_budget_ms=45, languages=("python",)), SEED)
    assert roomy.caveats == ()


def test_a_vm_over_the_budget_says_so() -> None:
    advice = advise(Needs(full_os=True, startup_budget_ms=5), SEED)
    assert advice.platform == "vm"
    assert advice.caveats and "125 ms" in advice.caveats[0] and "5 ms" in advice.caveats[0]


def test_the_io_reason_never_claims_a_cost_its_figure_contradicts() -> None:
    def reason(ratio: float) -> str:
        mine = Figure("wasm.io_ratio", ratio, "x", "echo", "mine", measured=True)
        return advise(Needs(io="heavy"), SEED.with_measured([mine])).reasons[0].text

    assert "2.05x" in reason(2.05) and "crosses" in reason(2.05)
    assert "0.85x" in reason(0.85) and "crosses" not in reason(0.85)


def test_default_figures_are_the_latest_committed_run() -> None:
    from stockade.advise import from_results, load_results

    latest = sorted(p for p in (ROOT / "docs" / "benchmarks").glob("*/results.json")
                    if p.parent.name[:10].replace("-", "").isdigit())[-1]
    assert latest.parent.name == "2026-12-07-startup"
    run = {f.key: f for f in from_results(load_results(FRESH_RUN), "run")}
    for key in ("wasm.warm_ms", "wasm.cold_ms", "container.startup_ms", "wasm.compute_ratio",
                "wasm.io_ratio", "python.warm_ms", "python.cold_ms", "python.native_ms"):
        mine = SEED.get(key)
        assert mine is not None and "2026-12-07" in mine.source, key
        assert mine.value == pytest.approx(run[key].value, rel=0.005), key
    assert "Edera" not in SEED.get("container.startup_ms").source  # type: ignore[union-attr]
