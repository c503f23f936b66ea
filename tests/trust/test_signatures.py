"""Module signatures: wasmsign2's bytes, openssl as an independent checker, key formats,
bounded parsing of hostile signature sections."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from stockade.binary import CUSTOM, encode_leb, sections
from stockade.trust import load_public_keys, load_secret_key, sign_module, verify_module
from stockade.trust.keys import SecretKey, key_id_of
from stockade.trust.signing import MAX_CHECKS
from stockade.trust.wasmsig import (
    SignatureData,
    SignatureEntry,
    SignedHashes,
    encode_section,
    split,
)
from tests.conftest import STOCKADE, guest, stockade

VECTORS = Path(__file__).parent / "vectors"


def _vectors() -> list[dict[str, object]]:
    return list(json.loads((VECTORS / "vectors.json").read_text()))


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: str(v["output"]))
def test_signing_is_byte_identical_to_wasmsign2(vector: dict[str, object]) -> None:
    secret = SecretKey(bytes.fromhex(str(vector["seed"])))
    assert secret.public.raw.hex() == vector["public_key"]
    assert secret.public.key_id.hex() == vector["key_id"]
    signed = sign_module((VECTORS / str(vector["input"])).read_bytes(), secret,
                         with_key_id=bool(vector["with_key_id"]))
    assert signed.module == (VECTORS / str(vector["output"])).read_bytes()
    assert signed.message.hex() == vector["message"]
    assert verify_module(signed.module, [secret.public]).ok


def test_the_second_signer_joins_the_first_set() -> None:
    data = (VECTORS / "signed_a_then_b.wasm").read_bytes()
    signature, _ = split(data)
    assert signature is not None and len(signature.sets) == 1
    assert len(signature.sets[0].signatures) == 2
    a, b = (SecretKey(bytes(range(n, n + 32))).public for n in (0, 32))
    assert verify_module(data, [b]).ok and verify_module(data, [a]).ok


def test_key_id_is_wasmsign2s_default() -> None:
    # HMAC-SHA256(key = public key, message = "key_id")[:12], by openssl
    public = SecretKey(bytes(range(32))).public
    done = subprocess.run(
        ["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt", f"hexkey:{public.raw.hex()}"],
        input=b"key_id", capture_output=True, check=True)
    assert done.stdout.split()[-1].decode()[:24] == key_id_of(public.raw).hex()


def test_openssl_verifies_the_message_stockade_reports(tmp_path: Path) -> None:
    assert stockade("keygen", str(tmp_path / "k")).returncode == 0
    done = stockade("sign", "--json", "--key", str(tmp_path / "k"), "-o",
                    str(tmp_path / "s.wasm"), str(guest("hello.wasm")))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    (tmp_path / "msg").write_bytes(bytes.fromhex(report["message"]))
    (tmp_path / "sig").write_bytes(bytes.fromhex(report["signature"]))
    checked = subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "k.pub"), "-rawin",
         "-in", str(tmp_path / "msg"), "-sigfile", str(tmp_path / "sig")], capture_output=True)
    assert checked.returncode == 0, checked.stderr
    # and the message really is the module's: the signature section holds that signature
    signature, rest = split((tmp_path / "s.wasm").read_bytes())
    assert signature is not None
    assert signature.sets[0].signatures[0].signature.hex() == report["signature"]
    (tmp_path / "msg").write_bytes(bytes.fromhex(report["message"])[:-1] + b"\0")
    tampered = subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "k.pub"), "-rawin",
         "-in", str(tmp_path / "msg"), "-sigfile", str(tmp_path / "sig")], capture_output=True)
    assert tampered.returncode != 0


def test_keygen_writes_a_private_key_and_refuses_to_overwrite(tmp_path: Path) -> None:
    assert stockade("keygen", str(tmp_path / "k")).returncode == 0
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in (tmp_path / "k").read_bytes()
    assert b"BEGIN PUBLIC KEY" in (tmp_path / "k.pub").read_bytes()
    again = stockade("keygen", str(tmp_path / "k"))
    assert again.returncode == 125 and b"already exists" in again.stderr


def test_key_formats_raw_der_openssh(tmp_path: Path) -> None:
    secret = SecretKey(bytes(range(32)))
    public = secret.public
    (tmp_path / "raw.pub").write_bytes(b"\x01" + public.raw)
    (tmp_path / "raw.sec").write_bytes(b"\x81" + secret.seed + public.raw)
    assert load_public_keys(tmp_path / "raw.pub")[0].raw == public.raw
    assert load_secret_key(tmp_path / "raw.sec").seed == secret.seed
    if shutil.which("ssh-keygen") is None:
        pytest.fail("ssh-keygen missing (Debian openssh-client)")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")],
                   check=True)
    ssh_secret = load_secret_key(tmp_path / "id")
    (tmp_path / "keys").write_text("# two signers\n" + (tmp_path / "id.pub").read_text()
                                   + f"ssh-ed25519 {_ssh_blob(public.raw)} other\n")
    keys = load_public_keys(tmp_path / "keys")
    assert [k.raw for k in keys] == [ssh_secret.public.raw, public.raw]
    data = sign_module(guest("hello.wasm").read_bytes(), ssh_secret).module
    assert verify_module(data, keys).ok
    der = tmp_path / "k.der"
    subprocess.run(["openssl", "pkey", "-pubin", "-in", "/dev/stdin", "-outform", "DER", "-out",
                    str(der)], input=public.pem(), check=True)
    assert load_public_keys(der)[0].raw == public.raw
    assert stockade("verify", "--key", str(tmp_path / "nothing"), str(guest("hello.wasm"))
                    ).returncode == 125


def _ssh_blob(raw: bytes) -> str:
    import base64

    def field(b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + b

    return base64.b64encode(field(b"ssh-ed25519") + field(raw)).decode()


def test_a_key_directory_trusts_every_key_in_it(tmp_path: Path) -> None:
    keys = tmp_path / "trusted"
    keys.mkdir()
    for n in range(3):
        (keys / f"{n}.pub").write_bytes(SecretKey(bytes([n]) * 32).public.pem())
    data = sign_module(guest("hello.wasm").read_bytes(), SecretKey(bytes([2]) * 32)).module
    assert verify_module(data, load_public_keys(keys)).ok


def test_hostile_signature_sections_are_bounded() -> None:
    body = guest("hello.wasm").read_bytes()[8:]
    secret = SecretKey(bytes(range(32)))
    entries = tuple(SignatureEntry(None, bytes(64)) for _ in range(256))
    sets = tuple(SignedHashes((bytes(32),) * 63 + (b"\x11" * 32,), entries) for _ in range(64))
    # every entry has no key id and is tried only when its set holds the module's hash:
    # make every set hold it, so the cap on checks is what bounds the work
    from stockade.trust.wasmsig import content_hash, section_hashes

    data = b"\0asm\x01\0\0\0" + SignatureData(sets).section() + body
    _, rest = split(data)
    digest = content_hash(data, rest)
    assert section_hashes(data, rest)[0][-1] == digest
    sets = tuple(SignedHashes((bytes(32),) * 63 + (digest,), entries) for _ in range(64))
    data = b"\0asm\x01\0\0\0" + SignatureData(sets).section() + body
    verification = verify_module(data, [secret.public] * 4)
    assert not verification.ok and verification.checks == MAX_CHECKS
    too_many = encode_leb(1) + encode_leb(1) + encode_leb(1) + encode_leb(65)
    bad = (b"\0asm\x01\0\0\0"
           + encode_section(CUSTOM, encode_leb(9) + b"signature" + too_many) + body)
    verification = verify_module(bad, [secret.public])
    assert not verification.ok and "at most 64" in str(verification.error)


def test_a_prefix_ending_at_a_delimiter_is_not_the_whole_module(tmp_path: Path) -> None:
    # the running hash taken at a delimiter is signed too: a module cut right after the
    # delimiter (its later sections gone) hashes to it, yet is not what was signed
    data = (VECTORS / "delimited_signed_a.wasm").read_bytes()
    signer = SecretKey(bytes(range(32)))
    assert verify_module(data, [signer.public]).ok
    delimiter = next(s for s in sections(data) if s.name == "signature_delimiter")
    truncated = data[:delimiter.end]
    verification = verify_module(truncated, [signer.public])
    assert verification.signed and not verification.ok
    (tmp_path / "k.pub").write_bytes(signer.public.pem())
    (tmp_path / "cut.wasm").write_bytes(truncated)
    done = stockade("verify", "--key", str(tmp_path / "k.pub"), str(tmp_path / "cut.wasm"))
    assert done.returncode == 126 and b"no valid signature" in done.stderr


def test_a_key_rewritten_in_place_in_a_key_directory_is_no_longer_trusted(
        tmp_path: Path) -> None:
    """Keys were cached by each trusted path's stamp: a directory's, which rewriting a
    key file inside it leaves as it was. A revoked signer stayed trusted by a process
    that had read the keys once, a gateway reloaded included (found by review)."""
    from stockade.policy.model import Trust
    from stockade.trust.enforce import refusal

    keys = tmp_path / "trusted"
    keys.mkdir()
    revoked, other = SecretKey(bytes([7]) * 32), SecretKey(bytes([8]) * 32)
    (keys / "signer.pub").write_bytes(revoked.public.pem())
    data = sign_module(guest("hello.wasm").read_bytes(), revoked).module
    trust = Trust(True, (keys,))
    assert refusal(data, trust) is None
    before = os.stat(keys / "signer.pub")
    with open(keys / "signer.pub", "r+b") as handle:  # in place: same inode, same size
        handle.write(other.public.pem())
    os.utime(keys / "signer.pub", ns=(before.st_atime_ns, before.st_mtime_ns))
    os.utime(keys, ns=(os.stat(keys).st_atime_ns, os.stat(keys).st_mtime_ns))
    assert refusal(data, trust) is not None


@pytest.mark.parametrize("where", ["file", "directory"])
def test_a_key_path_that_is_a_fifo_is_refused_at_once(tmp_path: Path, where: str) -> None:
    """A FIFO as a key file held the run (or a gateway's load) for ever."""
    from stockade.trust import KeyFileError
    from stockade.trust.keys import read_key_file

    fifo = tmp_path / "key.pub"
    os.mkfifo(fifo)
    if where == "file":
        with pytest.raises(KeyFileError, match="not a regular file"):
            read_key_file(fifo)
    done = stockade("verify", "--key", str(fifo), str(guest("hello.wasm")), timeout=30)
    assert done.returncode != 0 and b"Traceback" not in done.stderr, done.stderr


def test_verify_vouches_for_no_text(tmp_path: Path) -> None:
    """`verify` converted `.wat` to binary first and vouched for the result, a module
    `run` refuses under [trust] (found by review)."""
    key = tmp_path / "signer.pub"
    key.write_bytes(SecretKey(bytes([3]) * 32).public.pem())
    text = tmp_path / "app.wat"
    text.write_text('(module (func (export "_start")))')
    done = stockade("verify", "--key", str(key), str(text))
    assert done.returncode == 126 and b"WebAssembly text" in done.stderr, done.stderr


def test_sign_never_writes_a_module_verify_refuses() -> None:
    """A module with 64 hash sets already was signed into 65, which `verify` refuses, and
    `sign` exited 0 (found by review)."""
    from stockade.errors import UsageError

    body = guest("hello.wasm").read_bytes()[8:]
    entry = (SignatureEntry(None, bytes(64)),)
    sets = tuple(SignedHashes((bytes([n]) * 32,), entry) for n in range(64))
    full = b"\0asm\x01\0\0\0" + SignatureData(sets).section() + body
    with pytest.raises(UsageError, match="at most 64"):
        sign_module(full, SecretKey(bytes(range(32))))


@pytest.mark.parametrize("command", ["sign", "compile"])
def test_an_output_is_written_through_no_planted_link(tmp_path: Path, command: str) -> None:
    """`sign -o DIR/out.wasm` wrote `DIR/.out.wasm.<pid>.tmp`, following a link planted
    there (the victim was overwritten); `-o /dev/full` replaced the device with a file
    (found by review)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    for pid in range(last + 1, last + 400):
        for name in (f".out.wasm.{pid}.tmp", f".out.wasm.{pid}.part"):
            (shared / name).symlink_to(victim)
    assert stockade("keygen", str(tmp_path / "k")).returncode == 0
    key = ("--key", str(tmp_path / "k")) if command == "sign" else ()
    done = stockade(command, *key, "-o", str(shared / "out.wasm"), str(guest("hello.wasm")))
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious\n"
    out = shared / "out.wasm"
    assert not out.is_symlink() and out.read_bytes()[:4] in (b"\0asm", b"\x7fELF")
    os.symlink(victim, tmp_path / "link.wasm")  # a link as the output: refused, not replaced
    refused = stockade(command, *key, "-o", str(tmp_path / "link.wasm"),
                       str(guest("hello.wasm")))
    assert refused.returncode == 125 and b"not a regular file" in refused.stderr, refused.stderr
    assert (tmp_path / "link.wasm").is_symlink() and victim.read_text() == "precious\n"


def test_a_signed_module_keeps_the_umask_and_an_existing_files_mode(tmp_path: Path) -> None:
    """The replacing write set 0644 whatever the umask (the fix's review)."""
    assert stockade("keygen", str(tmp_path / "k")).returncode == 0
    out = tmp_path / "s.wasm"
    command = [*STOCKADE, "sign", "--key", str(tmp_path / "k"), "-o", str(out),
               str(guest("hello.wasm"))]
    done = subprocess.run(command, capture_output=True, check=False,
                          preexec_fn=lambda: os.umask(0o077))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    out.chmod(0o640)
    assert subprocess.run(command, capture_output=True, check=False).returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_sign_refuses_a_module_wasmtime_refuses(tmp_path: Path) -> None:
    """`sign` signed structurally valid modules no engine loads, though its help says 126
    for a malformed module (the CLI review)."""
    assert stockade("keygen", str(tmp_path / "k")).returncode == 0
    invalid = tmp_path / "invalid.wasm"
    invalid.write_bytes(b"\0asm\x01\0\0\0" + bytes([3, 2, 1, 0]))  # a function, no type
    done = stockade("sign", "--key", str(tmp_path / "k"), "-o", str(tmp_path / "s.wasm"),
                    str(invalid))
    assert done.returncode == 126 and b"wasmtime refuses it" in done.stderr, done.stderr
    assert not (tmp_path / "s.wasm").exists()


@pytest.mark.parametrize("name", [".", "", "..", "/"])
def test_keygen_refuses_a_name_that_is_no_file(tmp_path: Path, name: str) -> None:
    done = subprocess.run([*STOCKADE, "keygen", name], cwd=tmp_path, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60, check=False)
    err = done.stderr.decode()
    assert done.returncode == 125 and "Traceback" not in err, err
    assert err.count("\n") == 1 and "key file name" in err, err
    assert list(tmp_path.iterdir()) == []


def test_verify_names_a_truncated_module_invalid(tmp_path: Path) -> None:
    key = tmp_path / "signer.pub"
    key.write_bytes(SecretKey(bytes([3]) * 32).public.pem())
    cut = tmp_path / "trunc.wasm"
    cut.write_bytes(guest("hello.wasm").read_bytes()[:1000])
    done = stockade("verify", "--key", str(key), str(cut))
    err = done.stderr.decode()
    assert done.returncode == 126 and err.count("\n") == 1, err
    assert "malformed module" in err and "signature unreadable" not in err, err


def test_verify_reads_a_key_directory_as_trust_does(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "")
    keys = tmp_path / "trusted"
    keys.mkdir()
    signer = SecretKey(bytes([5]) * 32)
    (keys / "signer.pub").write_bytes(signer.public.pem())
    assert stockade("keygen", "--cosign", str(tmp_path / "ck")).returncode == 0
    (keys / "ck.pub").write_bytes((tmp_path / "ck.pub").read_bytes())
    signed = tmp_path / "signed.wasm"
    signed.write_bytes(sign_module(guest("hello.wasm").read_bytes(), signer).module)
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[trust]\nrequire_signature = true\nkeys = ["{keys}"]\n')
    assert stockade("run", "--policy", str(policy), str(signed)).returncode == 0
    done = stockade("verify", "--key", str(keys), str(signed))
    assert done.returncode == 0, done.stderr
    assert signer.public.key_id.hex().encode() in done.stdout
    alone = stockade("verify", "--key", str(keys / "ck.pub"), str(signed))
    assert alone.returncode == 125 and b"not an Ed25519 key" in alone.stderr, alone.stderr
    (keys / "signer.pub").unlink()
    only_cosign = stockade("verify", "--key", str(keys), str(signed))
    assert only_cosign.returncode == 125 and b"Ed25519" in only_cosign.stderr



@pytest.mark.parametrize(("required", "unsigned_code"), [(None, 126), ("true", 126),
                                                         ("false", 0)])
def test_a_trust_table_listing_keys_requires_a_signature(
        tmp_path: Path, required: str | None, unsigned_code: int) -> None:
    """`[trust] keys = [...]` alone checked nothing and said nothing, while `--trust-key`
    requires a signature (found by review): keys listed require one unless the table
    says `require_signature = false`."""
    signer = SecretKey(bytes([6]) * 32)
    (tmp_path / "signer.pub").write_bytes(signer.public.pem())
    signed = tmp_path / "signed.wasm"
    signed.write_bytes(sign_module(guest("hello.wasm").read_bytes(), signer).module)
    policy = tmp_path / "policy.toml"
    line = "" if required is None else f"require_signature = {required}\n"
    policy.write_text(f'[trust]\n{line}keys = ["signer.pub"]\n')
    unsigned = stockade("run", "--policy", str(policy), str(guest("hello.wasm")))
    assert unsigned.returncode == unsigned_code, unsigned.stderr
    assert stockade("run", "--policy", str(policy), str(signed)).returncode == 0


def test_file_names_are_shown_escaped_on_success(tmp_path: Path) -> None:
    """The success lines of `keygen`, `sign` and `verify` wrote file names raw: a name
    holding an escape sequence or a newline rewrote the terminal (the error lines escape
    them)."""
    evil = "x\x1b]0;pwned\x07\x1b[2J\n"
    done = stockade("keygen", str(tmp_path / f"k{evil}"))
    assert done.returncode == 0, done.stderr
    signed = tmp_path / f"s{evil}.wasm"
    key = ("--key", str(tmp_path / f"k{evil}"))
    outputs = [done.stdout, stockade("sign", *key, "-o", str(signed),
                                     str(guest("hello.wasm"))).stdout]
    outputs.append(stockade("verify", "--key", str(tmp_path / f"k{evil}.pub"),
                            str(signed)).stdout)
    for out in outputs:
        assert b"\x1b" not in out and b"\x07" not in out and out.count(b"\n") == 1, out
        assert b"\\x1b" in out, out


def test_verification_against_many_keys_is_bounded() -> None:
    """64 sets of 256 signatures without a key id, against thousands of trusted keys:
    every key rebuilt the list of candidates, and the cap on checks only ended the
    inner loop (10,000 keys: 22.8 s)."""
    import time

    from stockade.trust.wasmsig import content_hash

    body = guest("hello.wasm").read_bytes()[8:]
    data = b"\0asm\x01\0\0\0" + body
    _, rest = split(data)
    entries = tuple(SignatureEntry(None, bytes(64)) for _ in range(256))
    sets = tuple(SignedHashes((content_hash(data, rest),), entries) for _ in range(64))
    data = b"\0asm\x01\0\0\0" + SignatureData(sets).section() + body
    keys = [SecretKey(n.to_bytes(32, "big")).public for n in range(2_000)]
    started = time.process_time()
    verification = verify_module(data, keys)
    assert time.process_time() - started < 1.0  # 3 s before
    assert not verification.ok and verification.checks == MAX_CHECKS
    shown = verification.describe()
    assert len(shown) < 1_000 and "1,992 more" in shown, shown
    assert f"stopped at {MAX_CHECKS} signature checks" in shown  # not "no valid signature" alone
