"""The public surface of `stockade` is deliberate: this pins it."""

from __future__ import annotations

import stockade


def test_public_names() -> None:
    assert sorted(stockade.__all__) == sorted([
        "Sandbox", "Policy", "Limits", "Capabilities", "DirGrant", "load_policy", "Invocation",
        "Result", "Outcome", "Usage", "StockadeError", "UsageError", "PolicyError",
        "ModuleNotFound", "ModuleError", "DeniedImport", "WorkerError",
        "AsyncSandbox", "SandboxPool", "PoolBusy", "Trust", "UntrustedModule",
    ])
    for name in stockade.__all__:
        assert getattr(stockade, name).__module__.startswith("stockade.")


def test_errors_know_their_exit_codes() -> None:
    assert stockade.UsageError("x").exit_code == 125
    assert stockade.PolicyError("x").exit_code == 125
    assert stockade.ModuleNotFound("x").exit_code == 127
    assert stockade.ModuleError("x").exit_code == 126
    assert stockade.DeniedImport("x", "env.f").http_status == 403
    assert (stockade.UntrustedModule("x").exit_code,
            stockade.UntrustedModule("x").http_status) == (126, 403)


def test_type_hints_of_the_public_records_resolve() -> None:
    # Modules on `stockade run`'s path import `typing` for type checkers only; a public
    # record's annotations must still resolve for tools that read them (pydantic, cattrs).
    import dataclasses
    import typing

    records = [getattr(stockade, name) for name in stockade.__all__
               if dataclasses.is_dataclass(getattr(stockade, name))]
    assert {record.__name__ for record in records} >= {"Policy", "Limits", "Result", "Usage",
                                                        "Invocation", "Trust"}
    for record in records:
        hints = typing.get_type_hints(record)
        assert set(hints) >= {field.name for field in dataclasses.fields(record)}, record
