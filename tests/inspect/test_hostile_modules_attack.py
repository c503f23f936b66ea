"""Hostile module files against `inspect`, `check --module` and `advise --module`.

The contract: one clear line and the documented exit code (126 for a malformed module),
in bounded time and memory, never a traceback. Each child runs under a 2 GiB address
space limit (the page bomb asks for 4 GiB: the old code fails fast with MemoryError
instead of eating the host) and its peak RSS is read from `wait4`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade import binary as wasm
from stockade.binary import MalformedModule
from stockade.binary import encode_leb as leb
from stockade.inspect.report import Inspection, inspect_module
from stockade.policy import load_policy
from tests.conftest import guest, stockade, stockade_measured

MiB = 1 << 20
PEAK = 200 * MiB  # a stockade process inspecting a few MiB needs ~60 MB
BIG_LOG2 = b"\xff\xff\xff\xff\x7f"  # a page size of 2**(2**35 - 1) bytes


def _section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + leb(len(payload)) + payload


def _name(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return leb(len(raw)) + raw


def _custom(name: str | bytes, payload: bytes) -> bytes:
    return _section(0, _name(name) + payload)


def _module(*sections: bytes) -> bytes:
    return wasm.MAGIC + b"".join(sections)


def _run(*args: str) -> tuple[int, str, str, int]:
    """`stockade ARGS` within 2 GiB of address space and 60 s of CPU: (exit status,
    stdout, stderr, peak RSS bytes)."""
    status, out, err, peak = stockade_measured(*args, address_space=2 << 30, cpu_seconds=60)
    return status, out.decode(errors="replace"), err.decode(errors="replace"), peak


# -- 1. the custom-page-size bomb -------------------------------------------------------

PAGE_BOMBS = {
    "memory": _module(_section(5, leb(1) + b"\x08" + leb(1) + BIG_LOG2)),
    "three-memories": _module(_section(5, leb(3) + (b"\x08" + leb(1) + BIG_LOG2) * 3)),
    "memory-import": _module(_section(2, leb(1) + _name("env") + _name("mem")
                                      + b"\x02\x08" + leb(1) + BIG_LOG2)),
    "two-memory-imports": _module(_section(2, leb(2) + (_name("e") + _name("m") + b"\x02\x08"
                                                        + leb(1) + BIG_LOG2) * 2)),
    "table": _module(_section(4, leb(1) + b"\x70\x08" + leb(1) + BIG_LOG2)),
}


@pytest.mark.parametrize("kind", PAGE_BOMBS)
def test_a_page_size_bomb_is_malformed_in_bounded_memory(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "bomb.wasm"
    path.write_bytes(PAGE_BOMBS[kind])
    assert path.stat().st_size < 40
    for args in (("inspect", str(path)), ("advise", "--module", str(path)),
                 ("check", "--no-host", "--module", str(path))):
        status, out, err, peak = _run(*args)  # each reads the module as inspect does
        assert "Traceback" not in err and "MemoryError" not in err, (args, err)
        assert status == 126, (args, status, err)
        assert peak < PEAK, (args, peak)
        assert err.count("\n") == 1 and "bomb.wasm" in err, err


@pytest.mark.parametrize("log2", [1, 15, 17, 64, 2**35 - 1])
def test_only_the_page_sizes_the_proposal_allows_are_read(log2: int) -> None:
    payload = leb(1) + b"\x08" + leb(1) + leb(log2)
    with pytest.raises(MalformedModule, match="page size"):
        wasm.read_limits_section(payload, wasm.Section(5, 0, 0, len(payload)))


@pytest.mark.parametrize(("log2", "size"), [(0, 1), (16, 65536)])
def test_the_allowed_page_sizes_are_read(log2: int, size: int) -> None:
    payload = leb(1) + b"\x08" + leb(1) + leb(log2)
    [limits] = wasm.read_limits_section(payload, wasm.Section(5, 0, 0, len(payload)))
    assert (limits.minimum, limits.page_size) == (1, size)


# -- 2. one Python object per entry ---------------------------------------------------

def _many(kind: str, size: int = 8 * MiB) -> bytes:
    """The reviewer's shapes: sections of the smallest entries a file can hold."""
    if kind == "imports":
        one = _name("") + _name("") + b"\x00" + leb(0)
        return _module(_section(1, b"\x01\x60\x00\x00"),
                       _section(2, leb(size // 4) + one * (size // 4)))
    if kind == "exports":
        return _module(_section(7, leb(size // 3) + (_name("") + b"\x00\x00") * (size // 3)))
    if kind == "bodies":
        return _module(_section(10, leb(size // 2) + b"\x01\x00" * (size // 2)))
    if kind == "elements":
        return _module(_section(9, leb(size // 3) + b"\x01\x00\x00" * (size // 3)))
    assert kind == "data"
    return _module(_section(11, leb(size // 2) + b"\x01\x00" * (size // 2)))


@pytest.mark.parametrize("kind", ["imports", "exports", "bodies", "elements", "data"])
def test_inspect_of_millions_of_tiny_entries_is_refused_in_bounded_memory(
        kind: str, tmp_path: Path) -> None:
    # Before: 8 MiB of data segments cost 490 MB (64 MiB: 3.5 GB and 66 s).
    path = tmp_path / f"many_{kind}.wasm"
    path.write_bytes(_many(kind))
    started = time.monotonic()
    status, _, err, peak = _run("inspect", str(path))
    assert status == 126 and "malformed module" in err and err.count("\n") == 1, err
    assert peak < PEAK, peak
    assert time.monotonic() - started < 30


def test_advise_and_check_read_millions_of_entries_in_bounded_memory(tmp_path: Path) -> None:
    imports, data = tmp_path / "imports.wasm", tmp_path / "data.wasm"
    imports.write_bytes(_many("imports"))
    data.write_bytes(_many("data"))
    status, _, err, peak = _run("advise", "--module", str(imports))
    assert status == 126 and "Traceback" not in err and peak < PEAK, (status, err, peak)
    status, out, err, peak = _run("check", "--no-host", "--module", str(data))
    assert status == 126 and "Traceback" not in err and peak < PEAK, (status, err, peak)


def _refused(reader: str, payload: bytes, section_id: int) -> None:
    section = wasm.Section(section_id, 0, 0, len(payload))
    with pytest.raises(MalformedModule, match="limit"):
        getattr(wasm, reader)(payload, section)


def test_counts_past_the_validators_limits_are_refused_before_entries_are_built() -> None:
    # wasmparser's limits (wasmtime refuses a module past any of them): no module it
    # loads holds more, so the reader builds no more.
    _refused("read_data", leb(100_001) + b"\x01\x00" * 100_001, 11)
    _refused("read_element_counts", leb(100_001) + b"\x01\x00\x00" * 100_001, 9)
    _refused("read_exports", leb(1_000_001) + b"\x00\x00\x00" * 1_000_001, 7)
    _refused("read_bodies", leb(1_000_001) + b"\x01\x00" * 1_000_001, 10)
    _refused("read_count", leb(1_000_001) + b"\x00" * 1_000_001, 3)
    _refused("read_limits_section", leb(101) + b"\x00\x00" * 101, 5)
    _refused("read_table_section", leb(101) + b"\x70\x00\x00" * 101, 4)
    entries = 10_000_001  # in one passive segment
    _refused("read_element_counts", leb(1) + b"\x01\x00" + leb(entries) + bytes(entries), 9)
    imports = leb(1_000_001) + b"\x00\x00\x00\x00" * 1_000_001
    with pytest.raises(MalformedModule, match="limit"):
        wasm.read_imports(imports, wasm.Section(2, 0, 0, len(imports)))
    long_name = leb(1) + _name("m" * 100_001) + _name("f") + b"\x00\x00"
    with pytest.raises(MalformedModule, match="limit"):
        wasm.read_imports(long_name, wasm.Section(2, 0, 0, len(long_name)))


def test_a_module_at_the_validators_limits_is_still_inspected() -> None:
    data = _module(
        _section(1, b"\x01\x60\x00\x00"),
        _section(2, leb(1) + _name("m" * 100_000) + _name("f") + b"\x00\x00"),
        _section(4, leb(100) + b"\x70\x00\x00" * 100),
        _section(5, leb(100) + b"\x00\x00" * 100),
        _section(9, leb(100_000) + b"\x01\x00\x00" * 100_000),
        _section(11, leb(100_000) + b"\x01\x00" * 100_000))
    report = inspect_module(data, "edge.wasm")
    assert (len(report.tables), len(report.memories)) == (100, 100)
    assert (len(report.element_segments), len(report.data_segments)) == (100_000, 100_000)
    assert len(report.imports[0].module) == 100_000


def _cpu(data: bytes) -> tuple[float, Inspection]:
    started = time.process_time()
    report = inspect_module(data, "custom.wasm")
    return time.process_time() - started, report


def test_a_name_section_of_millions_of_subsections_costs_no_walk_of_them() -> None:
    # Before: 8 MiB of empty subsections, 3.9 s (64 MiB: 31 s); subsections come once
    # each, in order of their ids.
    spent, report = _cpu(_module(_custom("name", b"\x02\x00" * (4 * MiB))))
    assert spent < 1.0
    assert any("name" in f.message and "ignored" in f.message for f in report.findings)
    ordered = _custom("name", b"\x00" + leb(4) + _name("mod") + b"\x01\x01\x00")
    _, report = _cpu(_module(ordered))
    assert report.module_name == "mod"


def test_producers_sections_are_read_boundedly() -> None:
    # Before: 4M empty fields, 5.9 s; 3,000 sections of 1,000 values, seconds more.
    fields = 4 * MiB
    spent, _ = _cpu(_module(_custom("producers", leb(fields) + b"\x00\x00" * fields)))
    assert spent < 1.0
    one = _custom("producers", leb(1) + _name("language") + leb(1_000)
                  + _name("C") * 2_000)
    spent, report = _cpu(_module(*[one] * 3_000))
    assert spent < 1.5
    assert report.producers == {"language": [("C", "C")] * 1_000}


# -- 3. control characters in `inspect --policy` -------------------------------------

_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_the_policy_escapes_import_and_file_names(tmp_path: Path) -> None:
    evil = b"\x1b]0;pwned\x07\x1b[2J\r\n\xe2\x80\xae"
    data = _module(
        _section(1, b"\x01\x60\x00\x00"),
        _section(2, leb(2) + _name(evil) + _name(evil) + b"\x00\x00"
                 + _name("wasi_snapshot_preview1") + _name(b"path_open\x1b[31m") + b"\x00\x00"))
    path = tmp_path / "evil\x1b[2J\r.wasm"
    path.write_bytes(data)
    done = stockade("inspect", "--policy", str(path))
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert not _UNSAFE.search(text), [line for line in text.splitlines() if _UNSAFE.search(line)]
    assert "\\x1b" in text and "\\u202e" in text
    policy = tmp_path / "policy.toml"
    policy.write_text(text)
    load_policy(policy)  # still TOML: a comment may hold no control character


# -- 4. what `check` says of a module it cannot open ----------------------------------

def test_check_names_the_real_reason_a_module_cannot_be_opened(tmp_path: Path) -> None:
    loop = tmp_path / "loop.wasm"
    loop.symlink_to(loop)
    inspected = stockade("inspect", str(loop))
    checked = stockade("check", "--no-host", "--module", str(loop))
    assert b"Too many levels of symbolic links" in inspected.stderr
    assert b"Too many levels of symbolic links" in checked.stderr, checked.stderr
    assert checked.returncode == inspected.returncode == 126
    missing = stockade("check", "--no-host", "--module", str(tmp_path / "absent.wasm"))
    assert missing.returncode == 127 and b"no such module file" in missing.stderr
    assert stockade("check", "--no-host", "--module", str(guest("hello.wasm"))).returncode in (0, 1)


# -- 5. a type section the validator holds many times over ----------------------------

def _type_bomb(types: int) -> bytes:
    """`types` distinct function types of 1,000 parameters and 1,000 results (2 KB each).
    wasmtime's validator keeps ~16 bytes per byte of them (478 MiB of them: 8.4 GB), and
    pricing their code read each value type in Python (~130 ns a byte)."""
    def one(index: int) -> bytes:
        distinct = bytes(0x7F if (index >> bit) & 1 else 0x7E for bit in range(18))
        return b"\x60" + leb(1_000) + distinct + b"\x7d" * 982 + leb(1_000) + b"\x7c" * 1_000

    return _module(_section(1, leb(types) + b"".join(one(i) for i in range(types))))


@pytest.fixture(scope="module")
def type_bomb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """64 MB of function types: the validator wants ~1 GB for them."""
    path = tmp_path_factory.mktemp("types") / "types.wasm"
    path.write_bytes(_type_bomb(32_000))
    yield path
    path.unlink()


@pytest.mark.parametrize("command", ["inspect", "sign", "check"])
def test_a_module_the_validator_holds_many_times_over_is_refused_at_a_bound(
        command: str, type_bomb: Path, tmp_path: Path) -> None:
    # Before: validated in the command's own process without a bound (478 MiB: 79 s and
    # 8.4 GB; under an address-space limit, exit 134 and a Rust backtrace).
    if command == "sign":
        assert stockade("keygen", str(tmp_path / "k")).returncode == 0
        args = ["sign", "--key", str(tmp_path / "k"), "-o", str(tmp_path / "s.wasm")]
    else:
        args = ["check", "--no-host", "--module"] if command == "check" else ["inspect"]
    started = time.monotonic()
    status, _, err, peak = _run(*args, str(type_bomb))
    assert status == 126 and err.count("\n") == 1, (status, err[-2000:])
    assert "types.wasm: validating it needed more than 768MiB of memory" in err, err
    assert peak < 1 << 30, peak
    assert time.monotonic() - started < 30
    assert not (tmp_path / "s.wasm").exists()


def test_pricing_a_type_section_costs_no_python_per_value_type() -> None:
    from stockade.codework import TRAMPOLINE_BASE, TRAMPOLINE_PARAM, TRAMPOLINE_RESULT, code_work

    data = _type_bomb(4_000)  # 8 MB: ~1.5 s of CPU before
    started = time.process_time()
    work = code_work(data)
    assert time.process_time() - started < 0.5
    each = TRAMPOLINE_BASE + 1_000 * TRAMPOLINE_PARAM + 1_000 * TRAMPOLINE_RESULT
    assert work == [(0, 0.0, each)] * 4_000
    # A reference type's heap type is read as before: (ref null 0) is two bytes, one value.
    mixed = _module(_section(1, leb(1) + b"\x60" + leb(3) + b"\x7f\x63\x00\x7e"
                             + leb(2) + b"\x64\x70\x7f"))
    assert code_work(mixed) == [(0, 0.0, TRAMPOLINE_BASE + 3 * TRAMPOLINE_PARAM
                                 + 2 * TRAMPOLINE_RESULT)]
