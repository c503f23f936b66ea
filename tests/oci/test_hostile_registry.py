"""Attack tests with a hostile registry (a real HTTP server on 127.0.0.1): a manifest
or referrers index trickled one byte at a time, each byte inside the read timeout,
must not hold a pull, a signature check or a gateway reload for ever."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stockade.oci.errors import RegistryUnavailable
from stockade.oci.reference import parse_reference
from stockade.oci.registry import RegistryClient

INDEX = "application/vnd.oci.image.index.v1+json"


class Trickle(BaseHTTPRequestHandler):
    """Answers every GET with 200 and a body sent one byte every 0.2 s, for ever
    (until the client hangs up)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        kind = INDEX if "/referrers/" in self.path else "application/vnd.oci.image.manifest.v1+json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.end_headers()
        try:
            self.wfile.write(b'{"schemaVersion":2,')
            self.wfile.flush()
            while True:
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            return

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def trickle() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_trickled_manifest_is_refused_at_the_deadline(trickle: str) -> None:
    ref = parse_reference(f"{trickle}/app:1")
    begun = time.monotonic()
    with RegistryClient(ref, frozenset({trickle}), timeout=1.0, deadline=2.0) as client:
        with pytest.raises(RegistryUnavailable, match="did not send it within 2 s"):
            client.get_manifest(ref.repository, "1", str(ref))
    assert time.monotonic() - begun < 20  # containment, not timing: unbounded before


def test_a_trickled_referrers_index_is_refused_at_the_deadline(trickle: str) -> None:
    ref = parse_reference(f"{trickle}/app:1")
    begun = time.monotonic()
    with RegistryClient(ref, frozenset({trickle}), timeout=1.0, deadline=2.0) as client:
        with pytest.raises(RegistryUnavailable, match="did not send it within 2 s"):
            client.referrers(ref.repository, "sha256:" + "cd" * 32)
    assert time.monotonic() - begun < 20
