"""Key files and trust policies as another user could leave them: a FIFO named as the
cosign key (the command hung for ever), key files, key directories and policies that
others can write (accepted silently; `check` said PASS). One reading rule for every key
file, and the owner/mode rule of the state directory and the image store."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from stockade.trust import KeyFileError
from stockade.trust.keys import SecretKey, read_key_file
from tests.conftest import STOCKADE, guest, refused, stockade

SIGNER = SecretKey(bytes(range(32)))


def _signed_module(tmp_path: Path) -> Path:
    from stockade.trust import sign_module

    path = tmp_path / "signed.wasm"
    path.write_bytes(sign_module(guest("hello.wasm").read_bytes(), SIGNER).module)
    return path


def _public_key(path: Path, mode: int = 0o644) -> Path:
    path.write_bytes(SIGNER.public.pem())
    path.chmod(mode)
    return path


@pytest.mark.parametrize("command", ["oci sign", "sign"])
def test_a_fifo_as_the_secret_key_is_refused_at_once(tmp_path: Path, command: str) -> None:
    fifo = tmp_path / "cosign.key"
    os.mkfifo(fifo)
    args = (["oci", "sign", "--key", str(fifo), "127.0.0.1:1/app:1"] if command == "oci sign"
            else ["sign", "--key", str(fifo), str(guest("hello.wasm")), "-o",
                  str(tmp_path / "out.wasm")])
    done = subprocess.run([*STOCKADE, *args], env={**os.environ, "COSIGN_PASSWORD": "x"},
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                          check=False)
    assert done.returncode == 125, done.stderr
    assert b"not a regular file" in done.stderr and done.stderr.count(b"\n") == 1


def test_cosign_keys_are_read_by_the_one_key_file_reader(tmp_path: Path) -> None:
    from stockade.trust.cosignkeys import load_cosign_key

    secret = tmp_path / "cosign.key"
    secret.write_bytes(b"x")
    secret.chmod(0o666)
    with pytest.raises(KeyFileError, match="lets others replace"):
        load_cosign_key(secret, b"pw")


@pytest.mark.parametrize("where", ["file", "directory", "file in a directory"])
def test_a_trust_key_others_can_write_is_refused(tmp_path: Path, where: str) -> None:
    """Anyone could have put their own key there: a module they signed then ran under
    --require-signature."""
    module = _signed_module(tmp_path)
    keys = tmp_path / "keys"
    keys.mkdir()
    if where == "file":
        trusted = _public_key(tmp_path / "signer.pub", 0o666)
    else:
        _public_key(keys / "signer.pub", 0o666 if where == "file in a directory" else 0o644)
        keys.chmod(0o777 if where == "directory" else 0o755)
        trusted = keys
    done = stockade("run", "--trust-key", str(trusted), "--require-signature", str(module))
    assert done.returncode == 125, done.stderr
    # a directory's writers replace its files; a file's, what it holds
    said = b"its files" if where == "directory" else b"it (writable by group and others)"
    assert b"lets others replace " + said in done.stderr and done.stderr.count(b"\n") == 1
    refused = stockade("verify", "--key", str(trusted), str(module))
    assert refused.returncode == 125 and b"lets others replace" in refused.stderr


def test_a_private_trust_key_still_works(tmp_path: Path) -> None:
    module = _signed_module(tmp_path)
    trusted = _public_key(tmp_path / "signer.pub")
    assert read_key_file(trusted) == SIGNER.public.pem()
    done = stockade("run", "--trust-key", str(trusted), "--require-signature", str(module))
    assert done.returncode == 0, done.stderr


def test_a_key_file_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another uid needs root")
    trusted = _public_key(tmp_path / "signer.pub")
    os.chown(trusted, 65534, 65534)
    with pytest.raises(KeyFileError, match="owned by uid 65534"):
        read_key_file(trusted)


def test_keygen_writes_public_keys_others_cannot_write(tmp_path: Path) -> None:
    """Under umask 002 (a user-private-group default) the `.pub` came out group-writable,
    and so a key its own trust would refuse."""
    for flag in ([], ["--cosign"]):
        target = tmp_path / f"k{len(flag)}"
        done = subprocess.run([*STOCKADE, "keygen", *flag, str(target)],
                              env={**os.environ, "COSIGN_PASSWORD": "pw"},
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                              check=False, preexec_fn=lambda: os.umask(0o002))
        assert done.returncode == 0, done.stderr
        assert Path(f"{target}.pub").stat().st_mode & 0o022 == 0
        read_key_file(Path(f"{target}.pub"))


def _check(policy: Path) -> dict[str, str]:
    done = stockade("check", "--no-host", "--json", "--policy", str(policy))
    report = json.loads(done.stdout)
    [item] = [i for i in report["items"] if i["check"] == "signature required"]
    assert (done.returncode == 0) == (item["status"] != "fail")
    return dict(item)


@pytest.mark.parametrize("loose", ["policy", "key", "neither"])
def test_check_fails_a_trust_others_can_rewrite(tmp_path: Path, loose: str) -> None:
    """A world-writable policy (through a symlink) naming a world-writable key: `check`
    said `PASS signature required`. The policy is refused when loaded, by `check` as by
    `run` (which used it); a key when read."""
    key = _public_key(tmp_path / "ww.pub", 0o666 if loose == "key" else 0o644)
    policy = tmp_path / "pol.toml"
    policy.write_text(f'[trust]\nrequire_signature = true\nkeys = ["{key}"]\n')
    policy.chmod(0o666 if loose == "policy" else 0o644)
    link = tmp_path / "pol-link.toml"
    link.symlink_to(policy)
    if loose == "policy":
        for command in (["check", "--no-host"], ["run"]):
            args = [*command, "--policy", str(link)]
            refused(stockade(*args, *([str(guest("hello.wasm"))] if command == ["run"] else [])),
                    f"{link}: mode 0666 lets others replace")
        return
    item = _check(link)
    if loose == "neither":
        assert item["status"] == "pass", item
        return
    assert item["status"] == "fail", item
    assert str(policy if loose == "policy" else key) in item["reason"]
    assert "lets others replace" in item["reason"] and item["fix"]
