"""What `stockade serve` tells its operator: routes at start, an access line per
request, functions' stderr (escaped, capped, rate-limited) and every failure's reason,
and `--reload` picking up a rebuilt module."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from stockade.gateway.accesslog import common_line
from stockade.gateway.funclog import LineBudget
from stockade.gateway.messages import Request, Response

from .conftest import Start, module

NOISY = f'''
[server]
telemetry = "off"
stderr_limit = "2KiB"
log_rate = 5
[[function]]
name = "noisy"
route = "/noisy"
methods = ["GET"]
module = "{module("noisy")}"
'''


def access_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("127.0.0.1 - - [")]


def test_routes_and_common_access_log(start_gateway: Start) -> None:
    gateway = start_gateway(NOISY)
    assert re.search(r"route http://127\.0\.0\.1:\d+/noisy \[GET\] -> noisy \(noisy\.wasm; "
                     r"tenant default\)", gateway.log())
    assert gateway.client.get("/noisy?lines=0").status_code == 200
    assert gateway.client.get("/nowhere/\u202e").status_code == 404
    gateway.wait_for_log(r"404 \d+\n")
    lines = access_lines(gateway.log())
    assert re.fullmatch(r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                        r'"GET /noisy\?lines=0 HTTP/1\.1" 200 3', lines[0]), lines
    # The path as sent: percent-encoded, so never the raw override.
    assert '"GET /nowhere/%E2%80%AE HTTP/1.1" 404' in lines[1], lines


def test_common_line_escapes_what_a_client_sent() -> None:
    # The HTTP parser refuses these bytes today; the log does not rely on it.
    request = Request("GET", "/x", "a=\x1b[2J", [], client=("10.0.0.1", 1),
                      raw_path='/"q"\\\u202e'.encode())
    line = common_line(request, Response(404, [], b"gone"), 0.0)
    assert line.endswith(r'"GET /\"q\"\\\xe2\x80\xae?a=\x1b[2J HTTP/1.1" 404 4')
    assert line.startswith("10.0.0.1 - - [")


def test_json_access_log(start_gateway: Start) -> None:
    gateway = start_gateway(NOISY.replace('log_rate = 5', 'log_rate = 5\naccess_log = "json"'))
    gateway.client.get("/noisy?lines=0")
    gateway.wait_for_log(r'"status":200')
    line = next(x for x in gateway.log().splitlines() if x.startswith('{"time"'))
    record = json.loads(line)
    assert record["function"] == "noisy" and record["outcome"] == "exited"
    assert record["target"] == "/noisy?lines=0" and record["bytes"] == 3
    assert re.fullmatch(r"[0-9a-f]{32}", record["invocation_id"])


def test_function_stderr_is_escaped_capped_and_rate_limited(start_gateway: Start) -> None:
    gateway = start_gateway(NOISY)
    response = gateway.client.get("/noisy?lines=2&long=5000")
    assert response.status_code == 200
    gateway.wait_for_log(r"more bytes not logged")
    log = gateway.log()
    stderr = [line for line in log.splitlines() if "] stderr: " in line]
    assert len(stderr) == 4, log  # two lines, the cut long one, the note
    assert "noisy 0 \\x1b[31mred\\x1b[H \\u202e evil\\x0dstockade serve: forged" in stderr[0]
    assert not re.search("[\x1b\r\u202e]", log)
    assert sum(len(line) for line in stderr) < 2048 + 4 * 200  # the cap, plus prefixes
    # 5 lines a second, bursts of 50: a flood is cut, then counted once budget returns.
    for _ in range(3):  # each ~40 lines (the 2 KiB cap): 120 lines against a burst of 50
        gateway.client.get("/noisy?lines=100")
    time.sleep(1.5)
    gateway.client.get("/noisy?lines=1")
    gateway.wait_for_log(r"function noisy: \d+ log lines suppressed \(server\.log_rate\)")
    assert len([x for x in gateway.log().splitlines() if "] stderr: noisy" in x]) < 80


def test_failures_are_logged_with_their_reason(start_gateway: Start) -> None:
    gateway = start_gateway(f'''
[server]
telemetry = "off"
[[function]]
name = "fail"
route = "/fail"
module = "{module("fail")}"
[function.limits]
timeout = "1s"
[[function]]
name = "noisy"
route = "/noisy"
module = "{module("noisy")}"
''')
    assert gateway.client.get("/fail?kind=exit").status_code == 502
    assert gateway.client.get("/fail?kind=sleep&s=5").status_code == 504
    assert gateway.client.get("/fail?kind=trap").status_code == 502
    assert gateway.client.get("/noisy?lines=0&status=500").status_code == 500
    gateway.wait_for_log(r"function noisy \[[0-9a-f]{32}\]: answered 500")
    log = gateway.log()
    assert re.search(r"function fail \[[0-9a-f]{32}\]: 502: function fail: the function "
                     r"wrote nothing .*exited with code 3", log), log
    assert re.search(r"function fail \[[0-9a-f]{32}\]: 504: function fail: .*", log), log
    assert re.search(r"function fail \[[0-9a-f]{32}\]: 502: function fail: .*unreachable",
                     log), log


def test_reload_picks_up_a_rebuilt_module(start_gateway: Start, tmp_path: Path) -> None:
    target = tmp_path / "fn.wasm"
    shutil.copyfile(module("hello"), target)
    gateway = start_gateway('''
[server]
telemetry = "off"
[[function]]
name = "fn"
route = "/fn"
module = "fn.wasm"
''', "--reload")
    before = gateway.client.get("/fn")
    assert before.status_code == 200
    shutil.copyfile(module("args"), tmp_path / "fn.wasm.tmp")
    (tmp_path / "fn.wasm.tmp").replace(target)  # what a build step does
    gateway.wait_for_log(r"fn\.wasm changed: reloading")
    gateway.wait_for_log(r"serving 1 functions from stockade\.toml(.|\n)*serving 1 functions")
    assert gateway.client.get("/fn").text == "fn.wasm\n"
    # A broken module is refused; the last good one keeps serving.
    target.write_bytes(b"not wasm")
    gateway.wait_for_log(r"reload refused, still serving the previous manifest")
    assert gateway.client.get("/fn").text == "fn.wasm\n"


def test_line_budget() -> None:
    budget = LineBudget(rate=2, burst=3)
    assert [budget.take("f", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert budget.take("g", now=0.0)  # per function
    assert budget.take_dropped("f") == 1 and budget.take_dropped("f") == 0
    assert budget.take("f", now=0.5) and not budget.take("f", now=0.5)


@pytest.mark.parametrize("value", ["loud", 0])
def test_bad_access_log_setting(tmp_path: Path, value: object) -> None:
    from stockade.errors import PolicyError
    from stockade.gateway import load_manifest

    path = tmp_path / "stockade.toml"
    path.write_text(f'[server]\naccess_log = {json.dumps(value)}\n[[function]]\nname = "f"\n'
                    'route = "/f"\nmodule = "f.wasm"\n')
    with pytest.raises(PolicyError, match="server.access_log: expected one of common, json, off"):
        load_manifest(path)
