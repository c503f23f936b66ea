"""The starter projects `stockade new --lang wat|c|python` writes: a manifest and one
function that serves out of the box, CGI over WASI (request in environment variables
and standard input, headers + an empty line + body out)."""

from __future__ import annotations

__all__ = ["LANGUAGES", "Template", "TEMPLATES", "manifest", "C_BUILD"]

LANGUAGES = ("wat", "c", "python")
# The C template's build step (also written as its Makefile). Debian's clang finds
# wasi-libc without --sysroot.
C_BUILD = ("clang", "--target=wasm32-wasi", "-O2", "-o", "hello.wasm", "hello.c")

_HEADER = '''\
# Functions served by `stockade serve --config stockade.toml`.
# Every request runs in a fresh WebAssembly instance, CGI over WASI: the request comes
# in as environment variables (REQUEST_METHOD, PATH_INFO, QUERY_STRING, HTTP_*, ...)
# and standard input; the function writes CGI headers, an empty line and the body.
# Its standard error goes to the server log.

[server]
host = "127.0.0.1"
port = 8080
workers = 2
# threads = 8                  # guest threads per worker
# max_body = "1MiB"            # request body limit (413 beyond)
# max_response = "8MiB"        # response body limit (502 beyond)
# request_timeout = "30s"      # caps every function's timeout (504 beyond)
# telemetry = "hybrid"         # OTLP export profile (edge, cloud, on-prem, hybrid) or "off"
# access_log = "common"        # or "json", or "off"
# stderr_limit = "4KiB"        # of a function's stderr logged per request

[tenant.demo]
concurrency = 16               # invocations at once (429 beyond)
rate = 1000                    # requests per second (429 beyond)
cpu_per_minute = "30s"         # guest CPU time per minute (429 once spent)
'''

_WAT_FUNCTION = '''
[[function]]
name = "hello"
route = "/hello"               # serves /hello and /hello/...
methods = ["GET", "POST"]
module = "hello.wat"           # .wasm, .wat or .cwasm, relative to this file
tenant = "demo"
profile = "strict"             # strict, default or permissive limits
max_concurrency = 8
env = { GREETING = "Hello" }

[function.limits]              # overrides of the profile's limits
timeout = "2s"
max_memory = "16MiB"
'''

_C_FUNCTION = '''
[[function]]
name = "hello"
route = "/hello"               # serves /hello and /hello/...; try /hello?name=you
methods = ["GET", "POST"]
module = "hello.wasm"          # built from hello.c by `make` (clang --target=wasm32-wasi)
tenant = "demo"
profile = "strict"             # strict, default or permissive limits
max_concurrency = 8
env = { GREETING = "Hello" }

[function.limits]              # overrides of the profile's limits
timeout = "2s"
max_memory = "16MiB"
'''

_PYTHON_FUNCTION = '''
[[function]]
name = "hello"
route = "/hello"               # serves /hello and /hello/...
methods = ["GET", "POST"]
module = "{python}"            # CPython built for WASI
argv = ["python", "/app/handler.py"]  # the interpreter runs the handler...
dirs = ["app:/app"]            # ...from this directory, granted read-only
tenant = "demo"
profile = "default"            # CPython needs more memory than "strict" gives
max_concurrency = 8
env = {{ GREETING = "Hello" }}

[function.limits]              # overrides of the profile's limits
timeout = "10s"
max_memory = "64MiB"
'''

HELLO_WAT = r''';; The starter function: answers every request with "<GREETING> from Stockade!",
;; GREETING read from its environment (the manifest sets it; "Hello" without it), CGI
;; over WASI (headers, an empty line, then the body, written to standard output).
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))
  ;; 0-15: iovec and sizes; 16-127: text; 4096-8191: up to 1,024 variable pointers;
  ;; 8192 to the end of the two pages: the variables themselves.
  (memory (export "memory") 2)
  (data (i32.const 16) "Content-Type: text/plain\n\n")
  (data (i32.const 64) "GREETING=")
  (data (i32.const 80) "Hello")
  (data (i32.const 96) " from Stockade!\n")

  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  ;; 1 when the variable at $p starts with "GREETING=".
  (func $is_greeting (param $p i32) (result i32)
    (local $k i32)
    (block $no
      (loop $next
        (if (i32.eq (local.get $k) (i32.const 9)) (then (return (i32.const 1))))
        (br_if $no (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $k)))
                           (i32.load8_u (i32.add (i32.const 64) (local.get $k)))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; GREETING's value as (pointer, length), or the default.
  (func $greeting (result i32 i32)
    (local $count i32) (local $i i32) (local $p i32) (local $n i32)
    (if (call $environ_sizes_get (i32.const 8) (i32.const 12))
      (then (return (i32.const 80) (i32.const 5))))
    (local.set $count (i32.load (i32.const 8)))
    ;; More variables than the space set aside: answer with the default.
    (if (i32.or (i32.gt_u (local.get $count) (i32.const 1024))
                (i32.gt_u (i32.load (i32.const 12)) (i32.const 122880)))
      (then (return (i32.const 80) (i32.const 5))))
    (if (call $environ_get (i32.const 4096) (i32.const 8192))
      (then (return (i32.const 80) (i32.const 5))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $p (i32.load (i32.add (i32.const 4096) (i32.shl (local.get $i) (i32.const 2)))))
        (if (call $is_greeting (local.get $p))
          (then
            (local.set $p (i32.add (local.get $p) (i32.const 9)))
            (block $end
              (loop $scan
                (br_if $end (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
                (local.set $n (i32.add (local.get $n) (i32.const 1)))
                (br $scan)))
            (return (local.get $p) (local.get $n))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 80) (i32.const 5))

  (func (export "_start")
    (local $len i32) (local $ptr i32)
    (call $write (i32.const 16) (i32.const 26))
    (call $greeting)
    (local.set $len)
    (local.set $ptr)
    (call $write (local.get $ptr) (local.get $len))
    (call $write (i32.const 96) (i32.const 16))))
'''

HELLO_C = r'''// The starter function in C: answers "<GREETING>, <name>!" (?name=you), CGI
// over WASI.
// Build: make (clang --target=wasm32-wasi -O2 -o hello.wasm hello.c); `stockade serve
// --reload` serves the rebuilt module as soon as it is written.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    const char *greeting = getenv("GREETING");
    const char *method = getenv("REQUEST_METHOD");
    const char *query = getenv("QUERY_STRING");
    char name[64] = "world";
    if (query && strncmp(query, "name=", 5) == 0) {  // not percent-decoded
        size_t n = strcspn(query + 5, "&");
        if (n > 0 && n < sizeof name) {
            memcpy(name, query + 5, n);
            name[n] = 0;
        }
    }
    // Standard error goes to the server log, one line per line.
    fprintf(stderr, "hello: %s for %s\n", method ? method : "?", name);
    printf("Content-Type: text/plain\n\n%s, %s!\n", greeting ? greeting : "Hello", name);
    return 0;
}
'''

C_MAKEFILE = '''\
# Builds the function's module: clang with wasi-libc (Debian: clang lld wasi-libc).
hello.wasm: hello.c
\t{build}
'''.format(build=" ".join(C_BUILD[:-3] + ("-o", "$@", "$<")))

HANDLER_PY = '''\
"""The starter function in Python: a CGI handler run by CPython for WASI.

The request: environment variables (REQUEST_METHOD, PATH_INFO, QUERY_STRING, HTTP_*)
and the body on standard input. The response: headers, an empty line, the body on
standard output. Standard error goes to the server log.
"""

import json
import os
import sys


def main() -> None:
    body = sys.stdin.read()
    try:
        received = json.loads(body) if body else None
    except ValueError:
        sys.stdout.write("Status: 400 Bad Request\\nContent-Type: application/json\\n\\n")
        json.dump({"error": "the body is not JSON"}, sys.stdout)
        return
    method, path = os.environ["REQUEST_METHOD"], os.environ.get("PATH_INFO") or "/"
    print(f"handler: {method} {path}", file=sys.stderr)
    sys.stdout.write("Content-Type: application/json\\n\\n")
    json.dump({"greeting": os.environ.get("GREETING", "Hello"), "method": method,
               "path": path, "query": os.environ.get("QUERY_STRING", ""),
               "received": received}, sys.stdout)


main()
'''

Template = dict[str, str]  # relative file name -> text


def manifest(lang: str, python: str = "python.wasm") -> str:
    """The stockade.toml of the `lang` starter (`python`: the interpreter's path)."""
    if lang == "c":
        return _HEADER + _C_FUNCTION
    if lang == "python":
        return _HEADER + _PYTHON_FUNCTION.format(python=python.replace("\\", "\\\\")
                                                 .replace('"', '\\"'))
    return _HEADER + _WAT_FUNCTION


TEMPLATES: dict[str, Template] = {
    "wat": {"hello.wat": HELLO_WAT},
    "c": {"hello.c": HELLO_C, "Makefile": C_MAKEFILE},
    "python": {"app/handler.py": HANDLER_PY},
}
