"""Attack: a kept-alive connection that sends only the blank lines HTTP allows between
requests (a bare CRLF) after its first response. The bytes cancel the keep-alive
deadline (uvicorn's `_unset_keepalive_if_required` runs on every chunk) yet start no
request head (the parser skips them before a request line), so neither the keep-alive
nor the head deadline is armed: one CRLF holds the connection, and its descriptor and
per-address slot, for as long as the peer likes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Gateway, gateway_env
from .test_protocol import MANIFEST, REQUEST, closed_by_server, connect, read_responses


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("keepalive")
    manifest = root / "stockade.toml"
    manifest.write_text(MANIFEST)
    server = Gateway(manifest, gateway_env(shared_cache, root / "state"), ())
    yield server
    server.stop()


def test_a_blank_line_after_a_response_does_not_outlive_the_deadlines(
        gateway: Gateway) -> None:
    with connect(gateway) as sock:
        sock.sendall(REQUEST)
        [(status, _, _)], _ = read_responses(sock, 1)
        assert status == 200
        sock.sendall(b"\r\n")  # allowed before a request line; starts no head
        # keep_alive_timeout 1 s, header_timeout 2 s: either must end it well within 8 s.
        sock.settimeout(8)
        begun = time.monotonic()
        try:
            answer = closed_by_server(sock)
        except TimeoutError:
            pytest.fail("a connection that sent one CRLF after its response was still "
                        f"open {time.monotonic() - begun:.1f} s later (keep-alive 1 s, "
                        "head timeout 2 s)")
        assert answer in (b"",) or answer.startswith(b"HTTP/1.1 408 ")

