"""The local store as an attacker who can write it would use it: an `index.json` entry naming
another module or another manifest than the one it is pinned to, and a store (or the cache
directory holding it) that another user owns or can write. A run never takes the module
from the store's word: it is the one the (signed) manifest holds, checked every time."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from .fixtures import Registry, cli, stockade_env
from .test_signatures import env, key, pushed  # noqa: F401  (fixtures)

__all__ = ["env", "key"]

EXIT_22 = ('(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))'
           ' (memory (export "memory") 1) (data (i32.const 0) "{marker}")'
           ' (func (export "_start") (call $exit (i32.const 22))))')


def other_module(tmp_path: Path) -> Path:
    """A module no signed image holds, exiting 22 (so a run shows which module ran)."""
    path = tmp_path / "other.wat"
    path.write_text(EXIT_22.format(marker=os.urandom(8).hex()))
    return path


def built(env: dict[str, str], module: Path, ref: str, fmt: str) -> dict[str, Any]:
    done = cli(env, "oci", "build", str(module), "--tag", ref, "--format", fmt, "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def rewrite_index(store: Path, change: Any) -> None:
    """Rewrite the store's `index.json` in place (as its owner could): `change(entry)`
    for every entry."""
    path = store / "index.json"
    index = json.loads(path.read_bytes())
    for entry in index["manifests"]:
        change(entry)
    path.write_text(json.dumps(index))


def one_line(stderr: str) -> None:
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr


@pytest.mark.parametrize("fmt", ["artifact", "image"])
def test_an_entry_naming_another_module_is_refused(registry: Registry, tmp_path: Path,
                                                   env: dict[str, str], key: Path,
                                                   fmt: str) -> None:
    """A signature-required run pinned to a signed manifest ran whatever module the
    entry's `io.stockade.module.digest` named (found by review: exit 22)."""
    repo = f"{registry.host}/store-{os.urandom(4).hex()}"
    digest = pushed(env, tmp_path, f"{repo}:signed", "signed", fmt)
    assert cli(env, "oci", "sign", "--key", str(key), f"{repo}:signed").returncode == 0
    other = built(env, other_module(tmp_path), f"{repo}:other", fmt)["module_digest"]
    pinned = f"oci://{repo}:signed@{digest}"
    trust = ("--trust-key", f"{key}.pub", "--require-signature")
    assert cli(env, "run", *trust, pinned).returncode == 7

    def swap(entry: dict[str, Any]) -> None:
        if entry["digest"] == digest:
            entry["annotations"]["io.stockade.module.digest"] = other

    rewrite_index(tmp_path / "cache" / "oci", swap)
    for args in (trust, ()):
        refused = cli(env, "run", *args, pinned)
        assert refused.returncode == 74, refused.stderr
        assert f"names module {other}" in refused.stderr and "pull" in refused.stderr
        one_line(refused.stderr)


def test_a_pinned_entry_naming_another_manifest_is_refused(registry: Registry, tmp_path: Path,
                                                           env: dict[str, str]) -> None:
    repo = f"{registry.host}/pin-{os.urandom(4).hex()}"
    digest = pushed(env, tmp_path, f"{repo}:1", "pinned")
    pinned = f"{repo}:1@{digest}"
    assert cli(env, "oci", "pull", pinned).returncode == 0
    other = built(env, other_module(tmp_path), f"{repo}:other", "artifact")

    def repoint(entry: dict[str, Any]) -> None:
        if entry["annotations"]["org.opencontainers.image.ref.name"] == pinned:
            entry["digest"] = other["digest"]
            entry["annotations"]["io.stockade.module.digest"] = other["module_digest"]

    rewrite_index(tmp_path / "cache" / "oci", repoint)
    refused = cli(env, "run", f"oci://{pinned}")
    assert refused.returncode == 74, refused.stderr
    assert f"names manifest {other['digest']}" in refused.stderr
    one_line(refused.stderr)


def _shared_cache(tmp_path: Path, registry: Registry) -> tuple[dict[str, str], Path]:
    """(environment, cache directory): an image pulled into a cache directory anyone can
    write, as a shared STOCKADE_CACHE_DIR."""
    cache = tmp_path / "shared"
    cache.mkdir()
    cache.chmod(0o777)
    environment = stockade_env(cache, tmp_path / "state", registry)
    return environment, cache


@pytest.mark.parametrize("where", ["cache directory", "store", "blobs", "index.json",
                                   "module blob"])
def test_a_store_another_user_can_write_is_refused(registry: Registry, tmp_path: Path,
                                                   env: dict[str, str], where: str) -> None:
    """The AoT cache in the same directory refused what another user could write; the
    image store took `index.json` (and so the module run) from anyone."""
    ref = f"{registry.host}/shared-{os.urandom(4).hex()}:1"
    pushed(env, tmp_path, ref, "shared")
    shared, cache = _shared_cache(tmp_path, registry)
    store = cache / "oci"
    assert cli(shared, "oci", "pull", ref).returncode == 0
    # Ours but open to others: tightened as the AoT cache tightens its own root.
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert cli(shared, "run", f"oci://{ref}").returncode == 7
    entry = json.loads((store / "index.json").read_bytes())["manifests"][0]
    module = store / "blobs" / "sha256" / entry["annotations"]["io.stockade.module.digest"][7:]
    target = {"cache directory": cache, "store": store, "blobs": store / "blobs",
              "index.json": store / "index.json", "module blob": module}[where]
    if target.is_dir():  # another user's directory
        if os.geteuid() != 0:
            pytest.skip("giving a directory to another uid needs root")
        os.chown(target, 65534, 65534)
    else:  # a file anyone may have written
        target.chmod(0o666)
    refused = cli(shared, "run", f"oci://{ref}")
    assert refused.returncode == 125, refused.stderr
    assert "refused" in refused.stderr and str(target) in refused.stderr
    one_line(refused.stderr)
    if where != "module blob":  # blobs are checked as they are read
        listed = cli(shared, "oci", "ls")
        assert listed.returncode == 125 and "refused" in listed.stderr


def test_the_review_reproducer_is_refused(registry: Registry, tmp_path: Path,
                                          env: dict[str, str], key: Path) -> None:
    """A cache directory of uid 65534, mode 0777, whose `index.json` it rewrote: the real
    manifest digest, another module digest. The run ran that module (exit 22)."""
    if os.geteuid() != 0:
        pytest.skip("files of another uid need root to make")
    repo = f"{registry.host}/repro-{os.urandom(4).hex()}"
    digest = pushed(env, tmp_path, f"{repo}:1", "repro")
    assert cli(env, "oci", "sign", "--key", str(key), f"{repo}:1").returncode == 0
    shared, cache = _shared_cache(tmp_path, registry)
    assert cli(shared, "oci", "pull", f"{repo}:1").returncode == 0
    other = built(shared, other_module(tmp_path), f"{repo}:other", "artifact")
    store = cache / "oci"

    def swap(entry: dict[str, Any]) -> None:
        if entry["digest"] == digest:
            entry["annotations"]["io.stockade.module.digest"] = other["module_digest"]

    rewrite_index(store, swap)
    for path in (cache, store, store / "blobs", store / "blobs" / "sha256", store / "tmp",
                 store / "index.json"):
        os.chown(path, 65534, 65534)
        path.chmod(0o777 if path.is_dir() else 0o644)
    refused = cli(shared, "run", "--trust-key", f"{key}.pub", "--require-signature",
                  f"oci://{repo}:1@{digest}")
    assert refused.returncode not in (0, 7, 22), refused.stderr
    assert refused.returncode == 125 and "owned by uid 65534" in refused.stderr
    one_line(refused.stderr)


def _refusal(shared: dict[str, str], ref: str) -> str:
    refused = cli(shared, "run", f"oci://{ref}")
    assert refused.returncode == 125, refused.stderr
    one_line(refused.stderr)
    return refused.stderr


def test_a_store_of_another_user_says_it_is_theirs(registry: Registry, tmp_path: Path,
                                                   env: dict[str, str]) -> None:
    """Another user's store that only its owner can write (0755) was refused as one
    "another user can write": chmod cannot fix it, a store of one's own does."""
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another uid needs root")
    ref = f"{registry.host}/theirs-{os.urandom(4).hex()}:1"
    pushed(env, tmp_path, ref, "theirs")
    shared, cache = _shared_cache(tmp_path, registry)
    assert cli(shared, "oci", "pull", ref).returncode == 0
    for path in (cache, *(cache / "oci").rglob("*"), cache / "oci"):
        os.chown(path, 65534, 65534, follow_symlinks=False)
    message = _refusal(shared, ref)
    assert f"{cache}: owned by uid 65534, not by this user (uid 0)" in message
    assert "can write" not in message and "STOCKADE_CACHE_DIR" in message


@pytest.mark.parametrize(("mode", "who"), [(0o664, "its group"), (0o646, "others"),
                                           (0o666, "group and others")],
                         ids=["group", "others", "both"])
def test_a_store_file_others_can_write_says_who(registry: Registry, tmp_path: Path,
                                                env: dict[str, str], mode: int,
                                                who: str) -> None:
    """A file's mode named what it lets others do to "its files", as a directory's."""
    ref = f"{registry.host}/loose-{os.urandom(4).hex()}:1"
    pushed(env, tmp_path, ref, "loose")
    shared, cache = _shared_cache(tmp_path, registry)
    assert cli(shared, "oci", "pull", ref).returncode == 0
    index = cache / "oci" / "index.json"
    index.chmod(mode)
    message = _refusal(shared, ref)
    assert f"{index}: mode {mode:04o} lets others replace it (writable by {who})" in message
    assert "its files" not in message


_AS_ANOTHER_USER = """
import os, sys
from pathlib import Path
from stockade.oci.errors import StoreRefused
from stockade.oci.store import Store
store = Store(Path(sys.argv[1]) / "oci", within=Path(sys.argv[1]))
os.setegid(65534)
os.seteuid(65534)
try:
    store.entries()
except StoreRefused as exc:
    print(exc.message)
else:
    print("not refused")
"""


@pytest.mark.parametrize("reachable", [True, False], ids=["reachable", "private-parent"])
def test_a_root_store_used_by_another_user_says_it_is_roots(reachable: bool) -> None:
    """A shared store root made, read by a user (the module imported as root, then the
    effective uid dropped: the interpreter of this run is not another user's to start).
    One in a directory the user cannot enter was "unreadable; remove it and pull again"."""
    import shutil
    import subprocess
    import sys
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("acting as another user needs root")
    # Beside, not inside, pytest's own temp directory: that one is private to root.
    base = Path(tempfile.mkdtemp(prefix="stockade-shared-"))
    try:
        base.chmod(0o755 if reachable else 0o700)
        cache = base / "cache"
        (cache / "oci").mkdir(parents=True)
        for path in (cache, cache / "oci"):
            path.chmod(0o755)
        done = subprocess.run([sys.executable, "-c", _AS_ANOTHER_USER, str(cache)],
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        shutil.rmtree(base)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    message = done.stdout.strip()
    if reachable:
        assert message.startswith(f"local store: {cache}: owned by uid 0, not by this user "
                                  "(uid 65534); refused"), message
    else:
        assert message.startswith(f"local store: {cache}: this user cannot reach it "
                                  "(Permission denied); refused"), message
    assert "can write" not in message and "STOCKADE_CACHE_DIR" in message
