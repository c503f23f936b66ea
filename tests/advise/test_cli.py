"""`stockade advise` on the command line: modules, results, JSON, errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ..conftest import ROOT, STOCKADE, guest, refused, stockade

SAVED_RUN = ROOT / "docs" / "benchmarks" / "2026-12-01" / "results.json"
FRESH_RUN = ROOT / "docs" / "benchmarks" / "2026-12-07-startup" / "results.json"


def _advise(*args: str) -> dict[str, object]:
    done = stockade("advise", "--json", *args)
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


def test_a_module_that_opens_sockets_is_advised_a_container() -> None:
    for module in ("needs_sockets.wasm", "attacks/net_wasix.wasm"):
        data = _advise("--module", str(guest(module)))
        assert data["recommendation"] == "container"
        needs = data["needs"]
        assert isinstance(needs, dict)
        assert needs["module"]["sockets"]
        assert needs["network"] == "complex"


def test_a_pure_compute_module_is_advised_wasm() -> None:
    data = _advise("--module", str(guest("compute.wasm")))
    assert data["recommendation"] == "wasm"
    assert data["path"][-1] == "module-runs"  # type: ignore[index]
    policy = data["policy"]
    assert isinstance(policy, dict) and 'profile = "strict"' in policy["toml"]


def test_the_least_privilege_policy_lets_the_module_run(tmp_path: Path) -> None:
    data = _advise("--module", str(guest("hello.wasm")))
    policy = data["policy"]
    assert isinstance(policy, dict)
    (tmp_path / "policy.toml").write_text(str(policy["toml"]))
    done = stockade("run", "--policy", str(tmp_path / "policy.toml"), str(guest("hello.wasm")),
                    "--", "advice")
    assert done.returncode == 0, done.stderr
    assert b"advice" in done.stdout


def test_advice_cites_measured_figures_from_a_results_file() -> None:
    data = _advise("--startup-budget", "20ms", "--results", str(SAVED_RUN))
    assert data["figures"] == "measured"
    cited = data["cited"]
    assert isinstance(cited, list)
    measured = [f for f in cited if f["measured"]]
    source = f"{SAVED_RUN} (stockade bench of 2026-12-01, AMD EPYC, 2 cores)"
    assert measured and all(f["source"] == source for f in measured)
    warm = next(f for f in measured if f["key"] == "wasm.warm_ms")
    assert warm["value"] == pytest.approx(0.0443, rel=0.01)  # the saved run's fast-path p50


def test_human_output_numbers_its_sources() -> None:
    done = stockade("advise", "--full-os")
    assert done.returncode == 0
    text = done.stdout.decode()
    assert text.startswith("Recommendation: a virtual machine")
    assert "[1] " in text and "Firecracker" in text and "2501.04580" in text


@pytest.mark.parametrize(("args", "code", "words"), [
    (("--io", "medium"), 125, b"--io"),
    (("--startup-budget", "soon"), 125, b"--startup-budget"),
    (("--results", "/nonexistent/results.json"), 125, b"no such file"),
    (("--module", "/nonexistent.wasm"), 127, b"no such module"),
])
def test_bad_input_is_one_line(args: tuple[str, ...], code: int, words: bytes) -> None:
    done = stockade("advise", *args)
    assert done.returncode == code
    assert words in done.stderr
    assert b"Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines()
              if line.startswith((b"Error:", b"stockade:"))]
    assert len(errors) == 1  # one line saying what is wrong (click adds its usage hint)


def test_a_garbage_module_is_refused_with_the_offset(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm\x01\0\0\0\x02\xff\xff\xff\xff\x0f")
    done = stockade("advise", "--module", str(bad))
    assert done.returncode == 126
    assert b"offset" in done.stderr and b"Traceback" not in done.stderr


def test_a_results_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "results.json"
    other.write_text('{"hello": 1}')
    done = stockade("advise", "--results", str(other))
    assert done.returncode == 125
    assert b"stockade bench" in done.stderr


def _results_with(tmp_path: Path, change: object) -> Path:
    data = json.loads(FRESH_RUN.read_text())
    change(data)  # type: ignore[operator]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    return path


def _set_metrics(value: object) -> object:
    def change(data: dict[str, list[dict[str, object]]]) -> None:
        for measurement in data["measurements"]:
            measurement["metrics"] = value if not callable(value) else value(
                measurement["metrics"])
    return change


@pytest.mark.parametrize(("change", "words"), [
    (_set_metrics({"wall_ms": ["a", "b"]}), "measurements[0].metrics.wall_ms[0]"),
    (_set_metrics(None), "measurements[0].metrics"),
    (lambda data: data.update(workloads=5), "workloads"),
    (lambda data: data.update(measurements=[7]), "measurements[0]"),
    (_set_metrics(lambda m: {k: [-1.0] * len(v) for k, v in m.items()}), "negative"),
    (_set_metrics(lambda m: {k: [float("nan")] for k in m}), "not a finite"),
    (_set_metrics(lambda m: {k: [float("inf")] for k in m}), "not a finite"),
    (_set_metrics(lambda m: {k: [10**400] for k in m}), "a number of 401 digits"),
])
def test_a_malformed_results_file_is_one_line(tmp_path: Path, change: object,
                                              words: str) -> None:
    path = _results_with(tmp_path, change)
    done = stockade("advise", "--startup-budget", "20ms", "--results", str(path))
    err = refused(done, str(path), words)
    assert "measured" not in done.stdout.decode(), err


def test_a_results_file_nested_too_deep_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    refused(stockade("advise", "--results", str(path)), str(path), "nested too deeply")


def test_a_truncated_module_is_refused_as_inspect_refuses_it(tmp_path: Path) -> None:
    cut = tmp_path / "trunc.wasm"
    cut.write_bytes(guest("hello.wasm").read_bytes()[:1000])
    inspected = stockade("inspect", str(cut))
    advised = stockade("advise", "--module", str(cut))
    assert inspected.returncode == advised.returncode == 126, advised.stdout
    assert b"Traceback" not in advised.stderr and advised.stderr.count(b"\n") == 1
    assert b"malformed" in advised.stderr and advised.stdout == b""


@pytest.mark.parametrize("name", ["noise.wasm", "noise.wat", "noise"])
def test_binary_junk_is_not_read_as_text(tmp_path: Path, name: str) -> None:
    noise = tmp_path / name
    noise.write_bytes(bytes(range(256)) * 8)
    for done in (stockade("advise", "--module", str(noise)),
                 stockade("check", "--no-host", "--module", str(noise)),
                 stockade("inspect", str(noise))):
        err = done.stderr.decode()
        assert done.returncode == 126, (done.args, err)
        assert "Traceback" not in err and err.count("\n") == 1, err
        assert "\ufffd" not in err and "\\x" not in err and "\\u" not in err, err
        assert "not a WebAssembly module" in err or "not WebAssembly text" in err, err


def test_end_of_input_is_no_answer_not_an_interrupt() -> None:
    done = stockade("advise", "--interactive", stdin=b"")
    err = refused(done, "no answer: standard input ended")
    assert "aborted" not in err


@pytest.mark.parametrize("args", [("--language", ""), ("--language", " , "),
                                  ("--startup-budget", "")])
def test_empty_answers_are_refused(args: tuple[str, ...]) -> None:
    refused(stockade("advise", *args), args[0], "empty")


# --- the outside review: prompts, closed input, honest reasons, hostile results ----------

def test_the_prompts_keep_the_flags_given_and_go_to_stderr() -> None:
    done = stockade("advise", "--interactive", "--json", "--full-os", "--language", "java",
                    "--startup-budget", "200ms", stdin=b"\n\n\n\n\n\n5ms\n\n")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)  # the prompts are not on stdout
    assert data["recommendation"] == "vm"
    assert data["needs"]["full_os"] is True and data["needs"]["languages"] == ["java"]
    assert data["needs"]["startup_budget_ms"] == 200
    err = done.stderr.decode()
    assert "Dependencies" in err and "full OS" not in err and "Languages" not in err


def test_every_prompt_goes_to_stderr() -> None:
    done = stockade("advise", "--interactive", "--json", stdin=b"y\n" + b"\n" * 10)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["recommendation"] == "vm"
    assert b"full OS" in done.stderr


def _closed_stdin(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-c", 'exec "$@" <&-', "sh", *STOCKADE, "advise", *args],
                          capture_output=True, timeout=120, check=False)


def test_a_closed_standard_input_is_an_ended_one() -> None:
    done = _closed_stdin()
    assert done.returncode == 0, done.stderr
    assert done.stdout == stockade("advise").stdout  # as with </dev/null
    refused(_closed_stdin("--interactive"), "no answer: standard input ended")
    as_json = _closed_stdin("--interactive", "--json")
    assert as_json.returncode == 125 and b"Traceback" not in as_json.stderr
    assert json.loads(as_json.stdout)["error"] == "no answer: standard input ended"


def test_a_budget_wasm_cannot_meet_from_a_run_is_said_plainly() -> None:
    data = _advise("--startup-budget", "20ms", "--results", str(FRESH_RUN))
    text = " ".join(r["text"] for r in data["reasons"])  # type: ignore[index, union-attr]
    assert data["recommendation"] == "wasm" and data["caveats"] == []
    assert "39.6 ms" in text and "over" in text and "against" not in text
    python = _advise("--startup-budget", "20ms", "--language", "python",
                     "--results", str(FRESH_RUN))
    assert python["recommendation"] == "wasm"
    caveats = python["caveats"]
    assert isinstance(caveats, list) and caveats and "CPython" in caveats[0]
    shown = stockade("advise", "--startup-budget", "20ms", "--language", "python",
                     "--results", str(FRESH_RUN)).stdout.decode()
    assert "Caveat" in shown and caveats[0] in shown.replace("\n  ", " ")


def test_a_results_file_is_cited_with_its_machine_and_date() -> None:
    data = _advise("--module", str(guest("hello.wasm")), "--results", str(FRESH_RUN))
    cited = data["cited"]
    assert isinstance(cited, list)
    sources = {f["source"] for f in cited if f["measured"]}
    assert sources == {f"{FRESH_RUN} (stockade bench of 2026-12-07, AMD EPYC, "
                       "2 cores)"}


def _compute(stockade_ms: float, native_ms: float) -> object:
    def change(data: dict[str, list[dict[str, object]]]) -> None:
        for measurement in data["measurements"]:
            if str(measurement["workload"]).startswith("compute/"):
                value = {"stockade": stockade_ms, "native": native_ms}.get(
                    str(measurement["backend"]))
                if value is not None:
                    measurement["metrics"]["hot_ms"] = [value]  # type: ignore[index]
    return change


@pytest.mark.parametrize(("stockade_ms", "native_ms", "words"), [
    (1e308, 1e-300, "hot_ms"),
    (50.0, 1e-300, "hot_ms"),
    (8e7, 1e-5, "wasm.compute_ratio"),
])
def test_implausible_results_values_are_refused(tmp_path: Path, stockade_ms: float,
                                                native_ms: float, words: str) -> None:
    path = _results_with(tmp_path, _compute(stockade_ms, native_ms))
    for args in (("--module", str(guest("hello.wasm"))), ("--json",)):
        done = stockade("advise", "--results", str(path), *args)
        refused(done, str(path), words)
        assert b"Infinity" not in done.stdout and b"infx" not in done.stdout


def test_a_results_file_without_measurements_is_warned_of(tmp_path: Path) -> None:
    path = _results_with(tmp_path, lambda data: data.update(measurements=[]))
    shown = stockade("advise", "--results", str(path))
    assert shown.returncode == 0
    assert shown.stderr.decode().count("\n") == 1 and b"no usable measurements" in shown.stderr
    data = _advise("--results", str(path))
    assert data["figures"] == "published"
    assert "no usable measurements" in data["warnings"][0]  # type: ignore[index]


def test_rps_is_not_asked_for_nothing() -> None:
    done = stockade("advise", "--json", "--rps", "100")
    assert done.returncode == 0
    data = json.loads(done.stdout)
    assert "rps" not in data["needs"]
    assert "--rps" in data["warnings"][0] and b"--rps" in done.stderr
