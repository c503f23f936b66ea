"""A bundle's directories are granted from descriptors (`/proc/PID/fd/N`), but what is
shown of them (observers and telemetry, messages) is the host path as the bundle granted
it; the run itself still opens the descriptor, so a source swapped after the bundle was
read changes nothing the guest sees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stockade import Invocation, Sandbox
from stockade.isolate import IsolatedSandbox
from stockade.observe import RunInfo
from stockade.result import Result
from stockade.runtime.bundle import read_bundle
from stockade.sandbox.capi import CapiSandbox

from .direct import listing_bundle


class _Seen:
    """Records the writable directories each run's observers are told of."""

    def __init__(self) -> None:
        self.writable: list[tuple[Path, ...]] = []

    def run_started(self, info: RunInfo) -> None:
        self.writable.append(info.writable_dirs)

    def run_finished(self, info: RunInfo, result: Result) -> None:
        pass


SANDBOXES: dict[str, Any] = {"wasmtime": Sandbox, "capi": CapiSandbox,
                             "isolated": IsolatedSandbox}


@pytest.mark.parametrize("kind", list(SANDBOXES))
def test_grants_show_their_host_paths_while_the_run_uses_the_descriptors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.delenv("STOCKADE_RUNTIME_POLICY", raising=False)  # no host policy
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    (data / "checked").write_text("granted")
    outside.mkdir()
    (outside / "secret").write_text("never granted")
    bundle = listing_bundle(tmp_path, data, writable=True)
    seen = _Seen()
    with read_bundle(bundle) as spec:
        shown = [str(grant) for grant in spec.policy.capabilities.dirs]
        assert shown == [f"{bundle / 'rootfs'}:/:ro", f"{data}:/mnt:rw"]
        data.rename(tmp_path / "moved")  # after the check: the guest still sees `data`'s
        data.symlink_to(outside)
        with SANDBOXES[kind](spec.policy, observers=(seen,)) as sandbox:
            result = sandbox.run(spec.module, Invocation(args=spec.args))
    listed = result.stdout.decode().splitlines()
    assert "checked" in listed and "secret" not in listed, result.stdout + result.stderr
    assert seen.writable == [(data,)]
