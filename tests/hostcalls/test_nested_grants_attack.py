"""Attack (configuration): `--dir ROOT:/rw:rw --dir ROOT/ro:/ro` granted ROOT/ro read-only
and, through /rw/ro, writable: a guest opened /rw/ro/secret for writing and replaced it,
though the README promises a directory read-only unless `:rw`. A read-only grant that
is a writable grant, or lies inside one, is now refused before the run, with the
one-line error (and exit 125) any bad `--dir` gets: compared by what the directories
are (device and inode of the grant and its ancestors), so a symlink, `..` or a held
descriptor naming it is refused alike. A writable grant inside a read-only one stays
allowed: the narrower grant is the more permissive one, and says so."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from stockade import Invocation, Outcome, Policy, Result, Sandbox
from stockade.errors import PolicyError
from stockade.policy import DirGrant
from stockade.sandbox.capi import CapiSandbox
from tests.conftest import STOCKADE

# path_open(3, follow, "ro/secret", trunc, rights incl. write) then fd_write "HACKED":
# both errnos on stdout, one byte each.
_GUEST = """(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1000) "ro/secret")
  (data (i32.const 1100) "HACKED")
  (func (export "_start")
    (i32.store8 (i32.const 500)
      (call $open (i32.const 3) (i32.const 1) (i32.const 1000) (i32.const 9) (i32.const 8)
                  (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0)
                  (i32.const 2000)))
    (i32.store (i32.const 3000) (i32.const 1100)) (i32.store (i32.const 3004) (i32.const 6))
    (i32.store8 (i32.const 501)
      (call $w (i32.load (i32.const 2000)) (i32.const 3000) (i32.const 1) (i32.const 3008)))
    (i32.store (i32.const 3000) (i32.const 500)) (i32.store (i32.const 3004) (i32.const 2))
    (drop (call $w (i32.const 1) (i32.const 3000) (i32.const 1) (i32.const 3008)))))
"""

BACKENDS = ["wasmtime", "capi"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """ROOT with ROOT/ro/secret = "original", and the guest at tmp_path/nested.wat."""
    where = tmp_path / "root"
    (where / "ro").mkdir(parents=True)
    (where / "ro" / "secret").write_text("original")
    (tmp_path / "nested.wat").write_text(_GUEST)
    return where


def _run(backend: str, module: Path, *dirs: DirGrant) -> Result:
    policy = Policy.from_profile("default").with_capabilities(dirs=dirs)
    with (Sandbox(policy) if backend == "wasmtime" else CapiSandbox(policy)) as sandbox:
        return sandbox.run(module, Invocation())


def _symlink(root: Path) -> Path:
    link = root.parent / "link-to-ro"
    link.symlink_to(root / "ro")
    return link


# How the read-only grant names ROOT/ro (or ROOT itself).
_NAMES: dict[str, Callable[[Path], Path]] = {
    "inside": lambda root: root / "ro",
    "same": lambda root: root,
    "symlink": _symlink,
    "dotdot": lambda root: root / "ro" / ".." / "ro",
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", sorted(_NAMES))
def test_a_read_only_grant_inside_a_writable_one_is_refused(root: Path, backend: str,
                                                            how: str) -> None:
    read_only = _NAMES[how](root)
    with pytest.raises(PolicyError, match="the writable grant") as caught:
        _run(backend, root.parent / "nested.wat", DirGrant(root, "/rw", writable=True),
             DirGrant(read_only, "/ro"))
    assert "\n" not in str(caught.value)
    assert (root / "ro" / "secret").read_text() == "original"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_held_read_only_grant_inside_a_writable_one_is_refused(root: Path,
                                                                 backend: str) -> None:
    fd = os.open(root / "ro", os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(PolicyError, match="the writable grant"):
            _run(backend, root.parent / "nested.wat", DirGrant(root, "/rw", writable=True),
                 DirGrant.held(fd, "/ro", source=root / "ro"))
    finally:
        os.close(fd)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_writable_grant_inside_a_read_only_one_is_allowed(root: Path, backend: str) -> None:
    # ROOT/ro is writable through /rw, as granted; through ROOT (descriptor 3, which the
    # guest writes through) it stays read-only.
    result = _run(backend, root.parent / "nested.wat", DirGrant(root, "/top"),
                  DirGrant(root / "ro", "/rw", writable=True))
    assert result.outcome is Outcome.EXITED, result.message
    assert result.stdout[0] != 0  # no write access through the read-only grant
    assert (root / "ro" / "secret").read_text() == "original"


@pytest.mark.parametrize("backend", BACKENDS)
def test_side_by_side_grants_are_allowed(root: Path, backend: str) -> None:
    (root / "rw").mkdir()
    result = _run(backend, root.parent / "nested.wat", DirGrant(root / "rw", "/rw",
                                                                 writable=True),
                  DirGrant(root / "ro", "/ro"))
    assert result.outcome is Outcome.EXITED, result.message
    assert result.stdout[0] != 0  # rw/ro/secret does not exist
    assert (root / "ro" / "secret").read_text() == "original"


@pytest.mark.parametrize("isolate", [None, "process"])
def test_the_command_line_refuses_it_in_one_line(root: Path, isolate: str | None) -> None:
    args = [*STOCKADE, "run", *(["--isolate", isolate] if isolate else []),
            "--dir", f"{root}:/rw:rw", "--dir", f"{root / 'ro'}:/ro",
            str(root.parent / "nested.wat")]
    done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
                          check=False)
    assert done.returncode == 125, done.stderr
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "inside the writable grant" in lines[0], lines
    assert (root / "ro" / "secret").read_text() == "original"


def test_a_read_only_grant_too_deep_to_climb_is_refused(root: Path) -> None:
    """A read-only grant 4,200 directories below a writable one (held by a descriptor,
    as a symlink chain would name it): the climb stopped at 4,096 levels and the grant
    was let through, writable through the other (found by review). A climb past its
    4,096 levels now refuses it."""
    here = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for _ in range(4200):
            os.mkdir("d", dir_fd=here)
            deeper = os.open("d", os.O_PATH | os.O_DIRECTORY, dir_fd=here)
            os.close(here)
            here = deeper
        with pytest.raises(PolicyError, match="cannot tell whether"):
            _run("capi", root.parent / "nested.wat", DirGrant(root, "/rw", writable=True),
                 DirGrant.held(here, "/ro", source=root / "d"))
    finally:
        os.close(here)
        _remove_chain(root, "d")


def _remove_chain(parent: Path, name: str) -> None:
    """Remove a chain of nested directories too deep for a recursive removal (pytest's
    own clean-up of it overflowed the stack): each child is lifted to `parent`, then
    the emptied directory removed."""
    top = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while True:
            lifted = "b" if name == "a" else "a"
            here = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=top)
            try:
                os.rename("d", lifted, src_dir_fd=here, dst_dir_fd=top)
            except FileNotFoundError:
                lifted = ""
            finally:
                os.close(here)
            os.rmdir(name, dir_fd=top)
            if not lifted:
                return
            name = lifted
    finally:
        os.close(top)
