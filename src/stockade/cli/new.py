"""`stockade new`: write a starter manifest and its example function."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError

__all__ = ["new", "MANIFEST", "HELLO_WAT"]

# The same files as examples/stockade.toml and examples/hello.wat (a test pins this).
MANIFEST = '''\
# Functions served by `stockade serve --config stockade.toml`.
# Every request runs in a fresh WebAssembly instance, CGI over WASI: the request comes
# in as environment variables (REQUEST_METHOD, PATH_INFO, QUERY_STRING, HTTP_*, ...)
# and standard input; the function writes CGI headers, an empty line and the body.

[server]
host = "127.0.0.1"
port = 8080
workers = 2
# threads = 8                  # guest threads per worker
# max_body = "1MiB"            # request body limit (413 beyond)
# max_response = "8MiB"        # response body limit (502 beyond)
# request_timeout = "30s"      # caps every function's timeout (504 beyond)
# telemetry = "hybrid"         # OTLP export profile (edge, cloud, on-prem, hybrid) or "off"

[tenant.demo]
concurrency = 16               # invocations at once (429 beyond)
rate = 1000                    # requests per second (429 beyond)
cpu_per_minute = "30s"         # guest CPU time per minute (429 once spent)

[[function]]
name = "hello"
route = "/hello"               # serves /hello and /hello/...
methods = ["GET", "POST"]
module = "hello.wat"           # .wasm, .wat or .cwasm, relative to this file
tenant = "demo"
profile = "strict"             # strict, default or permissive limits
max_concurrency = 8
env = { GREETING = "hello" }

[function.limits]              # overrides of the profile's limits
timeout = "2s"
max_memory = "16MiB"
'''

HELLO_WAT = '''\
;; The starter function: answers every request with a greeting, CGI over WASI
;; (headers, an empty line, then the body, written to standard output).
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Content-Type: text/plain\\n\\nHello from Stockade!\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 47))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
'''


@click.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False),
                default=Path("."))
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def new(directory: Path, force: bool) -> None:
    """Write a starter stockade.toml and its hello function into DIRECTORY (default: .).

    \b
    Then:
      stockade serve --config DIRECTORY/stockade.toml
      curl http://127.0.0.1:8080/hello
    """
    files = {directory / "stockade.toml": MANIFEST, directory / "hello.wat": HELLO_WAT}
    existing = [str(path) for path in files if path.exists()]
    if existing and not force:
        raise UsageError(f"{', '.join(existing)} already exists (use --force to overwrite)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path, text in files.items():
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write to {directory}: {exc.strerror}") from None
    for path in files:
        click.echo(f"wrote {path}")
    click.echo(f"next: stockade serve --config {directory / 'stockade.toml'}")
