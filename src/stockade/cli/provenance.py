"""`stockade keygen`, `stockade sign`, `stockade verify`: embedded module signatures."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .paths import PathParam

__all__ = ["keygen", "sign", "verify"]


@click.command("keygen")
# The name is judged by `trust.key_pair_paths` ('', '.', '..', an existing file).
@click.argument("key", type=PathParam("new", "key file"))
@click.option("--cosign", "cosign", is_flag=True,
              help="An image signing key pair as cosign writes it: ECDSA P-256, KEY encrypted "
                   "(password from COSIGN_PASSWORD or a prompt), KEY.pub SPKI PEM.")
def keygen(key: Path, cosign: bool) -> None:
    """Write a new Ed25519 secret key to KEY (PEM, mode 0600) and its public key to KEY.pub
    (module signatures); with --cosign, a cosign key pair (image signatures).

    Never overwrites an existing file (exit 125).
    """
    from ..display import printable as p
    from ..trust import generate

    if cosign:
        from ..trust.cosignkeys import generate_cosign
        from .oci import cosign_password

        secret_file, public_file, pair = generate_cosign(key, cosign_password(confirm=True))
        click.echo(f"wrote {p(str(secret_file))} (cosign encrypted, 0600) and "
                   f"{p(str(public_file))}; key id {pair.public.key_id}")
        return
    secret_path, public_path, secret = generate(key)
    click.echo(f"wrote {p(str(secret_path))} (secret, 0600) and {p(str(public_path))}; "
               f"key id {secret.public.key_id.hex()}")


@click.command("sign")
@click.option("--key", "key", required=True, type=PathParam("any", "secret key file"),
              help="Secret key (PEM, DER, raw or OpenSSH).")
@click.option("-o", "--output", required=True, type=PathParam("any", "output file"),
              help="Where to write the signed module.")
@click.option("--no-key-id", is_flag=True, help="Leave the key id out of the signature.")
@click.option("--json", "as_json", is_flag=True,
              help="Report the signed message, signature and hashes as JSON.")
@click.argument("module")
def sign(key: Path, output: Path, no_key_id: bool, as_json: bool, module: str) -> None:
    """Sign MODULE with KEY, keeping the signatures it has; write the result to OUTPUT.

    The signature is embedded as wasmsign2 embeds it (a `signature` custom section first),
    so wasmsign2 and `stockade verify` both check it. Exit 126 for a malformed module.
    """
    from ..display import printable
    from ..errors import ModuleError, UsageError
    from ..inspect.validation import review
    from ..trust import load_secret_key, sign_module
    from .inspect import read_module

    secret = load_secret_key(key)
    data, name = read_module(module)
    # Signed, it would still never run. Asked in a bounded child, as `inspect` asks.
    refused = review(data, name, price=False).error
    if refused is not None:
        raise ModuleError(f"{module}: wasmtime refuses it: {refused}")
    try:
        signed = sign_module(data, secret, with_key_id=not no_key_id)
    except UsageError as exc:
        raise ModuleError(f"{module}: {exc.message}") from None
    _write(output, signed.module)
    if as_json:
        click.echo(json.dumps({
            "module": str(output), "key_id": signed.key_id.hex() if signed.key_id else None,
            "message": signed.message.hex(), "signature": signed.signature.hex(),
            "hashes": [h.hex() for h in signed.hashes]}))
    else:
        key_id = signed.key_id.hex() if signed.key_id else "(none)"
        click.echo(f"signed {printable(str(output))} with key id {key_id}")


def _write(path: Path, data: bytes) -> None:
    from ..errors import UsageError
    from ..regularfile import replace_file

    try:
        replace_file(path, data, None)  # the user's file: its mode, or the umask's
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


@click.command("verify")
@click.option("--key", "keys", multiple=True, required=True,
              type=PathParam("any", "key file or directory"),
              help="A trusted public key file or directory (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.argument("module")
def verify(keys: tuple[Path, ...], as_json: bool, module: str) -> None:
    """Check that a trusted key signed MODULE whole.

    Exit 0 when one does; 126 otherwise, naming the key ids found and trusted.
    """
    from ..errors import UntrustedModule
    from ..trust import load_public_keys, verify_module
    from .inspect import read_module

    trusted = [k for path in keys for k in load_public_keys(path)]
    # Not text: vouching for the binary made from it vouched for bytes no run accepts
    # (found by review).
    data, name = read_module(module, text=False)
    verification = verify_module(data, trusted)
    if as_json:
        click.echo(json.dumps({"module": name, **verification.as_dict()}))
    if not verification.ok:
        raise UntrustedModule(f"{name}: {verification.describe()}")
    if not as_json:
        from ..display import printable

        click.echo(printable(f"{name}: {verification.describe()}"))
