"""`vouch`: an `oci://` module's image signatures, checked against a trust policy.

Under `require_signature`, the cosign keys among the policy's keys are asked whether they
signed the exact manifest digest the module was pulled as, or the digest of the index it
was reached through (cosign's `.sig` tag or a Sigstore bundle referrer,
`signatures.verify_image`: the rule `oci verify` applies). When one did, the module's
digest is added to `Trust.vouched`, and the sandbox's trust gate accepts those bytes,
hashed again as they are loaded. That digest is the module the manifest holds, as
`transfer.load_local` and `pull` derive it, never the store's word alone. Otherwise
nothing changes: an embedded module signature may still count, unless the policy says
`require_image_signature`.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import StockadeError
from ..policy.model import Trust
from ..trust.enforce import image_keys
from .registry import insecure_hosts
from .resolve import ResolvedModule
from .signatures import ImageVerification, verify_image

__all__ = ["vouch"]


def vouch(resolved: ResolvedModule, trust: Trust, insecure: tuple[str, ...] = (),
          ) -> tuple[Trust, str | None]:
    """(`trust`, with the module vouched for when a trusted image key signed its image;
    a line saying what the image check found, or None when none was made). Registry
    errors become that line: the gate then decides without the image signature."""
    if not trust.require_signature:
        return trust, None
    keys = image_keys(trust.keys)
    if not keys:
        return trust, None
    pulled = resolved.pulled
    try:
        verification: ImageVerification = verify_image(
            pulled.ref, keys, insecure_hosts(insecure), digest=pulled.digest,
            index=pulled.index_digest)
    except StockadeError as exc:
        return trust, f"image signatures of {resolved.pinned} unreadable: {exc.message}"
    if not verification.ok:
        return trust, verification.describe()
    module = pulled.module_digest.removeprefix("sha256:")
    return replace(trust, vouched=(*trust.vouched, module)), verification.describe()
