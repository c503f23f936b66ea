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
