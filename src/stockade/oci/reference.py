"""`Reference`: `[REGISTRY/]REPOSITORY[:TAG][@sha256:HEX]`, parsed as Docker and Podman do."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import BadReference

__all__ = ["Reference", "parse_reference", "is_registry_host", "is_digest", "DEFAULT_REGISTRY"]

DEFAULT_REGISTRY = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]{1,5})?\Z|^\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?\Z")


def is_registry_host(text: str) -> bool:
    """Whether `text` is `HOST[:PORT]` (a name, an IPv4 or a bracketed IPv6 address; the
    port 1-65535), with no scheme or path."""
    if not _HOST.match(text):
        return False
    _, colon, port = text.rpartition("]")[2].rpartition(":")
    # The pattern allows any 5 digits: 65536 and 0 were taken, then unreachable (69).
    return not colon or 0 < int(port) <= 65535


def is_digest(value: object) -> bool:
    """Whether `value` is a `sha256:HEX` digest string (64 lowercase hex digits)."""
    return isinstance(value, str) and _DIGEST.match(value) is not None


@dataclass(frozen=True)
class Reference:
    """A parsed image reference. `tag` is None when only a digest was given; `digest` is
    the `sha256:HEX` pin, or None."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def api_host(self) -> str:
        """The host the distribution API answers on (`docker.io` is served elsewhere)."""
        return "registry-1.docker.io" if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def selector(self) -> str:
        """What to ask `/v2/<repo>/manifests/` for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> Reference:
        """The same reference pinned to `digest`."""
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> Reference:
    """Parse a reference (an `oci://` prefix is allowed). A first component with a dot, a
    colon or `localhost` is the registry; otherwise the registry is docker.io. Without tag
    or digest the tag is `latest`. Raises BadReference."""
    raw = text[len("oci://"):] if text.startswith("oci://") else text
    if not raw or len(raw) > 512 or any(ch.isspace() for ch in raw):
        raise BadReference(f"{text!r}: not an image reference")
    name, _, digest = raw.partition("@")
    if digest and not _DIGEST.match(digest):
        raise BadReference(f"{text!r}: the digest must be sha256: and 64 hex digits")
    first, slash, rest = name.partition("/")
    if slash and (("." in first or ":" in first) or first == "localhost"):
        registry, path = first, rest
        if not is_registry_host(registry):
            raise BadReference(f"{text!r}: {registry!r} is not a registry host")
    else:
        registry, path = DEFAULT_REGISTRY, name
    tag: str | None = None
    colon = path.rfind(":")
    if colon > path.rfind("/"):
        path, tag = path[:colon], path[colon + 1:]
        if not _TAG.match(tag):
            raise BadReference(f"{text!r}: {tag!r} is not a valid tag")
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if not _REPO.match(path):
        raise BadReference(f"{text!r}: {path!r} is not a repository name (lower case, digits, "
                           "., _, -, /)")
    if tag is None and not digest:
        tag = "latest"
    return Reference(registry, path, tag, digest or None)
