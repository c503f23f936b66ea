"""The Kubernetes base carries no password of its own: its Secret is generated from
`secrets/redis.env`, which `make-secrets.sh` fills with a random one; without that file
the base does not render, so nobody can deploy a placeholder."""

from __future__ import annotations

import base64
import re
import stat
import subprocess
from pathlib import Path

from .conftest import KUBERNETES, deploy_copy, kustomize, one, render


def make_secrets(copy: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(copy / "make-secrets.sh")], capture_output=True,
                          text=True, timeout=60, check=False)


def password_of(copy: Path) -> str:
    text = (copy / "secrets" / "redis.env").read_text()
    found = re.fullmatch(r"redis-password=([0-9a-f]+)\n", text)
    assert found, text
    return found.group(1)


def test_the_base_does_not_render_before_its_secrets_are_made(tmp_path: Path) -> None:
    done = kustomize(deploy_copy(tmp_path))
    assert done.returncode != 0
    assert "redis.env" in done.stderr


def test_each_deployment_gets_its_own_random_password_kept_on_rerun(tmp_path: Path) -> None:
    first, second = deploy_copy(tmp_path / "a"), deploy_copy(tmp_path / "b")
    assert make_secrets(first).returncode == 0 and make_secrets(second).returncode == 0
    password = password_of(first)
    assert len(password) == 48  # 24 random bytes
    assert password != password_of(second)
    mode = (first / "secrets" / "redis.env").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    again = make_secrets(first)
    assert again.returncode == 0 and "kept" in again.stdout
    assert password_of(first) == password  # a deployed password never changes silently


def test_the_rendered_secret_holds_the_generated_password() -> None:
    docs = render(KUBERNETES)
    secret = one(docs, "Secret", "stockade-secrets")
    password = base64.b64decode(secret["data"]["redis-password"]).decode()
    assert re.fullmatch(r"[0-9a-f]{48}", password), password
    assert "release.pub" in secret["data"]


def test_no_password_is_committed_under_deploy() -> None:
    for path in (KUBERNETES.parent).rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".yml", ".toml", ".env"):
            assert "change-me" not in path.read_text(), path
    ignored = (KUBERNETES / "secrets" / ".gitignore").read_text()
    assert "*.env" in ignored.splitlines()
