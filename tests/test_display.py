"""Guest-controlled text in human output: escaped by `stockade.display.printable` in the
run's stop line and `stockade telemetry show` (the gateway's logs: tests/gateway/test_cli)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from stockade.display import printable

from .conftest import STOCKADE, guest, stockade

# Clear the screen, set the window title, colour what follows, reverse the text.
HOSTILE = "\x1b[2J\x1b]0;owned\x07\x1b[31m\u202e"


@pytest.mark.parametrize(("text", "shown"), [
    ("plain text, ünïcødé: fine", "plain text, ünïcødé: fine"),
    ("a\x1b[31mb", "a\\x1b[31mb"),
    ("two\nlines\r\tand\x00", "two\\x0alines\\x0d\\x09and\\x00"),
    ("c1 \x9b1m del \x7f", "c1 \\x9b1m del \\x7f"),
    ("bidi \u202eevil\u2066 sep\u2028", "bidi \\u202eevil\\u2066 sep\\u2028"),
    ("bad byte \udcff", "bad byte \\xff"),
])
def test_printable_escapes_what_a_terminal_would_act_on(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(shown) == shown  # what it shows is plain text


def test_run_stop_line_escapes_names_from_the_module(tmp_path: Path) -> None:
    # A denied import: the message names the guest's own import strings.
    module = tmp_path / "denied.wat"
    module.write_text('(module (import "evil\\1b[2J\\1b]0;owned\\07" "f\\e2\\80\\ae" (func))'
                      ' (func (export "_start")))')
    result = stockade("run", str(module))
    assert result.returncode == 126
    line = result.stderr.decode()
    assert line.count("\n") == 1 and line.startswith("stockade: denied: ")
    assert "\x1b" not in line and "\x07" not in line and "\u202e" not in line
    assert "\\x1b[2J" in line and "\\u202e" in line


def test_telemetry_show_escapes_a_module_file_name(tmp_path: Path) -> None:
    module = tmp_path / f"evil{HOSTILE}.wasm"
    shutil.copy(guest("functions/hello.wasm"), module)
    ran = stockade("run", str(module))
    assert ran.returncode == 0, ran.stderr
    shown = subprocess.run([*STOCKADE, "telemetry", "show"], capture_output=True, check=False,
                           env={**os.environ, "COLUMNS": "250"}, timeout=120)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.decode()
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "evil\\x1b[2J\\x1b]0;owned\\x07\\x1b[31m\\u202e" in text
