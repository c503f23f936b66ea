"""The fast lane of `stockade run` parses exactly as click does, or leaves it to click."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest

from stockade.cli.run import run
from stockade.cli.runspec import RUN_OPTIONS, parse_run
from stockade.errors import UsageError


def _click(argv: list[str]) -> dict[str, Any]:
    with run.make_context("run", list(argv)) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("argv", [
    ["m.wasm"],
    ["m.wasm", "a", "--json", "-x", "--", "b"],
    ["m.wasm", "--", "a"],
    ["--json", "--profile", "strict", "m.wasm"],
    ["--profile=permissive", "--fuel", "unlimited", "--timeout=2s", "m.wasm", "x"],
    ["--dir", "/a:/b", "--dir=/c::/d:rw", "--env", "A=1", "--env", "B=2", "--env-allow", "HOME",
     "m.wasm"],
    ["--stdin", "-", "--isolate", "none", "--telemetry", "off", "--breaker", "m.wasm"],
    ["--scratch", "/s", "--keep-scratch", "--disk-quota", "1MiB", "--max-files", "3",
     "--max-memory", "16MiB", "--max-output", "1KiB", "m.wasm"],
    ["--allow-precompiled", "--trust-key", "k.pub", "--trust-key=d", "--require-signature",
     "--policy", "p.toml", "m.cwasm"],
    ["-", "a"],
    ["oci://localhost:5000/x:1", "a"],
], ids=" ".join)
def test_same_parameters_as_click(argv: list[str]) -> None:
    fast = parse_run(argv)
    assert fast is not None
    assert fast == _click(argv)


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["-h"], ["--json"], ["--", "m.wasm"], ["--profile", "bogus", "m.wasm"],
    ["--isolate", "vm", "m.wasm"], ["--json=yes", "m.wasm"], ["--nope", "m.wasm"],
    ["--timeout"], ["--prof", "strict", "m.wasm"], ["-x", "m.wasm"],
    ["--timeout", "--json", "m.wasm"], ["--env", "-A=1", "m.wasm"],
])
def test_anything_unusual_is_left_to_click(argv: list[str]) -> None:
    assert parse_run(argv) is None


@pytest.mark.parametrize("argv", [
    ["--policy", "DIR", "m.wasm"], ["--policy=DIR", "m.wasm"], ["--policy", "", "m.wasm"],
    ["--trust-key", "", "m.wasm"], ["--trust-key=", "m.wasm"],
], ids=" ".join)
def test_a_path_of_the_wrong_kind_is_left_to_click(tmp_path: Path, argv: list[str]) -> None:
    # Click's parameter type refuses it, in one line (UsageError, 125): the fast lane
    # never judges a path itself.
    argv = [word.replace("DIR", str(tmp_path)) for word in argv]
    assert parse_run(argv) is None
    with pytest.raises(UsageError):
        _click(argv)


def test_every_option_of_the_command_is_in_the_table() -> None:
    options = {p.name for p in run.params if isinstance(p, click.Option)}
    assert options == {option.dest for option in RUN_OPTIONS}
