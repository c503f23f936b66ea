"""Start-up of `stockade run`: which modules a cached hello run imports.

Start-up time is a feature (`stockade run` must cost no more than `import wasmtime`), and
it is lost one import at a time: these tests list what the interpreter imported
(`python -X importtime`) and fail when a module known to be heavy comes back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import guest

# Top-level names of modules that cost a measurable share of a cached run and that the
# run does not need: wasmtime-py's generated bindings, click, `inspect` and what it pulls
# in, OpenSSL (`_hashlib`, `hmac`; `hashlib`, `inspect` and `ipaddress` are deferred by
# `stockade.cli.deferred`), `typing` (~2 ms: modules on this path import it only for type
# checkers), the event loop, TLS, sockets, the OTLP SDK.
HEAVY = frozenset({"wasmtime", "click", "inspect", "ast", "dis", "tokenize", "asyncio",
                   "_hashlib", "hashlib", "hmac", "ipaddress", "typing", "ssl", "socket",
                   "selectors", "opentelemetry", "google"})


def _imported(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, set[str]]:
    """(exit code, stdout, every module name) of `python -X importtime -m stockade ARGS`."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "stockade", *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL, env=env)
    names = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
             if line.startswith("import time:") and line.count("|") == 2}
    return proc.returncode, proc.stdout, names


def _heavy(names: set[str]) -> set[str]:
    return {name for name in names if name.split(".")[0] in HEAVY}


def test_a_cached_hello_run_imports_no_heavy_module() -> None:
    hello = str(guest("hello.wasm"))
    _imported("run", hello)  # the first run may compile; the second is the cached one
    code, out, names = _imported("run", hello)
    assert (code, out) == (0, "Hello from a Stockade sandbox!\n")
    assert "stockade.engine.cache" in names  # the probe sees the run's own modules
    assert _heavy(names) == set()
    # Breakers are off by default: neither they nor SQLite are loaded.
    assert {"stockade.telemetry.breaker", "sqlite3"} & names == set()


def test_no_module_of_a_cached_run_defines_a_typing_named_tuple() -> None:
    # `typing.NamedTuple` compiles each field's annotation (~0.1 ms a class of five):
    # modules on this path use `records.FieldTuple`, the same `collections.namedtuple`.
    import importlib.util
    import re

    hello = str(guest("hello.wasm"))
    _imported("run", hello)
    _, _, names = _imported("run", hello)
    typed = re.compile(r"^class \w+\((typing\.)?NamedTuple\b", re.MULTILINE)
    found = set()
    for name in sorted(n for n in names if n.startswith("stockade")):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        if typed.search(Path(spec.origin).read_text()):
            found.add(name)
    assert found == set()


def test_the_probe_sees_a_heavy_module_when_one_is_imported() -> None:
    # The check above can fail: forcing wasmtime-py puts it (and inspect) in the list.
    env = dict(os.environ, STOCKADE_BACKEND="wasmtime")
    code, _, names = _imported("run", str(guest("hello.wasm")), env=env)
    assert code == 0
    assert "wasmtime" in _heavy(names)


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_deferred_inspect_becomes_the_real_module_on_first_use() -> None:
    out = _python(
        "import sys\n"
        "from stockade.cli.deferred import defer_modules\n"
        "defer_modules()\n"
        "import dataclasses\n"
        "print('ast' in sys.modules)\n"
        "@dataclasses.dataclass\n"
        "class NoDoc:\n"  # the one place dataclasses reads inspect
        "    x: int = 1\n"
        "print(NoDoc.__doc__)\n"
        "import inspect\n"
        "print(inspect.signature(lambda a, b=2: a), inspect.isfunction(len))\n"
        "print(dataclasses.inspect.getmodule(NoDoc).__name__)\n"
        "print(sys.modules['inspect'].signature is inspect.signature)\n")
    assert out.splitlines() == ["False", "NoDoc(x: int = 1)", "(a, b=2) False", "__main__",
                                "True"]


def test_deferred_hashlib_becomes_the_real_module_on_first_use() -> None:
    out = _python(
        "import sys\n"
        "from stockade.cli.deferred import defer_modules\n"
        "defer_modules()\n"
        "import hashlib\n"
        "print('_hashlib' in sys.modules)\n"
        "print(hashlib.sha256(b'abc').hexdigest()[:8])\n"
        "import hmac\n"
        "print(hmac.new(b'k', b'abc', 'sha256').hexdigest()[:8])\n"
        "from hashlib import blake2b\n"
        "print(sys.modules['hashlib'].blake2b is blake2b, '_hashlib' in sys.modules)\n")
    assert out.splitlines() == ["False", "ba7816bf", "342e519c", "True True"]


def test_deferred_ipaddress_becomes_the_real_module_on_first_use() -> None:
    out = _python(
        "import sys\n"
        "from stockade.cli.deferred import defer_modules\n"
        "defer_modules()\n"
        "from urllib.parse import urlsplit\n"
        "print(type(sys.modules['ipaddress']).__name__)\n"
        "try:\n"
        "    urlsplit('http://[1.2.3.4]/')\n"  # urllib.parse checks a bracketed host with it
        "except ValueError as exc:\n"
        "    print(exc)\n"
        "import ipaddress\n"
        "print(urlsplit('http://[::1]:80/').hostname, ipaddress.ip_address('::1').version)\n")
    assert out.splitlines() == ["_Deferred", "An IPv4 address cannot be in brackets", "::1 6"]


def test_an_imported_module_is_left_alone() -> None:
    assert _python("import inspect, hashlib, sys\n"
                   "from stockade.cli.deferred import defer_modules\n"
                   "defer_modules()\n"
                   "print(sys.modules['inspect'] is inspect, "
                   "sys.modules['hashlib'] is hashlib)") == "True True"


def test_collection_paused_for_start_up_is_restored_when_a_run_ends_early() -> None:
    # The fast lane pauses garbage collection for start-up; a caller that goes on in the
    # same process (here: after a usage error) gets it back as it was.
    out = _python("import gc\n"
                  "from stockade.cli import main\n"
                  "try:\n"
                  "    main(['run', '--profile', 'bogus', 'x.wasm'])\n"
                  "except SystemExit as done:\n"
                  "    print(done.code, gc.isenabled(), gc.get_freeze_count())\n")
    assert out == "125 True 0"
