"""An image's process (`Entrypoint` arguments, `Cmd`, `Env`, `WorkingDir`) under a trust
that rests on the module's own signature: the module signature covers the module's bytes,
not the image config, so a signed interpreter re-wrapped in a new image whose `Cmd`
carried other code ran that code as if it were signed. Without an image signature, an
image process that would reach the guest is refused; signed images and the caller's own
arguments run."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tests.conftest import guest

from .fixtures import Registry, cli
from .test_signatures import PASSWORD, env, key  # noqa: F401  (fixtures)

__all__ = ["env", "key", "PASSWORD"]


def _signed_probe(env: dict[str, str], tmp_path: Path) -> tuple[Path, Path]:
    """(the probe guest signed by a new module key, that key's public file)."""
    secret = tmp_path / "module.key"
    assert cli(env, "keygen", str(secret)).returncode == 0
    signed = tmp_path / "probe.signed.wasm"
    done = cli(env, "sign", "--key", str(secret), str(guest("probe.wasm")), "-o", str(signed))
    assert done.returncode == 0, done.stderr
    return signed, Path(f"{secret}.pub")


def _image(env: dict[str, str], module: Path, ref: str, *process: str) -> None:
    built = cli(env, "oci", "build", str(module), "--format", "image", "--tag", ref, *process)
    assert built.returncode == 0, built.stderr
    pushed = cli(env, "oci", "push", ref)
    assert pushed.returncode == 0, pushed.stderr


def test_an_unsigned_image_process_does_not_ride_on_a_module_signature(
        registry: Registry, tmp_path: Path, env: dict[str, str], key: Path) -> None:
    module, module_key = _signed_probe(env, tmp_path)
    repo = f"{registry.host}/process-{os.urandom(4).hex()}"
    _image(env, module, f"{repo}:rewrapped", "--arg", "/attacker-chosen", "--env",
           "INJECTED=1")
    trust = ("--trust-key", str(module_key), "--require-signature")

    refused = cli(env, "run", *trust, f"oci://{repo}:rewrapped")
    assert refused.returncode == 126, refused.stdout + refused.stderr
    assert "/attacker-chosen" not in refused.stdout and "INJECTED" not in refused.stdout
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1, refused.stderr
    for words in ("Cmd", "Env", "not covered by a signature", "sign the image"):
        assert words in line, line

    # Without a trust, the image's process is the container runtime's, as before.
    free = cli(env, "run", f"oci://{repo}:rewrapped")
    assert free.returncode == 0, free.stderr
    assert "read /attacker-chosen" in free.stdout and "env INJECTED=1" in free.stdout

    # Signed by a trusted cosign key, the image's config is covered: it applies.
    assert cli(env, "oci", "sign", "--key", str(key), f"{repo}:rewrapped").returncode == 0
    both = ("--trust-key", str(module_key), "--trust-key", f"{key}.pub", "--require-signature")
    ran = cli(env, "run", *both, f"oci://{repo}:rewrapped")
    assert ran.returncode == 0, ran.stderr
    assert "read /attacker-chosen" in ran.stdout and "env INJECTED=1" in ran.stdout


def test_the_callers_arguments_replace_an_unsigned_cmd(
        registry: Registry, tmp_path: Path, env: dict[str, str]) -> None:
    module, module_key = _signed_probe(env, tmp_path)
    repo = f"{registry.host}/cmd-{os.urandom(4).hex()}"
    _image(env, module, f"{repo}:cmd", "--arg", "/attacker-chosen")
    _image(env, module, f"{repo}:plain")
    trust = ("--trust-key", str(module_key), "--require-signature")

    refused = cli(env, "run", *trust, f"oci://{repo}:cmd")
    assert refused.returncode == 126, refused.stderr
    assert "give the arguments on the command line" in refused.stderr

    ran = cli(env, "run", *trust, f"oci://{repo}:cmd", "/mine")
    assert ran.returncode == 0, ran.stderr
    assert "read /mine" in ran.stdout and "attacker-chosen" not in ran.stdout

    # An image whose process is only its module (what `oci build` writes) runs as before.
    plain = cli(env, "run", *trust, f"oci://{repo}:plain")
    assert plain.returncode == 0, plain.stderr


def test_the_refusal_is_a_denied_run_with_an_audit_record(
        registry: Registry, tmp_path: Path, env: dict[str, str]) -> None:
    """The refusal of an unsigned image process was an `error` in `--json` and left no
    audit record, where the trust gate's refusals are `denied` (126) and audited."""
    import json

    module, module_key = _signed_probe(env, tmp_path)
    repo = f"{registry.host}/audited-{os.urandom(4).hex()}"
    _image(env, module, f"{repo}:cmd", "--arg", "/attacker-chosen")
    trust = ("--trust-key", str(module_key), "--require-signature")

    refused = cli(env, "run", "--json", *trust, f"oci://{repo}:cmd")
    assert refused.returncode == 126, refused.stdout + refused.stderr
    [line] = refused.stdout.splitlines()
    shown = json.loads(line)
    assert shown["outcome"] == "denied" and shown["exit_code"] == 126, shown
    assert "Cmd" in shown["message"] and "not covered by a signature" in shown["message"]
    assert shown["module"].startswith(f"{repo}:cmd@sha256:"), shown
    assert shown["sha256"] == hashlib.sha256(module.read_bytes()).hexdigest(), shown

    human = cli(env, "run", *trust, f"oci://{repo}:cmd")
    assert human.returncode == 126 and "/attacker-chosen" not in human.stdout
    assert len(human.stderr.strip().splitlines()) == 1, human.stderr

    records = [json.loads(text) for text in
               (Path(env["STOCKADE_STATE_DIR"]) / "audit.jsonl").read_text().splitlines()]
    denials = [r for r in records if r.get("kind") == "denial"]
    assert len(denials) == 2, records
    for record in denials:
        assert record["outcome"] == "denied" and "Cmd" in record["message"], record
        assert record["sha256"] == shown["sha256"], record
