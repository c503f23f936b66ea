"""A manifest another user could rewrite grants what a policy file grants (directories,
environment, limits): refused when loaded, by the trust keys' rule, as policy files are.
The supervisor's own copy (`snapshot`) lives in a directory only the server's user
enters; the user's file is what is held to the rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stockade.errors import PolicyError
from stockade.gateway import load_manifest

BASE = """
[[function]]
name = "hello"
route = "/hello/"
module = "hello.wasm"
dirs = ["data:/data:rw"]
"""


def write(path: Path, mode: int = 0o644) -> Path:
    path.write_text(BASE)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o666, 0o664, 0o646], ids=oct)
def test_a_manifest_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    manifest = write(tmp_path / "stockade.toml", mode)
    with pytest.raises(PolicyError) as caught:
        load_manifest(manifest)
    message = caught.value.message
    assert message.startswith(f"{manifest}: ") and "lets others replace" in message
    assert "\n" not in message


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another uid needs root")
def test_a_manifest_another_user_owns_is_refused(tmp_path: Path) -> None:
    manifest = write(tmp_path / "stockade.toml")
    os.chown(manifest, 54321, 54321)
    with pytest.raises(PolicyError, match="owned by uid 54321"):
        load_manifest(manifest)


def test_the_supervisors_copy_does_not_vouch_for_the_file(tmp_path: Path) -> None:
    """`serve` copies the file's text, then loads the copy: the file itself is judged."""
    manifest = write(tmp_path / "stockade.toml", 0o666)
    snapshot = write(tmp_path / "snapshot.toml", 0o600)
    with pytest.raises(PolicyError, match=f"^{manifest}: .*lets others replace"):
        load_manifest(manifest, snapshot=snapshot)


def test_the_copy_is_loaded_when_the_file_is_sound_or_gone(tmp_path: Path) -> None:
    """The copy's own mode is the umask's (its directory is private); a worker started
    after the file was removed loads the text accepted."""
    manifest = write(tmp_path / "stockade.toml")
    snapshot = write(tmp_path / "snapshot.toml", 0o664)
    assert load_manifest(manifest, snapshot=snapshot).functions[0].name == "hello"
    manifest.unlink()
    assert load_manifest(manifest, snapshot=snapshot).functions[0].name == "hello"


def test_serve_refuses_it_at_start_and_on_reload(tmp_path: Path) -> None:
    """`serve` copies the file's text and loads the copy: the file is what is judged."""
    from stockade.gateway.server import Supervisor
    from tests.conftest import guest

    (tmp_path / "hello.wasm").write_bytes(guest("hello.wasm").read_bytes())
    path = tmp_path / "stockade.toml"
    path.write_text('[server]\ntelemetry = "off"\n' + BASE.replace('dirs = ["data:/data:rw"]\n',
                                                                    ""))
    path.chmod(0o666)
    supervisor = Supervisor(path)
    try:
        with pytest.raises(PolicyError, match=f"^{path}: mode 0666 lets others replace"):
            supervisor.prepare()
        path.chmod(0o644)
        supervisor.manifest = supervisor.prepare()
        accepted = supervisor.snapshot.read_bytes()
        path.write_text(path.read_text().replace("/hello/", "/other/"))
        path.chmod(0o664)
        assert not supervisor.reload()
        assert supervisor.snapshot.read_bytes() == accepted
    finally:
        supervisor.stop()
