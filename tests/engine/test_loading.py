"""Loading modules: formats, the AoT cache, bad input, foreign .cwasm files."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade import ModuleError, ModuleNotFound
from stockade.engine import AotCache, Engine, EngineConfig
from stockade.engine.seal import host_key, seal, strip
from stockade.errors import PrecompiledRefused
from tests.conftest import guest


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(EngineConfig(), cache=AotCache(tmp_path / "cache"))


def test_second_load_comes_from_cache(tmp_path: Path) -> None:
    cache = AotCache(tmp_path / "cache")
    first = Engine(EngineConfig(), cache=cache).load(guest("hello.wasm"))
    assert not first.from_cache
    again = Engine(EngineConfig(), cache=cache).load(guest("hello.wasm"))
    assert again.from_cache and again.sha256 == first.sha256
    with cache.open(EngineConfig().fingerprint(), first.sha256) as entry:
        assert entry is not None


def test_cache_key_depends_on_config() -> None:
    assert EngineConfig(fuel=True).fingerprint() != EngineConfig(fuel=False).fingerprint()
    assert EngineConfig(max_stack=1).fingerprint() != EngineConfig(max_stack=2).fingerprint()


def test_corrupt_cache_entry_is_recompiled(tmp_path: Path) -> None:
    cache = AotCache(tmp_path / "cache")
    loaded = Engine(EngineConfig(), cache=cache).load(guest("hello.wasm"))
    cache.path(EngineConfig().fingerprint(), loaded.sha256).write_bytes(b"\x7fELFgarbage")
    again = Engine(EngineConfig(), cache=cache).load(guest("hello.wasm").read_bytes())
    assert not again.from_cache


def test_wat_source(engine: Engine) -> None:
    loaded = engine.load(b'(module (func (export "_start")))')
    assert len(loaded.sha256) == 64


def test_missing_file(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(ModuleNotFound, match="no such module file"):
        engine.load(tmp_path / "absent.wasm")


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file"),
    (b"hello, I am a text file\n", "not a WebAssembly module"),
    (bytes(range(256)) * 4, "not a WebAssembly module"),
    (b"(module (func $oops", "invalid WAT"),
])
def test_bad_input(engine: Engine, tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.wasm"
    path.write_bytes(content)
    with pytest.raises(ModuleError, match=message):
        engine.load(path)


def test_truncated_module(engine: Engine, tmp_path: Path) -> None:
    data = guest("hello.wasm").read_bytes()
    path = tmp_path / "truncated.wasm"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModuleError, match="invalid WebAssembly"):
        engine.load(path)


def _sealed_cwasm(engine: Engine, path: Path) -> Path:
    """What `stockade compile` writes: the serialized module and this host's trailer."""
    data = strip(bytes(engine.load(guest("hello.wasm")).module.serialize()))
    path.write_bytes(data + seal(data, engine.fingerprint, "cwasm", host_key()))
    return path


def test_cwasm_from_other_configuration_is_refused(tmp_path: Path) -> None:
    with Engine(EngineConfig(fuel=False), cache=AotCache(tmp_path / "a")) as other:
        path = _sealed_cwasm(other, tmp_path / "hello.cwasm")
    with Engine(EngineConfig(fuel=True), cache=AotCache(tmp_path / "b")) as engine, \
            pytest.raises(PrecompiledRefused, match="another engine configuration"):
        engine.load(path, allow_precompiled=True)


def test_cwasm_from_same_configuration_loads(engine: Engine, tmp_path: Path) -> None:
    path = _sealed_cwasm(engine, tmp_path / "hello.cwasm")
    loaded = engine.load(path, allow_precompiled=True)
    assert loaded.from_cache and loaded.precompiled
    # Served from memory the second time, and still only to callers that opted in.
    with pytest.raises(PrecompiledRefused, match="--allow-precompiled"):
        engine.load(path)
    with pytest.raises(PrecompiledRefused, match="--allow-precompiled"):
        engine.load(path.read_bytes())


def test_close_twice(engine: Engine) -> None:
    engine.close()
    engine.close()
