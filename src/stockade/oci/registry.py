"""`RegistryClient`: the distribution API v2 over HTTPS (plain HTTP only for hosts named
insecure), with Bearer token and Basic auth. `httpx` is imported only here, lazily.

Every transport error becomes a `RegistryUnavailable` naming the host; a 404 for a
manifest is `ImageNotFound`; refused credentials are `RegistryAuthError`. A manifest,
referrers index or small blob must arrive whole within `DOCUMENT_DEADLINE` seconds: the
read timeout alone lets a registry trickle one byte per timeout for ever.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from .auth import Credentials, find_credentials, parse_challenge
from .errors import (
    BlobTooLarge,
    ImageNotFound,
    IntegrityError,
    RegistryAuthError,
    RegistryUnavailable,
)
from .media import INDEX_TYPES, MANIFEST_TYPES, sha256_digest
from .reference import Reference

if TYPE_CHECKING:
    import httpx

    from .store import Store

__all__ = ["RegistryClient", "insecure_hosts", "MAX_MANIFEST_BYTES", "DOCUMENT_DEADLINE"]

MAX_MANIFEST_BYTES = 4 * 1024**2
DOCUMENT_DEADLINE = 60.0  # seconds for one manifest or small blob, headers to last byte
_ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))


def insecure_hosts(extra: tuple[str, ...] = ()) -> frozenset[str]:
    """Hosts spoken to over plain HTTP: `STOCKADE_INSECURE_REGISTRIES` (comma-separated
    `host:port`) plus `extra` (the `--insecure` flags)."""
    listed = os.environ.get("STOCKADE_INSECURE_REGISTRIES", "")
    return frozenset(h.strip() for h in (*listed.split(","), *extra) if h.strip())


class RegistryClient:
    """A client for one registry host; `with` closes its connections."""

    def __init__(self, ref: Reference, insecure: frozenset[str] = frozenset(),
                 timeout: float = 30.0, deadline: float = DOCUMENT_DEADLINE) -> None:
        import httpx

        self.deadline = deadline
        self.host = ref.api_host
        self.scheme = "http" if ref.registry in insecure or self.host in insecure else "https"
        self._credentials: Credentials | None = find_credentials(ref.registry, ref.repository)
        self._tokens: dict[str, str] = {}
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0),
                                  follow_redirects=True, trust_env=False)

    def close(self) -> None:
        """Close the connections (twice is harmless)."""
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- manifests ------------------------------------------------------------------

    def get_manifest(self, repo: str, selector: str, what: str) -> tuple[bytes, str, str | None]:
        """(body, media type, Docker-Content-Digest) of a manifest or index. Raises
        ImageNotFound, BlobTooLarge over 4 MiB, RegistryUnavailable."""
        until = time.monotonic() + self.deadline
        with self._stream("GET", repo, f"/v2/{repo}/manifests/{selector}", ("pull",),
                          headers={"Accept": _ACCEPT}) as response:
            if response.status_code == 404:
                raise ImageNotFound(f"{what}: not found in registry {self.host}")
            self._check(response, what)
            body = b"".join(self._document(response, MAX_MANIFEST_BYTES, what, until))
            media_type = response.headers.get("content-type", "").split(";")[0].strip()
            return body, media_type, response.headers.get("docker-content-digest")

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> bool:
        """Upload a manifest under a tag or digest; True when the registry says (with
        `OCI-Subject`) that it indexed the manifest's `subject` as a referrer."""
        response = self._send("PUT", repo, f"/v2/{repo}/manifests/{reference}", ("pull", "push"),
                              headers={"Content-Type": media_type}, content=body)
        self._check(response, f"{self.host}/{repo}:{reference}")
        return "oci-subject" in response.headers

    def referrers(self, repo: str, digest: str) -> bytes | None:
        """The referrers index of `digest` (the OCI 1.1 API), or None when the registry
        has no referrers API (then the `sha256-HEX` tag is the fallback)."""
        until = time.monotonic() + self.deadline
        with self._stream("GET", repo, f"/v2/{repo}/referrers/{digest}", ("pull",),
                          headers={"Accept": INDEX_TYPES[0]}) as response:
            kind = response.headers.get("content-type", "").split(";")[0].strip()
            if response.status_code != 200 or kind != INDEX_TYPES[0]:
                return None
            return b"".join(self._document(response, MAX_MANIFEST_BYTES,
                                           f"referrers of {digest}", until))

    def get_blob(self, repo: str, digest: str, limit: int, what: str) -> bytes:
        """A small blob in memory, at most `limit` bytes and verified against `digest`.
        Raises ImageNotFound, BlobTooLarge, IntegrityError, RegistryUnavailable."""
        until = time.monotonic() + self.deadline
        with self._stream("GET", repo, f"/v2/{repo}/blobs/{digest}", ("pull",)) as response:
            if response.status_code == 404:
                raise ImageNotFound(f"{what} {digest}: blob not found in {self.host}/{repo}")
            self._check(response, f"{what} {digest}")
            data = b"".join(self._document(response, limit, what, until))
        if sha256_digest(data) != digest:
            raise IntegrityError(f"{what} {digest}: content has digest "
                                 f"{sha256_digest(data)}; refused")
        return data

    def tags(self, repo: str) -> list[str]:
        """The repository's tags (empty when it has none or the listing is refused)."""
        response = self._send("GET", repo, f"/v2/{repo}/tags/list?n=1000", ("pull",))
        if response.status_code != 200:
            return []
        try:
            tags = response.json().get("tags") or []
        except ValueError:
            return []
        return [t for t in tags if isinstance(t, str)]

    # -- blobs ----------------------------------------------------------------------

    def fetch_blob(self, repo: str, descriptor: dict[str, Any], store: Store, limit: int,
                   what: str) -> str:
        """Stream a blob into `store`, verified against the descriptor's digest and size.
        Raises BlobTooLarge (before downloading when the descriptor says so), IntegrityError,
        ImageNotFound, RegistryUnavailable."""
        digest, size = str(descriptor.get("digest")), descriptor.get("size")
        if isinstance(size, int) and size > limit:
            raise BlobTooLarge(f"{what} {digest}: {size} bytes, over the limit of {limit}")
        if store.has(digest):
            store.verified_path(digest)
            return digest
        with self._stream("GET", repo, f"/v2/{repo}/blobs/{digest}", ("pull",)) as response:
            if response.status_code == 404:
                raise ImageNotFound(f"{what} {digest}: blob not found in {self.host}/{repo}")
            self._check(response, f"{what} {digest}")
            return store.put_stream(response.iter_bytes(), digest,
                                    size if isinstance(size, int) else None, limit, what)

    def has_blob(self, repo: str, digest: str) -> bool:
        """Whether the registry already holds `digest` in `repo`."""
        response = self._send("HEAD", repo, f"/v2/{repo}/blobs/{digest}", ("pull", "push"))
        return response.status_code == 200

    def upload_blob(self, repo: str, digest: str, data: bytes) -> None:
        """Upload one blob (monolithic: POST a session, PUT the bytes with the digest)."""
        if self.has_blob(repo, digest):
            return
        response = self._send("POST", repo, f"/v2/{repo}/blobs/uploads/", ("pull", "push"))
        self._check(response, f"upload to {self.host}/{repo}")
        location = response.headers.get("location")
        if not location:
            raise RegistryUnavailable(f"{self.host}: upload session without a Location")
        separator = "&" if "?" in location else "?"
        url = f"{location}{separator}{urlencode({'digest': digest})}"
        response = self._send("PUT", repo, url, ("pull", "push"), content=data,
                              headers={"Content-Type": "application/octet-stream"})
        self._check(response, f"blob {digest}")

    # -- transport ------------------------------------------------------------------

    def _document(self, response: httpx.Response, limit: int, what: str,
                  until: float) -> Iterator[bytes]:
        """The body of a small document: at most `limit` bytes, all of it before the
        monotonic time `until`. Raises BlobTooLarge, RegistryUnavailable."""
        for chunk in _bounded(response.iter_bytes(), limit, what):
            if time.monotonic() > until:
                raise RegistryUnavailable(f"{what}: registry {self.host} did not send it "
                                          f"within {self.deadline:g} s; refused")
            yield chunk

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else \
            f"{self.scheme}://{self.host}{path}"

    def _send(self, method: str, repo: str, path: str, actions: tuple[str, ...],
              **kwargs: Any) -> httpx.Response:
        with self._stream(method, repo, path, actions, **kwargs) as response:
            response.read()
            return response

    def _stream(self, method: str, repo: str, path: str, actions: tuple[str, ...],
                **kwargs: Any) -> _Exchange:
        return _Exchange(self, method, repo, path, actions, kwargs)

    def _open(self, method: str, repo: str, path: str, actions: tuple[str, ...],
              kwargs: dict[str, Any]) -> httpx.Response:
        import httpx

        scope = f"repository:{repo}:{','.join(actions)}"
        for attempt in range(2):
            headers = dict(kwargs.get("headers") or {})
            if scope in self._tokens:
                headers["Authorization"] = self._tokens[scope]
            request = self._http.build_request(method, self._url(path), headers=headers,
                                               content=kwargs.get("content"))
            try:
                response = self._http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from None
            if response.status_code != 401 or attempt == 1:
                return response
            challenge = response.headers.get("www-authenticate", "")
            response.close()
            self._authenticate(challenge, scope)
        raise RegistryAuthError(f"{self.host}: authentication failed")  # pragma: no cover

    def _authenticate(self, challenge: str, scope: str) -> None:
        import httpx

        scheme, params = parse_challenge(challenge)
        creds = self._credentials
        if scheme == "basic":
            if creds is None:
                raise RegistryAuthError(f"{self.host}: the registry wants credentials and none "
                                        "are in the Docker/Podman credential files")
            pair = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            self._tokens[scope] = f"Basic {pair}"
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryAuthError(f"{self.host}: unsupported authentication {challenge!r}")
        query = {"scope": scope, **({"service": params["service"]} if "service" in params else {})}
        try:
            response = self._http.get(params["realm"], params=query,
                                      auth=httpx.BasicAuth(*creds) if creds else None)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code != 200:
            raise RegistryAuthError(f"{self.host}: token service refused us (HTTP "
                                    f"{response.status_code})")
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"{self.host}: token service answered without a token")
        self._tokens[scope] = f"Bearer {token}"

    def _unreachable(self, exc: Exception) -> RegistryUnavailable:
        hint = ""
        text = str(exc) or type(exc).__name__
        if self.scheme == "https" and ("SSL" in text or "ssl" in text):
            hint = (" (a plain-HTTP registry? name it with --insecure or "
                    "STOCKADE_INSECURE_REGISTRIES)")
        return RegistryUnavailable(f"cannot reach registry {self.host} over {self.scheme}: "
                                   f"{text}{hint}")

    def _check(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status < 300:
            return
        if status in (401, 403):
            raise RegistryAuthError(f"{what}: registry {self.host} refused access "
                                    f"(HTTP {status})")
        raise RegistryUnavailable(f"{what}: registry {self.host} answered HTTP {status}")


class _Exchange:
    """One request whose response is closed on leaving the `with`."""

    def __init__(self, client: RegistryClient, method: str, repo: str, path: str,
                 actions: tuple[str, ...], kwargs: dict[str, Any]) -> None:
        self._args = (method, repo, path, actions, kwargs)
        self._client = client
        self._response: httpx.Response | None = None

    def __enter__(self) -> httpx.Response:
        self._response = self._client._open(*self._args)
        return self._response

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        import httpx

        if self._response is not None:
            self._response.close()
        if isinstance(exc, httpx.HTTPError):
            raise self._client._unreachable(exc) from None


def _bounded(chunks: Iterator[bytes], limit: int, what: str) -> Iterator[bytes]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise BlobTooLarge(f"{what}: larger than {limit} bytes; refused")
        yield chunk
