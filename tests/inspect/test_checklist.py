"""`stockade check`: the README's example manifest passes, a permissive policy fails with
its reasons, signatures a trust policy requires are checked, the JSON form."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stockade.trust import sign_module
from stockade.trust.keys import SecretKey
from tests.conftest import ROOT, guest, stockade

SIGNER = SecretKey(bytes(range(32)))


def _check(*args: str) -> tuple[int, dict[str, object]]:
    done = stockade("check", "--json", *args)
    assert b"Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def _items(report: dict[str, object]) -> list[dict[str, str]]:
    items = report["items"]
    assert isinstance(items, list)
    return items


def test_the_readme_example_manifest_passes() -> None:
    code, report = _check("--manifest", str(ROOT / "examples" / "stockade.toml"))
    assert code == 0, report
    assert report["ok"] is True
    checks = {(i["check"], i["status"]) for i in _items(report)}
    assert ("cpu limit", "pass") in checks and ("module inspected", "pass") in checks
    for item in _items(report):
        assert set(item) == {"section", "check", "subject", "status", "reason", "fix"}
        assert item["status"] in ("pass", "warn", "fail")


def test_a_permissive_policy_fails_with_reasons(tmp_path: Path) -> None:
    policy = tmp_path / "open.toml"
    policy.write_text('profile = "permissive"\n[limits]\nfuel = "unlimited"\n'
                      'timeout = "unlimited"\n')
    code, report = _check("--no-host", "--policy", str(policy))
    assert code == 1 and report["ok"] is False
    failed = {i["check"]: i for i in _items(report) if i["status"] == "fail"}
    assert set(failed) == {"cpu limit", "memory limit", "timeout"}
    assert "1GiB" in failed["memory limit"]["reason"]
    assert failed["timeout"]["fix"]
    human = stockade("check", "--no-host", "--policy", str(policy))
    assert human.returncode == 1
    assert b"FAIL  memory limit" in human.stdout and b"fix:" in human.stdout


def test_required_signatures_are_checked(tmp_path: Path) -> None:
    key = tmp_path / "signer.pub"
    key.write_bytes(SIGNER.public.pem())
    policy = tmp_path / "policy.toml"
    policy.write_text('profile = "strict"\n[trust]\nrequire_signature = true\n'
                      'keys = ["signer.pub"]\n')
    hello = guest("hello.wasm")
    code, report = _check("--no-host", "--policy", str(policy), "--module", str(hello))
    assert code == 1
    failed = [i for i in _items(report) if i["status"] == "fail"]
    assert [i["check"] for i in failed] == ["signature valid"]
    assert SIGNER.public.key_id.hex() in failed[0]["reason"]
    signed = tmp_path / "signed.wasm"
    signed.write_bytes(sign_module(hello.read_bytes(), SIGNER).module)
    code, report = _check("--no-host", "--policy", str(policy), "--module", str(signed))
    assert code == 0, report


def test_high_risk_modules_and_needless_grants(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    policy = tmp_path / "policy.toml"
    policy.write_text(f'profile = "strict"\n[capabilities]\ndirs = ["{data}:/data:rw"]\n')
    code, report = _check("--no-host", "--policy", str(policy), "--module",
                          str(guest("needs_sockets.wasm")))
    assert code == 1
    by_check = {i["check"]: i for i in _items(report)}
    assert by_check["module inspected"]["status"] == "fail"
    assert "WASIX sockets" in by_check["module inspected"]["reason"]
    assert by_check["minimal WASI grants"]["status"] == "warn"


def test_bad_input_is_one_line() -> None:
    done = stockade("check", "--policy", "/nonexistent/policy.toml")
    assert done.returncode == 125 and b"Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_breaker_database_that_cannot_be_read_fails_the_breaker_item(tmp_path: Path) -> None:
    """Breakers fail open on a database that is no database (every run allowed), and the
    breaker item passed, "breakers on" (found by review)."""
    manifest = str(ROOT / "examples" / "stockade.toml")
    _, report = _check("--manifest", manifest)
    [item] = [i for i in _items(report) if i["check"] == "circuit breaker"]
    assert item["status"] == "pass", item  # no database yet: made at the first use
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    (state / "breaker.db").write_bytes(os.urandom(4096))
    code, report = _check("--manifest", manifest)
    [item] = [i for i in _items(report) if i["check"] == "circuit breaker"]
    assert code == 1 and item["status"] == "fail", item
    assert "breaker.db" in item["reason"] and "not a database" in item["reason"], item
    assert "fail open" in item["reason"] and item["fix"], item


def test_the_signature_checked_is_that_of_the_bytes_inspected(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`check` read the module a second time for its signature (unbounded, blocking on
    a FIFO): what it verified could be other bytes than those it inspected. Here the
    file is replaced by an unsigned module right after its one read."""
    import stockade.engine.loader as loader
    from stockade.inspect.checklist import evaluate

    key = tmp_path / "signer.pub"
    key.write_bytes(SIGNER.public.pem())
    policy = tmp_path / "policy.toml"
    policy.write_text('[trust]\nrequire_signature = true\nkeys = ["signer.pub"]\n')
    hello = guest("hello.wasm").read_bytes()
    module = tmp_path / "signed.wasm"
    module.write_bytes(sign_module(hello, SIGNER).module)
    read = loader.read_module

    def read_then_swap(path: Path, limit: int = loader.MAX_MODULE_BYTES) -> bytes:
        data = read(path, limit)
        path.write_bytes(hello)  # another module under the same name, unsigned
        return data

    monkeypatch.setattr(loader, "read_module", read_then_swap)
    items = evaluate(policy, None, module, host=False)
    verdict = next(item for item in items if item.check == "signature valid")
    assert verdict.status == "pass", verdict


def test_text_is_never_a_signed_module(tmp_path: Path) -> None:
    """Under [trust] `run` refuses text, even text whose binary carries a valid
    signature (a `@custom` annotation): so does the checklist."""
    import wasmtime

    from stockade.binary import sections
    from stockade.inspect.checklist import evaluate

    (tmp_path / "signer.pub").write_bytes(SIGNER.public.pem())
    policy = tmp_path / "policy.toml"
    policy.write_text('[trust]\nrequire_signature = true\nkeys = ["signer.pub"]\n')
    text = '(func (export "_start"))'
    signed = sign_module(bytes(wasmtime.wat2wasm(f"(module {text})")), SIGNER).module
    first = next(iter(sections(signed)))
    payload = "".join(f"\\{byte:02x}" for byte in signed[first.start:first.end])
    wat = tmp_path / "signed.wat"
    wat.write_text(f'(module (@custom "signature" (before first) "{payload}") {text})')
    assert bytes(wasmtime.wat2wasm(wat.read_text())) == signed
    items = evaluate(policy, None, wat, host=False)
    verdict = next(item for item in items if item.check == "signature valid")
    assert verdict.status == "fail" and "text" in verdict.reason, verdict


def test_check_decides_as_run_does_when_image_signatures_are_required(tmp_path: Path) -> None:
    """Under `require_image_signature` a module file's embedded signature never admits
    it (`run` refuses it, 126): `check` passed it as signed by a trusted key. A policy
    requiring image signatures with no image key among its keys admits nothing."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from stockade.trust.cosignkeys import CosignSecret

    (tmp_path / "signer.pub").write_bytes(SIGNER.public.pem())
    policy = tmp_path / "policy.toml"
    policy.write_text('profile = "strict"\n[trust]\nrequire_image_signature = true\n'
                      'keys = ["signer.pub"]\n')
    signed = tmp_path / "signed.wasm"
    signed.write_bytes(sign_module(guest("hello.wasm").read_bytes(), SIGNER).module)
    ran = stockade("run", "--policy", str(policy), str(signed))
    assert ran.returncode == 126, ran.stderr
    code, report = _check("--no-host", "--policy", str(policy), "--module", str(signed))
    assert code == 1, report
    failed = {i["check"]: i for i in _items(report) if i["status"] == "fail"}
    assert set(failed) == {"signature required", "signature valid"}, report
    assert "no image" in failed["signature required"]["reason"]
    assert "cosign" in failed["signature required"]["fix"]
    verdict = failed["signature valid"]
    assert "no image signature by a trusted key covers module" in verdict["reason"]
    assert verdict["reason"] in ran.stderr.decode()  # run's own words

    # With an image key the policy can admit an image, never this module file.
    image_key = CosignSecret(ec.derive_private_key(0xC051, ec.SECP256R1())).public
    (tmp_path / "cosign.pub").write_bytes(image_key.pem())
    policy.write_text('profile = "strict"\n[trust]\nrequire_image_signature = true\n'
                      'keys = ["signer.pub", "cosign.pub"]\n')
    code, report = _check("--no-host", "--policy", str(policy), "--module", str(signed))
    statuses = {i["check"]: i["status"] for i in _items(report)}
    assert code == 1 and statuses["signature required"] == "pass", report
    assert statuses["signature valid"] == "fail", report
    assert stockade("run", "--policy", str(policy), str(signed)).returncode == 126


def test_an_image_process_the_gateway_never_applies_is_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signed interpreter re-wrapped in an unsigned image whose `Cmd` and `Env` carry
    other code: `run` refuses that process under module-signature trust (126), and
    `check --manifest` passed the gateway function serving that image without a word.
    The gateway never applies an image's process (arguments come from requests,
    variables from the manifest), so the check says so as a warning."""
    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "signer.pub").write_bytes(SIGNER.public.pem())
    signed = tmp_path / "probe.signed.wasm"
    signed.write_bytes(sign_module(guest("probe.wasm").read_bytes(), SIGNER).module)
    for ref, process in (("localhost/rewrapped:1", ("--arg", "/attacker-chosen", "--env",
                                                   "INJECTED=1")),
                         ("localhost/plain:1", ())):
        built = stockade("oci", "build", str(signed), "--format", "image", "--tag", ref,
                         *process)
        assert built.returncode == 0, built.stderr
    trust = ("--trust-key", str(tmp_path / "signer.pub"), "--require-signature")
    assert stockade("run", *trust, "oci://localhost/rewrapped:1").returncode == 126

    manifest = tmp_path / "stockade.toml"
    manifest.write_text(
        '[trust]\nrequire_signature = true\nkeys = ["signer.pub"]\n'
        '[[function]]\nname = "rewrapped"\nroute = "/rewrapped"\n'
        'module = "oci://localhost/rewrapped:1"\nprofile = "strict"\n'
        '[[function]]\nname = "plain"\nroute = "/plain"\n'
        'module = "oci://localhost/plain:1"\nprofile = "strict"\n')
    code, report = _check("--no-host", "--manifest", str(manifest))
    assert code == 0, report  # the module is signed; its image's process is not used
    processes = [i for i in _items(report) if i["check"] == "image process"]
    assert [i["subject"] for i in processes] == ["function rewrapped"], report
    [item] = processes
    assert item["status"] == "warn" and item["section"] == "review", item
    for words in ("Cmd", "Env", "not used", "localhost/rewrapped:1"):
        assert words in item["reason"], item
    assert item["fix"], item
