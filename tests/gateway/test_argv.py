"""Manifest `argv`: a function's command line, checked when loaded and passed by both
executors; a real CPython CGI handler served from a granted directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stockade.errors import PolicyError
from stockade.gateway import load_manifest
from stockade.gateway.argv import MAX_ARGS, MAX_ARGV_BYTES

from .conftest import Start, module

HANDLER = '''\
import json, os, sys
request = json.loads(sys.stdin.read() or "null")
print("handler saw", os.environ["REQUEST_METHOD"], file=sys.stderr)
sys.stdout.write("Content-Type: application/json\\n\\n")
json.dump({"method": os.environ["REQUEST_METHOD"], "path": os.environ["PATH_INFO"],
           "argv": sys.argv, "sum": sum(request["numbers"])}, sys.stdout)
'''


def load(tmp_path: Path, argv: str) -> tuple[str, ...]:
    path = tmp_path / "stockade.toml"
    path.write_text(f'[[function]]\nname = "f"\nroute = "/f"\nmodule = "f.wasm"\n'
                    f"argv = {argv}\n")
    return load_manifest(path).functions[0].argv


def test_argv_is_kept_and_args_exclude_the_program(tmp_path: Path) -> None:
    assert load(tmp_path, '["python", "/app/handler.py", "-v"]') == (
        "python", "/app/handler.py", "-v")
    path = tmp_path / "stockade.toml"
    spec = load_manifest(path).functions[0]
    assert spec.args == ("/app/handler.py", "-v")


@pytest.mark.parametrize(("argv", "message"), [
    ('"python /app/handler.py"', "expected a list"),
    ("[]", "expected a list"),
    ('["python", 3]', "argv[1]: expected a string"),
    ('["python", "a\\u0000b"]', "argv[1]: contains a NUL byte"),
    ('[""]', "argv[0]: the program name must not be empty"),
    (json.dumps(["x"] * (MAX_ARGS + 1)), f"at most {MAX_ARGS}"),
    (json.dumps(["x", "y" * MAX_ARGV_BYTES]), f"at most {MAX_ARGV_BYTES}"),
])
def test_bad_argv_names_the_key(tmp_path: Path, argv: str, message: str) -> None:
    with pytest.raises(PolicyError, match=r"function\[0\] \(f\)\.argv") as caught:
        load(tmp_path, argv)
    assert message in caught.value.message


@pytest.mark.parametrize("isolate", ["process", "none"])
@pytest.mark.parametrize("executor", ["fast", "sandbox"])
def test_both_executors_pass_the_arguments(start_gateway: Start, executor: str,
                                           isolate: str) -> None:
    """In a cordon's pool process (strict's default) and in the gateway worker alike."""
    gateway = start_gateway(f'''
[server]
telemetry = "off"
executor = "{executor}"
[[function]]
name = "args"
route = "/args"
module = "{module("args")}"
isolate = "{isolate}"
argv = ["args", "two words", "--flag", "é"]
''')
    response = gateway.client.get("/args")
    assert response.status_code == 200, response.text
    assert response.text.splitlines() == ["args.wasm", "two words", "--flag", "é"]


def test_python_cgi_handler_answers_json(start_gateway: Start, python_wasm: Path,
                                         tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "handler.py").write_text(HANDLER)
    gateway = start_gateway(f'''
[server]
telemetry = "off"
[[function]]
name = "py"
route = "/py"
module = "{python_wasm}"
argv = ["python", "/app/handler.py"]
dirs = ["app:/app"]
profile = "default"
''')
    response = gateway.client.post("/py/sum", json={"numbers": [1, 2, 39]})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"method": "POST", "path": "/sum",
                               "argv": ["/app/handler.py"], "sum": 42}
    # Its stderr and the access line, in the server log.
    gateway.wait_for_log(r"function py \[[0-9a-f]{32}\] stderr: handler saw POST")
    gateway.wait_for_log(r'"POST /py/sum HTTP/1\.1" 200 ')
