"""`stockade oci`: build, push, pull, inspect and list Wasm images (both layouts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .paths import PathParam

__all__ = ["oci", "cosign_password"]

_INSECURE = click.option("--insecure", "insecure", multiple=True, metavar="HOST[:PORT]",
                         help="Speak plain HTTP to this registry (also "
                              "STOCKADE_INSECURE_REGISTRIES). Repeatable.")


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, sort_keys=True))


@click.group()
def oci() -> None:
    """Wasm modules as OCI images: the CNCF Wasm artifact or a Docker+Wasm wasi/wasm image.

    \b
    Examples:
      stockade oci build app.wasm --tag registry.example/app:1
      stockade oci build app.wasm --tag localhost:5000/app:1 --format image
      stockade oci push localhost:5000/app:1 --insecure localhost:5000
      stockade run oci://registry.example/app:1 -- args

    Exit codes: 65 content does not match its digest; 69 registry unreachable; 74 local
    store corrupt; 75 over a size limit; 77 registry refused credentials; 125 usage;
    126 not a wasi/wasm image; 127 no such image.
    """


@oci.command()
@click.argument("module", type=PathParam("module"))
@click.option("--tag", "tag", required=True, metavar="REF", help="Reference to store it as.")
@click.option("--format", "fmt", type=click.Choice(["artifact", "image"]), default="artifact",
              show_default=True, help="CNCF Wasm artifact, or a Docker+Wasm wasi/wasm image.")
@click.option("--arg", "args", multiple=True, help="Image Cmd argument (image format).")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE",
              help="Image Env entry (image format).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def build(module: Path, tag: str, fmt: str, args: tuple[str, ...], env: tuple[str, ...],
          as_json: bool) -> None:
    """Build MODULE (.wasm or .wat) into the local store, reproducibly."""
    from ..oci import Store, build_image, parse_reference
    from .options import parse_env

    parse_env(env)  # as `stockade run --env` does; the image's Env took anything
    ref = parse_reference(tag)
    built = build_image(module, fmt, Store.default(), str(ref), args, env)
    if as_json:
        _echo_json({"ref": str(ref), "digest": built.descriptor["digest"],
                    "module_digest": built.module_digest, "format": fmt})
    else:
        click.echo(f"{built.descriptor['digest']} {ref}")


@oci.command()
@click.argument("ref")
@_INSECURE
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def push(ref: str, insecure: tuple[str, ...], as_json: bool) -> None:
    """Push REF from the local store to its registry."""
    from ..oci import Store, parse_reference
    from ..oci import push as push_image
    from ..oci.registry import insecure_hosts

    parsed = parse_reference(ref)
    digest = push_image(parsed, Store.default(), insecure_hosts(insecure))
    if as_json:
        _echo_json({"ref": str(parsed), "digest": digest})
    else:
        click.echo(f"{digest} {parsed}")


@oci.command()
@click.argument("ref")
@_INSECURE
@click.option("--max-layer-size", metavar="SIZE", help="Refuse larger layers (default 512MiB).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def pull(ref: str, insecure: tuple[str, ...], max_layer_size: str | None, as_json: bool) -> None:
    """Pull REF into the local store, verifying every digest."""
    from ..oci import Store, parse_reference
    from ..oci import pull as pull_image
    from ..oci.registry import insecure_hosts
    from ..oci.transfer import MAX_LAYER_BYTES

    limit = MAX_LAYER_BYTES if max_layer_size is None else _size(max_layer_size)
    pulled = pull_image(parse_reference(ref), Store.default(), insecure_hosts(insecure), limit)
    if as_json:
        _echo_json({"ref": str(pulled.ref), "digest": pulled.digest,
                    "module_digest": pulled.module_digest, "layout": pulled.image.layout,
                    "platform": pulled.image.platform})
    else:
        click.echo(f"{pulled.digest} {pulled.ref} ({pulled.image.layout}, "
                   f"{pulled.image.platform})")


def _size(text: str) -> int:
    from ..errors import UsageError
    from ..policy.units import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise UsageError(f"--max-layer-size {text!r}: {exc}") from None


@oci.command()
@click.argument("ref")
@_INSECURE
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def inspect(ref: str, insecure: tuple[str, ...], as_json: bool) -> None:
    """Show REF's manifest, config, layers, platform and signature tags (pulled if absent)."""
    from ..oci.inspect import inspect_image

    report = inspect_image(ref, insecure)
    if as_json:
        _echo_json(report)
        return
    rows = _inspect_rows(report)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")


def _shown(value: Any) -> str:
    """A value from the manifest, config or registry for a terminal: `?` when absent,
    control characters escaped (a media type or Entrypoint could set the window title or
    clear the screen)."""
    from ..display import printable

    return "?" if value is None else printable(str(value))


def _described(descriptor: Any, *keys: str) -> str:
    """The `keys` of a descriptor, `?` for each one missing (a stored image or a config
    descriptor need not have them all)."""
    found = descriptor if isinstance(descriptor, dict) else {}
    return " ".join(_shown(found.get(key)) for key in keys)


def _inspect_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) lines of `oci inspect`'s text output, every value printable."""
    rows = [("reference", _shown(report.get("ref"))), ("digest", _shown(report.get("digest"))),
            ("layout", _shown(report.get("layout"))),
            ("platform", _shown(report.get("platform"))),
            ("config", _described(report.get("config"), "mediaType", "digest"))]
    rows += [(f"layer {n}", _described(layer, "mediaType", "digest", "size") + " B")
             for n, layer in enumerate(report.get("layers") or [])]
    rows.append(("module", _shown(report.get("module_digest"))))
    process = [*(report.get("entrypoint") or []), *(report.get("cmd") or [])]
    if process:
        rows.append(("process", " ".join(_shown(arg) for arg in process)))
    if report.get("signatures") is None:  # never "none found": the check did not run
        reason = report.get("signatures_unknown") or "the registry was not asked"
        rows.append(("signatures", f"unknown ({_shown(reason)})"))
    else:
        signatures = [_shown(tag) for tag in report["signatures"]]
        rows.append(("signatures", ", ".join(signatures) or "none found"))
    return rows


@oci.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def ls(as_json: bool) -> None:
    """List the images of the local store."""
    from ..oci import Store
    from ..oci.store import REF_ANNOTATION
    from ..oci.transfer import LAYOUT_ANNOTATION

    rows = []
    for entry in Store.default().entries():
        annotations = entry.get("annotations") or {}
        rows.append({"ref": annotations.get(REF_ANNOTATION, ""), "digest": entry.get("digest"),
                     "layout": annotations.get(LAYOUT_ANNOTATION, "?"),
                     "size": entry.get("size")})
    rows.sort(key=lambda row: str(row["ref"]))
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        click.echo(f"{_shown(row['ref'])}  {_shown(row['digest'])[:19]}  {_shown(row['layout'])}")


def cosign_password(confirm: bool = False) -> bytes:
    """cosign's password: `COSIGN_PASSWORD` when set (even empty), else a prompt."""
    import os
    import sys

    from ..errors import UsageError

    if "COSIGN_PASSWORD" in os.environ:
        return os.environ["COSIGN_PASSWORD"].encode()
    if sys.stdin is None or not sys.stdin.isatty():  # None: started with fd 0 closed
        raise UsageError("the cosign key's password: set COSIGN_PASSWORD (no terminal to "
                         "prompt on)")
    return str(click.prompt("Enter password for private key", hide_input=True,
                            confirmation_prompt=confirm, default="",
                            show_default=False)).encode()


@oci.command()
@click.argument("ref")
@click.option("--key", "key", required=True, type=PathParam("file", "cosign key file"),
              metavar="COSIGN_KEY", help="cosign's encrypted key file (password from "
                                         "COSIGN_PASSWORD or a prompt).")
@_INSECURE
@click.option("--no-bundle", is_flag=True,
              help="Write only cosign's .sig tag, not the Sigstore bundle referrer.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def sign(ref: str, key: Path, insecure: tuple[str, ...], no_bundle: bool, as_json: bool) -> None:
    """Sign image REF in its registry as cosign does (tag sha256-HEX.sig), plus a Sigstore
    bundle v0.3 attached as a referrer (tag sha256-HEX where the registry has no
    referrers API). The image must be pushed first."""
    from ..oci import parse_reference
    from ..oci.registry import insecure_hosts
    from ..oci.signatures import sign_image
    from ..trust.cosignkeys import load_cosign_key

    secret = load_cosign_key(key, cosign_password)  # asked once the file is a cosign key
    signed = sign_image(parse_reference(ref), secret, insecure_hosts(insecure),
                        with_bundle=not no_bundle)
    if as_json:
        _echo_json({"ref": str(signed.ref), "digest": signed.digest,
                    "signature_tag": signed.signature_tag, "signature": signed.signature,
                    "payload": signed.payload.decode(), "key_id": secret.public.key_id,
                    "bundle": signed.bundle_digest or None,
                    "referrers_api": signed.referrers_api})
    else:
        click.echo(f"signed {signed.ref.registry}/{signed.ref.repository}@{signed.digest} "
                   f"with key {secret.public.key_id} ({signed.signature_tag}"
                   f"{', bundle ' + signed.bundle_digest[:19] if signed.bundle_digest else ''})")


@oci.command()
@click.argument("ref")
@click.option("--key", "keys", required=True, multiple=True,
              type=PathParam("any", "key file or directory"),
              metavar="PUB", help="A trusted cosign public key (file or directory; "
                                  "repeatable).")
@_INSECURE
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def verify(ref: str, keys: tuple[Path, ...], insecure: tuple[str, ...], as_json: bool) -> None:
    """Check that a trusted key signed the image REF resolves to (cosign's .sig tag or a
    Sigstore bundle referrer, over that digest; for an image behind an index, over the
    index or the wasi/wasm manifest it lists, as `run` accepts). Exit 0 when one did, 126
    when none did."""
    from ..errors import UntrustedModule
    from ..oci import parse_reference
    from ..oci.registry import insecure_hosts
    from ..oci.signatures import verify_image
    from ..trust.cosignkeys import load_image_keys

    trusted = [k for path in keys for k in load_image_keys(path)]
    verification = verify_image(parse_reference(ref), trusted, insecure_hosts(insecure))
    if as_json:
        _echo_json(verification.as_dict())
    if not verification.ok:
        raise UntrustedModule(f"{ref}: {verification.describe()}")
    if not as_json:
        click.echo(f"{ref}: {verification.describe()}")
