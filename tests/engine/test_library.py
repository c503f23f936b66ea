"""wasmtime's library found and bound without wasmtime-py: the same file, the same layouts."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from stockade.engine import library
from stockade.engine.fastpath import _capi


def test_the_same_library_wasmtime_py_loads() -> None:
    from wasmtime import _ffi

    assert library.library_path().samefile(_ffi.filename)
    assert library.installed_version() == _capi.installed_wasmtime()


@pytest.mark.parametrize(("ours", "theirs"), [
    ("ByteVec", "wasm_byte_vec_t"),
    ("Instance", "wasmtime_instance_t"),
    ("Extern", "wasmtime_extern_t"),
    ("ExportTypeVec", "wasm_exporttype_vec_t"),
    ("ValTypeVec", "wasm_valtype_vec_t"),
    ("ValRaw", "wasmtime_val_raw_t"),
    ("Val", "wasmtime_val_t"),
])
def test_struct_layouts_match_the_generated_bindings(ours: str, theirs: str) -> None:
    from wasmtime import _bindings

    mine, generated = getattr(_capi, ours), getattr(_bindings, theirs)
    assert ctypes.sizeof(mine) == ctypes.sizeof(generated)
    assert ctypes.alignment(mine) == ctypes.alignment(generated)
    for name, *_ in mine._fields_:
        if hasattr(generated, name):
            assert getattr(mine, name).offset == getattr(generated, name).offset, name


def test_extern_members_sit_where_the_c_side_reads_them() -> None:
    from wasmtime import _bindings

    union, generated = _capi.Extern.of.size, _bindings.wasmtime_extern_union_t
    assert union == ctypes.sizeof(generated)
    for member in ("func", "memory", "table", "global_", "tag"):
        assert getattr(_capi._ExternUnion, member).size == getattr(generated, member).size


def test_binding_the_fast_path_does_not_import_wasmtime() -> None:
    code = ("import sys\nimport stockade.engine.fastpath as fast\n"
            "assert fast.FastEngine\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'wasmtime'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
