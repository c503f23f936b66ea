"""Parsing what the benchmark guests print, and what must agree across backends."""

from __future__ import annotations

import subprocess

from stockade.bench.guestio import fingerprint, output_digest, parse_report

from ..conftest import ROOT

LINE = b"bench kernel=fnv size=1048576 hot_ns=977000 checksum=39c8bb520cbd9f0c\n"


def test_report_line_is_parsed() -> None:
    report = parse_report(b"noise\n" + LINE)
    assert report is not None
    assert (report.kernel, report.size, report.hot_ns) == ("fnv", 1048576, 977000)
    assert report.checksum == "39c8bb520cbd9f0c"


def test_kernel_fingerprint_ignores_timing() -> None:
    slower = LINE.replace(b"hot_ns=977000", b"hot_ns=9770000")
    assert fingerprint(LINE, b"")[0] == fingerprint(slower, b"")[0] == (
        "fnv:1048576:39c8bb520cbd9f0c")
    assert fingerprint(LINE, b"")[1] == 977000


def test_echo_fingerprint_is_the_payload_hash_with_timing_from_stderr() -> None:
    payload = b"x" * 5000
    stderr = b"bench kernel=echo size=5000 hot_ns=1234 checksum=0000000000001388\n"
    assert fingerprint(payload, stderr) == (output_digest(payload), 1234)


def test_plain_output_is_hashed() -> None:
    assert fingerprint(b"hello\n", b"") == (output_digest(b"hello\n"), None)


def test_native_guest_prints_a_parsable_report() -> None:
    binary = ROOT / "build" / "native" / "bench" / "compute"
    done = subprocess.run([str(binary), "sieve", "1000"], capture_output=True, check=True)
    report = parse_report(done.stdout)
    assert report is not None and report.kernel == "sieve" and report.size == 1000
