"""`stockade inspect`: real guests, the real CPython and QuickJS, hostile inputs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import wasmtime

from stockade import Invocation, ModuleError, Outcome, Policy, Sandbox
from stockade.binary import MalformedModule
from stockade.binary import encode_leb as leb
from stockade.inspect.least import least_privilege_policy
from stockade.inspect.report import inspect_module
from stockade.policy import load_policy
from stockade.sandbox.imports import denied_import
from stockade.trust import sign_module
from stockade.trust.keys import SecretKey
from stockade.trust.wasmsig import SignatureData, SignatureEntry, SignedHashes, split
from tests.conftest import GUESTS, REAL, guest, stockade

ALL_GUESTS = sorted(GUESTS.rglob("*.wasm"))
_sandbox = Sandbox(Policy.from_profile("permissive"))
_gc_sandbox = Sandbox(Policy.from_profile("permissive").with_limits(wasm_gc=True))
REAL_MODULES = [REAL / "python.wasm", REAL / "quickjs.wasm"]


def _module(*sections: tuple[int, bytes]) -> bytes:
    out = bytearray(b"\0asm\x01\0\0\0")
    for section_id, payload in sections:
        out += bytes([section_id]) + leb(len(payload)) + payload
    return bytes(out)


def _name(text: str) -> bytes:
    raw = text.encode()
    return leb(len(raw)) + raw


@pytest.mark.parametrize("path", ALL_GUESTS + REAL_MODULES, ids=lambda p: p.name)
def test_imports_and_refusals_agree_with_wasmtime(path: Path) -> None:
    if not path.exists():
        pytest.fail(f"{path} missing: run `make guests` / `make real-guests` first")
    data = path.read_bytes()
    report = inspect_module(data, path.name)
    assert report.defined_functions == len(report.bodies)
    if report.compile_cost > 15:  # a compile bomb: its shape is test_guard's business
        assert "compile" in " ".join(f.message for f in report.findings)
        return
    if report.gc_heap:  # refused by default, saying how to allow it
        with pytest.raises(ModuleError, match="--wasm-gc"):
            _sandbox.load(path)
    sandbox = _gc_sandbox if report.gc_heap else _sandbox
    module = sandbox.load(path).module  # through the session's AoT cache
    assert [i.qualified for i in report.imports] == [f"{i.module}.{i.name}"
                                                     for i in module.imports]
    assert sorted(e.name for e in report.exports) == sorted(
        e.name for e in sandbox.load(path).exports)
    refused = denied_import(module)
    assert bool(report.capabilities.denied) == (refused is not None)
    if refused is not None:
        assert refused[0] in dict(report.capabilities.denied)
        assert report.findings[0].risk == "high"
    grouped = sum(len(v) for v in report.capabilities.groups.values())
    assert grouped == len(report.imports)


def test_wasix_sockets_are_named_as_denied() -> None:
    report = inspect_module(guest("needs_sockets.wasm").read_bytes(), "needs_sockets.wasm")
    assert "imports WASIX sockets" in report.findings[0].message
    assert "denied" in report.findings[0].message


def test_cpython_capabilities_and_time(python_wasm: Path) -> None:
    data = python_wasm.read_bytes()
    start = time.process_time()
    report = inspect_module(data, "python.wasm")
    elapsed = time.process_time() - start
    # Bounded, not timed: decoding its large bodies for the compile guard's heavy sites
    # (`codework`) takes about a second of Python; reading the rest a fraction of that.
    assert elapsed < 5.0, f"inspecting CPython took {elapsed:.2f} s of CPU"
    groups = report.capabilities.groups
    assert "wasi_snapshot_preview1.path_open" in groups["filesystem"]
    assert "wasi_snapshot_preview1.random_get" in groups["random"]
    assert "wasi_snapshot_preview1.sock_accept" in groups["sockets"]
    assert not report.capabilities.denied
    assert report.defined_functions > 10_000
    assert 5 < report.compile_cost < 15  # the guard's model: ~9.5 s predicted
    assert any(name == "clang" for name, _ in report.producers["processed-by"])


@pytest.mark.cpython
def test_least_privilege_policy_lets_cpython_run(python_wasm: Path, tmp_path: Path) -> None:
    report = inspect_module(python_wasm.read_bytes(), "python.wasm")
    policy_file = tmp_path / "least.toml"
    policy_file.write_text(least_privilege_policy(report))
    policy = load_policy(policy_file)
    assert policy.capabilities.dirs == () and policy.capabilities.env_allow == ()
    assert policy.limits.max_memory < 128 * 1024**2  # tighter than the default profile
    result = Sandbox(policy).run(python_wasm, Invocation(args=("-c", "print(6*7)")))
    assert (result.outcome, result.stdout) == (Outcome.EXITED, b"42\n"), result.message


def test_least_privilege_policy_by_the_command_line(tmp_path: Path) -> None:
    hello = guest("hello.wasm")
    made = stockade("inspect", "--policy", str(hello))
    assert made.returncode == 0, made.stderr
    policy_file = tmp_path / "least.toml"
    policy_file.write_bytes(made.stdout)
    ran = stockade("run", "--policy", str(policy_file), str(hello), "world")
    assert ran.returncode == 0, ran.stderr
    assert b"world" in ran.stdout


def test_policy_and_json_together_are_refused() -> None:
    """`--policy --json` printed TOML where JSON was asked for (found by review)."""
    import json

    done = stockade("inspect", "--policy", "--json", str(guest("hello.wasm")))
    assert done.returncode == 125
    assert json.loads(done.stdout)["exit_code"] == 125 and b"choose one" in done.stderr


def test_json_report_shape() -> None:
    done = stockade("inspect", "--json", str(guest("hello.wasm")))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for key in ("module", "sha256", "sections", "imports", "exports", "memories", "tables",
                "data", "elements", "start", "functions", "compile", "custom_sections",
                "producers", "name", "signatures", "findings"):
        assert key in report
    assert report["imports"]["by_capability"]["process exit"] == [
        "wasi_snapshot_preview1.proc_exit"]
    assert report["memories"][0]["initial_bytes"] > 0


def test_hundred_thousand_imports_are_bounded(tmp_path: Path) -> None:
    count = 100_000
    entries = b"".join(_name("env") + _name(f"f{i}") + b"\x00\x00" for i in range(count))
    data = _module((1, b"\x01\x60\x00\x00"), (2, leb(count) + entries))
    start = time.process_time()
    report = inspect_module(data, "many.wasm")
    assert time.process_time() - start < 5.0
    assert len(report.imports) == count
    assert len(report.capabilities.denied) == count
    path = tmp_path / "many.wasm"
    path.write_bytes(data)
    done = stockade("inspect", str(path))
    assert done.returncode == 0
    assert len(done.stdout) < 20_000  # the human report summarises


def test_claimed_counts_are_checked_before_allocating() -> None:
    huge = leb(2**32 - 1)
    for section_id in (2, 3, 7, 10, 11, 9):
        with pytest.raises(MalformedModule, match="offset"):
            inspect_module(_module((section_id, huge)), "lie.wasm")


def test_truncated_and_random_inputs_fail_cleanly(tmp_path: Path) -> None:
    data = guest("hello.wasm").read_bytes()
    for cut in range(9, len(data), max(1, len(data) // 97)):
        try:
            inspect_module(data[:cut], "cut.wasm")
        except MalformedModule as exc:
            assert "offset" in str(exc) or "declared" in str(exc)
    rng = os.urandom(64 * 1024)
    for start in range(0, len(rng) - 512, 512):
        try:
            inspect_module(b"\0asm\x01\0\0\0" + rng[start:start + 512], "random.wasm")
        except MalformedModule:
            pass
    truncated = tmp_path / "cut.wasm"
    truncated.write_bytes(data[: len(data) // 2])
    done = stockade("inspect", str(truncated))
    assert done.returncode == 126
    assert b"offset" in done.stderr and b"Traceback" not in done.stderr
    noise = tmp_path / "noise.wasm"
    noise.write_bytes(rng)
    done = stockade("inspect", str(noise))
    assert done.returncode == 126 and b"Traceback" not in done.stderr
    assert stockade("inspect", str(tmp_path / "absent.wasm")).returncode == 127


def test_memory_and_data_findings() -> None:
    # a 64 Ki-page (4 GiB) maximum, a start function and 20 MiB of data
    types = b"\x01\x60\x00\x00"
    funcs = b"\x01\x00"
    memory = b"\x01\x01\x01" + leb(65536)
    start = b"\x00"
    code = b"\x01\x02\x00\x0b"
    segment = b"\x01\x00\x41\x00\x0b" + leb(20 * 1024**2) + bytes(20 * 1024**2)
    data = _module((1, types), (3, funcs), (5, memory), (8, start), (10, code), (11, segment))
    report = inspect_module(data, "big.wasm")
    messages = [(f.risk, f.message) for f in report.findings]
    assert ("medium", "declares 4GiB max memory") in messages
    assert any(r == "medium" and "start function 0" in m for r, m in messages)
    assert any(r == "medium" and "data segments of 20MiB" in m for r, m in messages)
    risks = [f.risk for f in report.findings]
    assert risks == sorted(risks, key=("high", "medium", "low").index)


def test_gc_constant_expressions_and_typed_elements_are_read() -> None:
    """A global initialised with `struct.new_default` and an element segment of a typed
    reference (`(ref null $s)`, a heap type after 0x63): were read as 0 entries."""
    data = bytes(wasmtime.wat2wasm(
        '(module (type $s (struct (field i32))) (global (ref $s) (struct.new_default $s)) '
        '(table 2 (ref null $s)) (elem (table 0) (i32.const 0) (ref null $s) '
        '(item (struct.new_default $s)) (item (ref.null $s))) (func (export "_start")))'))
    report = inspect_module(data, "gc.wasm")
    assert report.element_segments == [2]


@pytest.mark.parametrize(("text", "declares"), [
    ('(module (type (func (param i32 (ref null func)) (result i64))))', False),
    ('(module (type $s (struct (field i32))))', True),
    ('(module (type $a (array i8)))', True),
    ('(module (rec (type (func))))', True),
    ('(module (tag (param i32)))', True),
    ('(module (import "m" "t" (tag (param i32))))', True),
    ('(module (func (export "_start")))', False),
    # Without a GC type or a tag: what the type and tag sections alone did not show.
    ('(module (func (param anyref)))', True),
    ('(module (func (local i31ref)))', True),
    ('(module (func (drop (ref.i31 (i32.const 1)))))', True),
    ('(module (func (local exnref)))', True),
    ('(module (table 1 nullref))', True),
    ('(module (global (mut eqref) (ref.null eq)))', True),
    ('(module (func (block $h (try_table (catch_all $h) (nop)))))', True),
    ('(module (func (drop (any.convert_extern (ref.null extern)))))', True),
    # Typed function references need no GC heap.
    ('(module (type $t (func)) (func $f (type $t)) (elem declare func $f) '
     '(func (call_ref $t (ref.func $f))))', False),
])
def test_gc_use_is_named_as_the_loader_decides_it(text: str, declares: bool,
                                                   tmp_path: Path) -> None:
    path = tmp_path / "m.wasm"
    path.write_bytes(bytes(wasmtime.wat2wasm(text)))
    report = inspect_module(path.read_bytes(), path.name)
    assert report.gc_heap is declares
    assert any("wasm_gc" in f.message for f in report.findings) is declares
    if declares:
        with pytest.raises(ModuleError, match="--wasm-gc"):
            _sandbox.load(path)
    (_gc_sandbox if declares else _sandbox).load(path)


def test_the_least_privilege_policy_of_a_gc_module_lets_it_run(tmp_path: Path) -> None:
    path = guest("gc_heap_arrays.wasm")
    policy = tmp_path / "policy.toml"
    policy.write_text(least_privilege_policy(inspect_module(path.read_bytes(), path.name)))
    assert load_policy(policy).limits.wasm_gc
    ran = stockade("run", "--policy", str(policy), str(path))
    assert ran.returncode == 137, ran.stderr.decode()  # it ran, to its memory limit


def _types_module(*entries: bytes) -> bytes:
    body = leb(len(entries)) + b"".join(entries)
    return b"\0asm\x01\0\0\0\x01" + leb(len(body)) + body


@pytest.mark.parametrize(("data", "reason"), [
    (b"\0asm\x01\0\0\0\x01" + leb(3 * 1_000_001 + 3) + leb(1_000_001)
     + b"\x60\x00\x00" * 1_000_001, "types count exceeds limit of 1000000"),
    (_types_module(b"\x60" + leb(1_001) + b"\x7f" * 1_001 + b"\x00"),
     "function params size is out of bounds"),
    (bytes(wasmtime.wat2wasm('(module (func (result i32) (i64.const 1)))')), "type mismatch"),
], ids=["types", "params", "body"])
def test_a_module_wasmtime_refuses_is_refused_before_its_code_is_priced(
        data: bytes, reason: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pricing a function type of 67M values took seconds; validating it, milliseconds.
    def priced(_: bytes) -> list[object]:
        raise AssertionError("the code of a module wasmtime refuses was priced")

    with pytest.raises(MalformedModule, match=f"wasmtime refuses it: {reason}"):
        inspect_module(data, "bad.wasm")  # in the bounded child
    # and as a bounded worker asks, in its own process, where pricing can be watched
    monkeypatch.setattr("stockade.engine.compiler._in_child", False)
    monkeypatch.setattr("stockade.codework.code_work", priced)
    with pytest.raises(MalformedModule, match=f"wasmtime refuses it: {reason}"):
        inspect_module(data, "bad.wasm")


def test_inspect_refuses_what_run_refuses_with_the_same_exit_code(tmp_path: Path) -> None:
    path = tmp_path / "mismatch.wasm"
    path.write_bytes(bytes(wasmtime.wat2wasm(
        '(module (func (export "_start") (result i32) (i64.const 1)))')))
    inspected, ran = stockade("inspect", str(path)), stockade("run", str(path))
    assert inspected.returncode == ran.returncode == 126
    message = inspected.stderr.decode()
    assert "type mismatch" in message and message.count("\n") == 1


def _with_signature(data: bytes, *sets: SignedHashes) -> bytes:
    """`data` with a `signature` section of `sets` first (replacing any it had)."""
    _, rest = split(data)
    start = rest[0].offset if rest else len(data)
    return data[:8] + SignatureData(sets).section() + data[start:]


def test_a_signature_over_other_bytes_is_no_signer(tmp_path: Path) -> None:
    """A `signature` section naming a trusted signer's key id, 64 zero bytes as its
    signature, over a hash set covering nothing, was shown as signed by that key:
    `inspect` listed it, `--policy` wrote `# Signed by key id(s)`, the "not signed"
    finding went away and `check` warned "signed, but no trusted keys"."""
    release = SecretKey(bytes([9]) * 32)
    key_id = release.public.key_id
    forged = SignedHashes((bytes(32),), (SignatureEntry(key_id, bytes(64)),))
    data = _with_signature(guest("hello.wasm").read_bytes(), forged)
    report = inspect_module(data, "forged.wasm")
    assert report.signatures == []
    high = [f.message for f in report.findings if f.risk == "high"]
    assert any(key_id.hex() in m and "not this module's" in m for m in high), high
    assert ("low", "not signed") in [(f.risk, f.message) for f in report.findings]
    assert "Signed by" not in least_privilege_policy(report)
    path = tmp_path / "forged.wasm"
    path.write_bytes(data)
    shown = stockade("inspect", str(path))
    assert shown.returncode == 0, shown.stderr
    assert b"signatures: none" in shown.stdout and b"HIGH" in shown.stdout
    assert b"Signed by" not in stockade("inspect", "--policy", str(path)).stdout
    checked = stockade("check", "--no-host", "--json", "--module", str(path))
    items = json.loads(checked.stdout)["items"]
    assert not any("signed, but" in item["reason"] for item in items), items
    inspected = next(item for item in items if item["check"] == "module inspected")
    assert inspected["status"] == "fail" and key_id.hex() in inspected["reason"]
    # A set that does cover the module still names its signer (unverified: no key here),
    # beside a forged one.
    signed = sign_module(guest("hello.wasm").read_bytes(), release).module
    both = _with_signature(signed, forged, *not_none(split(signed)[0]).sets)
    report = inspect_module(both, "both.wasm")
    assert [s["key_id"] for s in report.signatures] == [key_id.hex()]
    assert len(report.as_dict()["signatures_invalid"]) == 1
    assert f"Signed by key id(s) {key_id.hex()}" in least_privilege_policy(report)


def not_none(value: SignatureData | None) -> SignatureData:
    assert value is not None
    return value


def test_a_truncated_header_is_called_truncated(tmp_path: Path) -> None:
    path = tmp_path / "short.wasm"
    path.write_bytes(b"\0asm\x01\0")
    done = stockade("inspect", str(path))
    err = done.stderr.decode()
    assert done.returncode == 126 and err.count("\n") == 1, err
    assert "truncated" in err and "component" not in err, err


def test_the_signatures_line_is_bounded(tmp_path: Path) -> None:
    # A module can carry any number of signatures: the report names a few and counts
    # the rest, and says that nothing was verified.
    data = guest("hello.wasm").read_bytes()
    for _ in range(12):
        data = sign_module(data, SecretKey(os.urandom(32))).module
    module = tmp_path / "many.wasm"
    module.write_bytes(data)
    shown = stockade("inspect", str(module))
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.decode().splitlines()
                if line.startswith("signatures"))
    assert "not verified" in line and "(12 in all)" in line and line.count("key id") == 8
