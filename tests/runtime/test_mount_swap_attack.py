"""Attack: a bind mount checked against the host policy at `create`, swapped for a
symlink out of the allowed directory before `start`. The check resolves the source
once, at `create`; the run opens the grant's path again when the guest starts."""

from __future__ import annotations

import os
from pathlib import Path

from .direct import (
    create,
    host_policy_env,
    listing_bundle,
    runtime,
    wait_blocked_on_fifo,
    wait_gone,
)


def test_a_mount_swapped_for_a_symlink_after_create_stays_inside(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "sub" / "harmless").write_text("x")
    outside.mkdir()
    (outside / "secret-outside-allowed").write_text("s")
    env = host_policy_env(tmp_path, allowed)
    bundle = listing_bundle(tmp_path, allowed / "sub")
    created = create(tmp_path, env, bundle)
    assert created.pid is not None, created.errors.read_text()
    wait_blocked_on_fifo(created.pid)  # the bundle was read and checked: now only `start`
    # Whoever may write inside the allowed directory swaps the checked source.
    os.rename(allowed / "sub", allowed / "old")
    (allowed / "sub").symlink_to(outside)
    started = runtime(tmp_path, env, "start", "c1")
    wait_gone(created.pid)
    listed = created.output.read_text() + created.errors.read_text()
    assert started.returncode == 0 or "secret" not in listed
    assert "secret-outside-allowed" not in listed, listed

