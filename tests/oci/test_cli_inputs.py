"""`stockade oci` inputs refused in one line before any registry is asked: registry hosts
with a port out of range, `--insecure` values that are no `HOST[:PORT]` (and such entries
of STOCKADE_INSECURE_REGISTRIES warned about), `--env` entries that are no KEY=VALUE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import guest
from .fixtures import cli, stockade_env


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return stockade_env(tmp_path / "cache", tmp_path / "state")


@pytest.mark.parametrize("ref", ["127.0.0.1:65536/a:1", "127.0.0.1:0/a:1", "127.0.0.1:abc/a:1",
                                 "[::1]:99999/a:1"])
def test_a_port_out_of_range_is_a_malformed_reference(env: dict[str, str], ref: str) -> None:
    """65536 and 0 passed as a registry host, then failed as unreachable (69)."""
    done = cli(env, "oci", "pull", ref)
    assert done.returncode == 125, done.stderr
    assert "is not a registry host" in done.stderr and done.stderr.count("\n") == 1


def test_valid_registry_hosts_still_parse() -> None:
    from stockade.oci.reference import is_registry_host, parse_reference

    for host in ("127.0.0.1:65535", "127.0.0.1:1", "localhost", "[::1]:5000", "[::1]",
                 "registry.example"):
        assert is_registry_host(host), host
        assert parse_reference(f"{host}/a:1").registry == host


@pytest.mark.parametrize("value", ["http://127.0.0.1:5000", "127.0.0.1:5000/", "",
                                   "127.0.0.1:70000", "host:port"])
def test_a_malformed_insecure_flag_is_refused(env: dict[str, str], value: str) -> None:
    """It matched no registry: the registry was spoken to over HTTPS, the flag ignored."""
    done = cli(env, "oci", "pull", "127.0.0.1:5000/a:1", "--insecure", value)
    assert done.returncode == 125, done.stderr
    assert "expected HOST[:PORT]" in done.stderr and done.stderr.count("\n") == 1


def test_malformed_insecure_registries_in_the_environment_are_warned_about_once(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from stockade.oci import registry

    monkeypatch.setattr(registry, "_WARNED", set())
    monkeypatch.setenv("STOCKADE_INSECURE_REGISTRIES",
                       "http://a.example:5000, b.example:5000 ,c.example:5000/")
    assert registry.insecure_hosts(("d.example",)) == {"b.example:5000", "d.example"}
    assert registry.insecure_hosts() == {"b.example:5000"}
    warned = capsys.readouterr().err.splitlines()
    assert len(warned) == 2, warned
    assert "'http://a.example:5000'" in warned[0] and "'c.example:5000/'" in warned[1]
    assert all("STOCKADE_INSECURE_REGISTRIES" in line and "HOST[:PORT]" in line
               for line in warned)


@pytest.mark.parametrize("entry", ["NOEQ", "=v"])
def test_an_image_env_entry_that_is_no_key_value_is_refused(env: dict[str, str],
                                                             tmp_path: Path, entry: str) -> None:
    """It was written into the image config's Env as given."""
    done = cli(env, "oci", "build", str(guest("hello.wasm")), "--format", "image", "--tag",
               "localhost:1/t:3", "--env", "A=1", "--env", entry)
    assert done.returncode == 125, done.stderr
    assert f"--env {entry!r}: expected KEY=VALUE" in done.stderr
    assert json.loads(cli(env, "oci", "ls", "--json").stdout) == []
    built = cli(env, "oci", "build", str(guest("hello.wasm")), "--format", "image", "--tag",
                "localhost:1/t:3", "--env", "A=1", "--env", "EMPTY=", "--json")
    assert built.returncode == 0, built.stderr


@pytest.mark.parametrize("kind", ["deep", "large"])
def test_an_index_too_deep_or_too_large_is_a_corrupt_store(env: dict[str, str],
                                                           kind: str) -> None:
    """`index.json` nested 100,000 deep raised a traceback; a 3 GiB one took 6.3 GB to
    list (found by review). Both are a corrupt store: one line, 74."""
    built = cli(env, "oci", "build", str(guest("hello.wasm")), "--tag", "localhost:1/t:1")
    assert built.returncode == 0, built.stderr
    index = Path(env["STOCKADE_CACHE_DIR"]) / "oci" / "index.json"
    if kind == "deep":
        index.write_text("[" * 100_000 + "]" * 100_000)
    else:
        with index.open("r+b") as out:
            out.truncate(2 * 1024**3)  # sparse
    for args in (("oci", "ls"), ("oci", "ls", "--json"),
                 ("run", "oci://localhost:1/t:1")):
        done = cli(env, *args)
        assert done.returncode == 74, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "index.json" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [("keygen", "--cosign", "{dir}/c"),
                                  ("oci", "sign", "--key", "{dir}/k", "localhost:1/t:1")])
def test_no_password_and_no_standard_input_is_one_line(env: dict[str, str], tmp_path: Path,
                                                       args: tuple[str, ...]) -> None:
    """Started with descriptor 0 closed and no COSIGN_PASSWORD: a traceback
    (`sys.stdin` is None), found by review. The line that asks for COSIGN_PASSWORD, 125."""
    import os
    import subprocess

    from .fixtures import BIN

    made = cli({**env, "COSIGN_PASSWORD": ""}, "keygen", "--cosign", str(tmp_path / "k"))
    assert made.returncode == 0, made.stderr
    done = subprocess.run([str(BIN / "stockade"), *(a.format(dir=tmp_path) for a in args)],
                          env=env, capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: os.close(0))  # noqa: PLW1509 - the point
    assert done.returncode == 125, done.stderr
    assert "COSIGN_PASSWORD" in done.stderr and "Traceback" not in done.stderr


def test_a_module_cut_short_is_not_built(env: dict[str, str], tmp_path: Path) -> None:
    """`oci build` stored the first 100 bytes of a module and exited 0; the image failed
    only at its first run (found by review). Invalid: 126, one line, nothing stored."""
    cut = tmp_path / "cut.wasm"
    cut.write_bytes(guest("hello.wasm").read_bytes()[:100])
    done = cli(env, "oci", "build", str(cut), "--tag", "localhost:1/cut:1")
    assert done.returncode == 126, done.stderr
    assert "invalid WebAssembly" in done.stderr and len(done.stderr.splitlines()) == 1
    assert json.loads(cli(env, "oci", "ls", "--json").stdout) == []


def test_a_key_that_is_no_cosign_key_is_told_before_a_password_is_asked(
        env: dict[str, str], tmp_path: Path) -> None:
    """`oci sign --key` given an Ed25519 module key asked for COSIGN_PASSWORD first
    (found by review): the key's kind is told first."""
    made = cli(env, "keygen", str(tmp_path / "signer"))
    assert made.returncode == 0, made.stderr
    done = cli({k: v for k, v in env.items() if k != "COSIGN_PASSWORD"}, "oci", "sign",
               "--key", str(tmp_path / "signer"), "localhost:1/t:1")
    assert done.returncode != 0 and "COSIGN_PASSWORD" not in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
