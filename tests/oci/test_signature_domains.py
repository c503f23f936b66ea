"""Image signatures against a real docker-registry keep their domains apart: the signature
`oci sign` makes over an image manifest is never a cosign simple-signing signature (an OCI
manifest carrying a top-level `critical` that names an unsigned image stays unsigned), a
cosign signature over a payload is never a bundle over an image, and a payload names the
repository it signs in."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from stockade.oci.reference import parse_reference
from stockade.oci.signatures import verify_image
from stockade.trust.cosignkeys import load_cosign_key
from stockade.trust.imagesig import (
    BUNDLE_TYPE,
    PAYLOAD_TYPE,
    SIGNATURE_ANNOTATION,
    SIGNATURE_TYPE,
    bundle,
    payload,
)

from .fixtures import Registry, cli
from .test_signatures import PASSWORD, Api, env, key, pushed, sig_tag, verify  # noqa: F401

__all__ = ["env", "key"]

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def cosign_tag(api: Api, digest: str, data: bytes, signature: str) -> None:
    """Put cosign's signature manifest for image `digest`: one layer, payload `data`."""
    config = b"{}"
    api.put_manifest(sig_tag(digest), {
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "size": len(config), "digest": api.put_blob(config)},
        "layers": [{"mediaType": PAYLOAD_TYPE, "size": len(data), "digest": api.put_blob(data),
                    "annotations": {SIGNATURE_ANNOTATION: signature}}]})


def test_a_manifest_signature_is_never_a_cosign_signature(
        registry: Registry, tmp_path: Path, env: dict[str, str], key: Path) -> None:
    repo = f"domains-{os.urandom(4).hex()}"
    api, base = Api(registry, repo), f"{registry.host}/{repo}"
    evil = pushed(env, tmp_path, f"{base}:evil", "evil")  # never signed
    pushed(env, tmp_path, f"{base}:innocent", "innocent")
    # A valid manifest to the registry and to `run`, with a top-level `critical` as a
    # simple-signing payload has it, naming the unsigned image.
    image = json.loads(api.manifest("innocent"))
    image["critical"] = {"identity": {"docker-reference": base},
                         "image": {"docker-manifest-digest": evil}, "type": SIGNATURE_TYPE}
    body = json.dumps(image, separators=(",", ":")).encode()
    api.put_manifest("innocent", body)
    assert cli(env, "run", f"oci://{base}:innocent").returncode == 7  # it does run

    # The signer's `oci sign` will not sign it: cosign's own verifier accepts extra keys,
    # so this signature would be a payload's there.
    refused = cli(env, "oci", "sign", "--key", str(key), f"{base}:innocent")
    assert refused.returncode == 126, refused.stderr
    assert "critical" in refused.stderr and "Traceback" not in refused.stderr
    with pytest.raises(httpx.HTTPStatusError):
        api.manifest(sig_tag(sha(body)))  # nothing written

    # Signed anyway with the same key (the bundle an earlier `oci sign` wrote), its
    # signature copied into a cosign tag of the unsigned image with the manifest as payload.
    secret = load_cosign_key(key, PASSWORD.encode())
    signature = json.loads(bundle(secret, body, sha(body)))["messageSignature"]["signature"]
    cosign_tag(api, evil, body, signature)
    checked = verify(env, key, f"{base}:evil")
    assert checked.returncode == 126, checked.stdout
    assert "not a cosign simple-signing document" in checked.stderr
    assert "schemaVersion" in checked.stderr
    ran = cli(env, "run", "--trust-key", f"{key}.pub", "--require-signature",
              f"oci://{base}:evil")
    assert ran.returncode == 126, ran.stderr
    assert "denied" in ran.stderr

    # A legitimate signature of a plain image still verifies, both kinds.
    plain = f"{base}:plain"
    pushed(env, tmp_path, plain, "plain")
    assert cli(env, "oci", "sign", "--key", str(key), plain).returncode == 0
    good = verify(env, key, plain)
    assert good.returncode == 0, good.stderr
    assert {v["kind"] for v in json.loads(good.stdout)["verified_by"]} == {"cosign", "bundle"}


def test_a_cosign_signature_names_its_repository(
        registry: Registry, tmp_path: Path, env: dict[str, str], key: Path) -> None:
    suffix = os.urandom(4).hex()
    signed_api, copy_api = Api(registry, f"named-{suffix}"), Api(registry, f"copy-{suffix}")
    ref = f"{registry.host}/named-{suffix}:1"
    digest = pushed(env, tmp_path, ref, "named")
    done = cli(env, "oci", "sign", "--key", str(key), ref)
    assert done.returncode == 0, done.stderr
    # The same image (byte for byte) and its cosign tag, copied to another repository.
    image = signed_api.manifest(digest)
    document = json.loads(image)
    for blob in (document["config"], *document["layers"]):
        copy_api.put_blob(signed_api.blob(blob["digest"]))
    copy_api.put_manifest("1", image)
    sig = json.loads(signed_api.manifest(sig_tag(digest)))
    [layer] = sig["layers"]
    cosign_tag(copy_api, digest, signed_api.blob(layer["digest"]),
               layer["annotations"][SIGNATURE_ANNOTATION])
    refused = verify(env, key, f"{registry.host}/copy-{suffix}:1")
    assert refused.returncode == 126
    assert f"docker-reference {registry.host}/named-{suffix}" in refused.stderr
    assert verify(env, key, ref).returncode == 0


# -- a hostile registry serving a payload as an image -----------------------------------------


def _serve(routes: dict[str, tuple[str, bytes]]) -> Iterator[str]:
    class Routes(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            kind, body = routes.get(self.path.split("?")[0], ("", b""))
            self.send_response(200 if kind else 404)
            self.send_header("Content-Length", str(len(body)))
            if kind:
                self.send_header("Content-Type", kind)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Routes)
    http.daemon_threads = True
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{http.server_address[1]}"
    finally:
        http.shutdown()
        http.server_close()


@pytest.fixture
def routes() -> dict[str, tuple[str, bytes]]:
    return {"/v2/": ("application/json", b"{}")}


@pytest.fixture
def hostile(routes: dict[str, tuple[str, bytes]]) -> Iterator[str]:
    yield from _serve(routes)


def test_a_payload_signature_is_never_a_bundle_over_an_image(
        hostile: str, routes: dict[str, tuple[str, bytes]], tmp_path: Path,
        env: dict[str, str], key: Path) -> None:
    secret = load_cosign_key(key, PASSWORD.encode())
    # A payload the signer signed, as `oci sign` writes it, served as if it were an image.
    data = payload(f"{hostile}/app", "sha256:" + "ab" * 32)
    signature = base64.b64encode(secret.sign(data)).decode()
    forged = json.dumps({
        "mediaType": BUNDLE_TYPE,
        "verificationMaterial": {"publicKey": {"hint": secret.public.hint}},
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256",
                              "digest": base64.b64encode(hashlib.sha256(data).digest()).decode()},
            "signature": signature}}).encode()
    artifact = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": BUNDLE_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                   "digest": sha(b"{}")},
        "layers": [{"mediaType": BUNDLE_TYPE, "size": len(forged), "digest": sha(forged)}],
        "subject": {"mediaType": MANIFEST, "size": len(data), "digest": sha(data)}}).encode()
    referrers = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": MANIFEST, "artifactType": BUNDLE_TYPE, "digest": sha(artifact),
         "size": len(artifact)}]}).encode()
    routes.update({
        f"/v2/app/manifests/{sha(data)}": (MANIFEST, data),
        f"/v2/app/referrers/{sha(data)}": (INDEX, referrers),
        f"/v2/app/manifests/{sha(artifact)}": (MANIFEST, artifact),
        f"/v2/app/blobs/{sha(forged)}": ("application/octet-stream", forged),
    })
    found = verify_image(parse_reference(f"{hostile}/app@{sha(data)}"), [secret.public],
                         frozenset({hostile}))
    assert not found.ok, found.describe()
    assert found.found == 1 and "simple-signing" in found.describe()
