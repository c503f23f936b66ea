"""Where a key file lives, and what it holds: the directories above a key are checked as
OpenSSH's StrictModes checks them (a key in a world-writable directory could be swapped by
another user for a link to a file they control), and OpenSSH key lines are read only from
a file that is all text of key lines, comments and blanks (a module whose data segment
held a `ssh-ed25519` line was a trusted key file)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stockade.trust import KeyFileError, load_public_keys
from stockade.trust.keys import SecretKey, key_files, parse_public_keys, read_key_file
from tests.conftest import guest, refused, stockade

SIGNER = SecretKey(bytes(range(32)))
OTHER = 65534  # nobody


def _ssh_line(secret: SecretKey, comment: str = "release") -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = secret._key().public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line + f" {comment}\n".encode()


def _directory(path: Path, mode: int) -> Path:
    path.mkdir()
    path.chmod(mode)
    return path


def _key(path: Path) -> Path:
    path.write_bytes(SIGNER.public.pem())
    path.chmod(0o644)
    return path


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another uid needs root")


def test_a_key_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    """The file is ours and 0644, but anyone may rename another file over it."""
    shared = _directory(tmp_path / "shared", 0o777)
    trusted = _key(shared / "release.pub")
    with pytest.raises(KeyFileError, match=f"{shared}: mode 0777 lets others replace its files"):
        read_key_file(trusted)
    module = tmp_path / "signed.wasm"
    from stockade.trust import sign_module

    module.write_bytes(sign_module(guest("hello.wasm").read_bytes(), SIGNER).module)
    refused(stockade("verify", "--key", str(trusted), str(module)), str(shared), "not sticky")


def test_a_directory_above_a_key_directory_is_checked_too(tmp_path: Path) -> None:
    loose = _directory(tmp_path / "loose", 0o775)
    keys = _directory(loose / "keys", 0o755)
    _key(keys / "release.pub")
    with pytest.raises(KeyFileError, match=f"{loose}: mode 0775 lets others replace"):
        key_files(keys)
    with pytest.raises(KeyFileError, match=f"{loose}: mode 0775"):
        load_public_keys(keys)


def test_a_sticky_directory_holding_our_own_key_is_accepted(tmp_path: Path) -> None:
    """/tmp's rule: others may write it, but not replace what is ours."""
    sticky = _directory(tmp_path / "sticky", 0o1777)
    trusted = _key(sticky / "release.pub")
    assert read_key_file(trusted) == SIGNER.public.pem()
    assert [k.raw for k in load_public_keys(trusted)] == [SIGNER.public.raw]


def test_a_link_another_user_planted_is_refused(tmp_path: Path) -> None:
    """The review's case: another user's link, in a directory they can write, to a file
    of ours (a downloaded module) that is no key of ours."""
    _needs_root()
    target = _key(tmp_path / "ours.pub")
    for mode in (0o777, 0o1777):
        shared = _directory(tmp_path / f"shared{mode:o}", mode)
        link = shared / "release.pub"
        link.symlink_to(target)
        os.lchown(link, OTHER, OTHER)
        said = "not sticky" if mode == 0o777 else f"owned by uid {OTHER}"
        with pytest.raises(KeyFileError, match=said) as caught:
            read_key_file(link)
        assert str(link) in str(caught.value) and "\n" not in str(caught.value)


def test_a_directory_of_another_user_above_a_key_is_refused(tmp_path: Path) -> None:
    _needs_root()
    theirs = _directory(tmp_path / "theirs", 0o755)
    os.chown(theirs, OTHER, OTHER)
    trusted = _key(theirs / "release.pub")
    with pytest.raises(KeyFileError, match=f"{theirs}: owned by uid {OTHER}"):
        read_key_file(trusted)


def test_a_link_through_a_safe_path_to_a_safe_key_is_accepted(tmp_path: Path) -> None:
    keys = _directory(tmp_path / "keys", 0o755)
    target = _key(keys / "release.pub")
    (tmp_path / "current").symlink_to("keys")
    assert read_key_file(tmp_path / "current" / "release.pub") == target.read_bytes()


def test_a_binary_file_holding_a_key_line_is_no_key_file(tmp_path: Path) -> None:
    """A module whose data segment holds "\\nssh-ed25519 AAAA…\\n": trusted as its key."""
    data = guest("hello.wasm").read_bytes() + b"\n" + _ssh_line(SIGNER) + b"\0\0"
    with pytest.raises(KeyFileError, match="not a text file"):
        parse_public_keys(data, "tool.wasm")


@pytest.mark.parametrize("junk", [b"echo hello\n", b"ssh-ed25519 not-base64!\n",
                                  b"-----BEGIN PUBLIC KEY-----\n"])
def test_a_text_file_with_other_lines_is_no_key_file(junk: bytes) -> None:
    data = b"# signers\n" + _ssh_line(SIGNER) + junk
    with pytest.raises(KeyFileError, match="line 3"):
        parse_public_keys(data, "keys.txt")


def test_key_lines_comments_and_blanks_are_a_key_file() -> None:
    other = SecretKey(bytes([7]) * 32)
    data = (b"# release signers\n\n" + _ssh_line(SIGNER) + b"  \r\n"
            + b"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7 rsa signer\n" + _ssh_line(other))
    assert [k.raw for k in parse_public_keys(data, "keys")] == [SIGNER.public.raw,
                                                                other.public.raw]


def test_a_key_path_that_fails_to_walk_after_the_open_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user renaming their directory back and forth made the walk after the open
    fail (ENOENT), and a walk that failed passed: about one load in ten accepted the file
    the open had reached through that directory."""
    from stockade.trust import keys

    trusted = _key(_directory(tmp_path / "keys", 0o755) / "release.pub")
    lstat = os.lstat

    def vanished(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if Path(str(path)) == trusted.parent:
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return lstat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(keys.os, "lstat", vanished)
    with pytest.raises(KeyFileError, match="changed as it was read"):
        read_key_file(trusted)


def test_a_key_path_that_names_another_file_than_the_one_opened_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The open went through a path another user changed, then changed back: the walk,
    however clean, must end at the file that was read."""
    from stockade.trust import keys

    trusted = _key(_directory(tmp_path / "keys", 0o755) / "release.pub")
    planted = _key(tmp_path / "planted.pub")
    opened = keys.open_regular

    def elsewhere(path: Path, *args: object, **kwargs: object) -> int:
        return opened(planted, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(keys, "open_regular", elsewhere)
    with pytest.raises(KeyFileError, match="another file than the one read"):
        read_key_file(trusted)
    monkeypatch.undo()
    assert read_key_file(trusted) == trusted.read_bytes()


def test_a_key_path_too_long_to_check_says_so(tmp_path: Path) -> None:
    """A path past PATH_MAX once its links are followed (the kernel resolves it a
    component at a time) cannot be walked by name: refused, but as what it is, not as a
    path that changed."""
    name = "d" * 200
    levels = [name] * 12

    def tree(top: Path) -> Path:
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in levels:
                os.mkdir(name, dir_fd=fd)
                inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = inner
        finally:
            os.close(fd)
        return top

    upper = tree(_directory(tmp_path / "a", 0o755))
    os.symlink("/".join(["a", *levels]), tmp_path / "l1")
    lower = tmp_path / "l1"  # the 12th level, reached through the link
    os.mkdir(lower / "b")
    tree(lower / "b")
    os.symlink("/".join(["b", *levels, "release.pub"]), lower / "l2")
    base = os.open(lower, os.O_RDONLY | os.O_DIRECTORY)
    fd = os.open("/".join(["b", *levels]), os.O_RDONLY | os.O_DIRECTORY, dir_fd=base)
    key = os.open("release.pub", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(key, SIGNER.public.pem())
    for each in (key, fd, base):
        os.close(each)
    assert upper.exists()
    with pytest.raises(KeyFileError, match="too long to check") as refused_:
        read_key_file(lower / "l2")
    assert "changed" not in refused_.value.message
