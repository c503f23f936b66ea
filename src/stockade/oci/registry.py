"""`RegistryClient`: the distribution API v2 over HTTPS (plain HTTP only for hosts named
insecure), with Bearer token and Basic auth. `httpx` is imported only here (and in `wire`,
which this imports), lazily.

Every transport error becomes a `RegistryUnavailable` naming the host; a 404 for a
manifest is `ImageNotFound`; refused credentials are `RegistryAuthError`. A manifest,
referrers index, tags list, token or small blob must arrive whole within
`DOCUMENT_DEADLINE` seconds, and a layer within that plus its size at `MIN_BLOB_RATE`,
counted from the request, headers and redirects included (`wire` keeps the sockets to it):
the read timeout alone lets a registry trickle one byte per timeout for ever.

Answers are read as sent: the client asks for `Accept-Encoding: identity` and refuses any
answer with another `Content-Encoding` (a 298-byte answer encoded `gzip, gzip, gzip`
decoded to 4 GB, past every size cap, which only saw decoded bytes). Redirects are
followed here, their bodies never read, and `_body` is the one reader of every body.

Credentials go only where the registry itself asks for them: a 401 from a host the
registry redirected us to is refused (a CDN has no business asking for them), and a token
realm on plain HTTP never gets them from a client speaking HTTPS to the registry. A realm
that is not an absolute http(s) URL is a `RegistryAuthError`, never a traceback.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from .auth import Credentials, Found, find_credentials, parse_challenge
from .errors import (
    BlobTooLarge,
    ImageNotFound,
    IntegrityError,
    RegistryAuthError,
    RegistryUnavailable,
)
from .media import INDEX_TYPES, MANIFEST_TYPES, descriptor_size, sha256_digest, shown
from .reference import Reference, is_registry_host

if TYPE_CHECKING:
    import httpx

    from .store import Store
    from .wire import ExchangeClock

__all__ = ["RegistryClient", "Deadline", "insecure_hosts", "realm_may_get_credentials",
           "MAX_MANIFEST_BYTES", "MAX_TOKEN_BYTES", "DOCUMENT_DEADLINE", "MIN_BLOB_RATE"]

MAX_MANIFEST_BYTES = 4 * 1024**2
MAX_TOKEN_BYTES = 64 * 1024  # a token answer is a few KiB of JSON
DOCUMENT_DEADLINE = 60.0  # seconds for one manifest or small blob, request to last byte
MIN_BLOB_RATE = 256 * 1024  # bytes/s a layer must average (over DOCUMENT_DEADLINE's grace)
MAX_REDIRECTS = 10
_ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))


_WARNED: set[str] = set()


def insecure_hosts(extra: tuple[str, ...] = ()) -> frozenset[str]:
    """Hosts spoken to over plain HTTP: `STOCKADE_INSECURE_REGISTRIES` (comma-separated
    `host:port`) plus `extra` (the `--insecure` flags). A malformed flag is a UsageError;
    a malformed entry of the variable is ignored with a warning on stderr (once). Either
    matched no registry, so the registry was silently spoken to over HTTPS."""
    import sys

    from ..errors import UsageError

    for host in extra:
        if not is_registry_host(host.strip()):
            raise UsageError(f"--insecure {shown(host)}: expected HOST[:PORT] (e.g. "
                             "localhost:5000), without a scheme or a path")
    hosts = {h.strip() for h in extra}
    for host in os.environ.get("STOCKADE_INSECURE_REGISTRIES", "").split(","):
        if not host.strip():
            continue
        if is_registry_host(host.strip()):
            hosts.add(host.strip())
        elif host not in _WARNED:
            _WARNED.add(host)
            sys.stderr.write(f"stockade: warning: STOCKADE_INSECURE_REGISTRIES: ignoring "
                             f"{shown(host.strip())} (expected HOST[:PORT], e.g. "
                             "localhost:5000)\n")
    return frozenset(hosts)


def realm_may_get_credentials(registry_scheme: str, realm: str) -> bool:
    """Whether a token realm may receive the registry's credentials: HTTPS always, plain
    HTTP only when the registry itself is spoken to over plain HTTP (named insecure)."""
    try:
        scheme = urlsplit(realm).scheme.lower()
    except ValueError:  # an unparsable realm gets nothing
        return False
    return scheme == "https" or (scheme == "http" and registry_scheme == "http")


def _is_url(realm: str) -> bool:
    """Whether `realm` is an absolute http(s) URL with a host both urllib and httpx parse
    (each raises its own error, not an httpx.HTTPError, on a bad port or bracket)."""
    import httpx

    try:
        parts = urlsplit(realm)
        _ = parts.port  # parsed lazily: "a:notaport" and "a:99999" raise only here
        url = httpx.URL(realm)
    except (ValueError, httpx.InvalidURL):
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and \
        bool(url.host)


@dataclass(frozen=True)
class Deadline:
    """A monotonic time `until`, set `seconds` before it: a bound on several requests
    together (a whole pull), beside each request's own."""

    until: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """The deadline `seconds` from now."""
        return cls(time.monotonic() + seconds, seconds)


@dataclass(frozen=True)
class _Window:
    """A deadline an exchange runs under; `late` is its refusal when it bounds several
    exchanges (a pull, a signature check), else the registry did not send in time."""

    deadline: Deadline
    late: str | None = None

    def refusal(self, what: str, host: str) -> RegistryUnavailable:
        return RegistryUnavailable(f"{what}: " + (self.late or (
            f"registry {host} did not send it within {self.deadline.seconds:g} s; refused")))


class _Late(Exception):
    """A body chunk came after the exchange's deadline (`_during` names the refusal)."""


class _Encoded(Exception):
    """An answer with a Content-Encoding other than identity (`_during` names it)."""


class RegistryClient:
    """A client for one registry host; `with` closes its connections."""

    def __init__(self, ref: Reference, insecure: frozenset[str] = frozenset(),
                 timeout: float = 30.0, deadline: float | None = None) -> None:
        import httpx

        from .wire import ExchangeClock, transport

        self.deadline = DOCUMENT_DEADLINE if deadline is None else deadline
        self.host = ref.api_host
        self.scheme = "http" if ref.registry in insecure or self.host in insecure else "https"
        self._ref = ref
        self._tokens: dict[str, str] = {}
        self._clock: ExchangeClock = ExchangeClock()
        self._windows: list[_Window] = []  # the deadlines running, outermost first
        # Redirects are followed by `_follow`: httpx would read (and decode) their bodies.
        self._http = httpx.Client(transport=transport(self._clock),
                                  timeout=httpx.Timeout(timeout, connect=10.0),
                                  headers={"Accept-Encoding": "identity"},
                                  follow_redirects=False, trust_env=False)

    def close(self) -> None:
        """Close the connections (twice is harmless)."""
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def within(self, deadline: Deadline, late: str) -> Iterator[None]:
        """Every exchange inside the `with` also ends by `deadline`, refused then with
        `late` ("the signature check did not finish within 120 s; refused")."""
        self._windows.append(_Window(deadline, late))
        try:
            yield
        finally:
            self._windows.pop()

    # -- manifests ------------------------------------------------------------------

    def get_manifest(self, repo: str, selector: str, what: str) -> tuple[bytes, str, str | None]:
        """(body, media type, Docker-Content-Digest) of a manifest or index. Raises
        ImageNotFound, BlobTooLarge over 4 MiB, RegistryUnavailable."""
        with self._exchange(what, self.deadline, "GET", repo,
                            f"/v2/{repo}/manifests/{selector}", ("pull",),
                            headers={"Accept": _ACCEPT}) as response:
            if response.status_code == 404:
                raise ImageNotFound(f"{what}: not found in registry {self.host}")
            self._check(response, what)
            body = b"".join(self._body(response, MAX_MANIFEST_BYTES, what))
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
        what = f"referrers of {digest}"
        with self._exchange(what, self.deadline, "GET", repo, f"/v2/{repo}/referrers/{digest}",
                            ("pull",), headers={"Accept": INDEX_TYPES[0]}) as response:
            kind = response.headers.get("content-type", "").split(";")[0].strip()
            if response.status_code != 200 or kind != INDEX_TYPES[0]:
                return None
            return b"".join(self._body(response, MAX_MANIFEST_BYTES, what))

    def get_blob(self, repo: str, digest: str, limit: int, what: str) -> bytes:
        """A small blob in memory, at most `limit` bytes and verified against `digest`.
        Raises ImageNotFound, BlobTooLarge, IntegrityError, RegistryUnavailable."""
        with self._exchange(f"{what} {digest}", self.deadline, "GET", repo,
                            f"/v2/{repo}/blobs/{digest}", ("pull",)) as response:
            if response.status_code == 404:
                raise ImageNotFound(f"{what} {digest}: blob not found in {self.host}/{repo}")
            self._check(response, f"{what} {digest}")
            data = b"".join(self._body(response, limit, what))
        if sha256_digest(data) != digest:
            raise IntegrityError(f"{what} {digest}: content has digest "
                                 f"{sha256_digest(data)}; refused")
        return data

    def tags(self, repo: str) -> list[str]:
        """The repository's tags (empty when it has none). Raises RegistryAuthError when
        the listing is refused, RegistryUnavailable for another failure: no answer is not
        an empty list."""
        what = f"tags of {self.host}/{repo}"
        with self._exchange(what, self.deadline, "GET", repo, f"/v2/{repo}/tags/list?n=1000",
                            ("pull",)) as response:
            if response.status_code == 404:
                return []
            self._check(response, what)
            body = b"".join(self._body(response, MAX_MANIFEST_BYTES, what))
        document = _json_object(body)
        tags = document.get("tags") if document is not None else None
        return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []

    # -- blobs ----------------------------------------------------------------------

    def fetch_blob(self, repo: str, descriptor: dict[str, Any], store: Store, limit: int,
                   what: str, overall: Deadline | None = None) -> str:
        """Stream a blob into `store`, verified against the descriptor's digest and size.
        Raises BlobTooLarge (before downloading when the descriptor says so), IntegrityError,
        ImageNotFound, RegistryUnavailable (also when it arrives slower than
        `MIN_BLOB_RATE` on average, after a grace of the document deadline, or after
        `overall`, the deadline of the pull it is part of)."""
        # An absent or non-integer size is not trusted for anything.
        digest, size = str(descriptor.get("digest")), descriptor_size(descriptor)
        if size is not None and size > limit:
            raise BlobTooLarge(f"{what} {digest}: {size} bytes, over the limit of {limit}")
        if store.has(digest):
            store.verified_path(digest)
            return digest
        allowed = self.deadline + max(0, size if size is not None else limit) / MIN_BLOB_RATE
        pull = None if overall is None else _Window(
            overall, f"the pull did not finish within {overall.seconds:g} s; refused")
        name = f"{what} {digest}"
        with self._exchange(name, allowed, "GET", repo, f"/v2/{repo}/blobs/{digest}",
                            ("pull",), overall=pull) as response:
            if response.status_code == 404:
                raise ImageNotFound(f"{what} {digest}: blob not found in {self.host}/{repo}")
            self._check(response, name)
            # the store bounds it by `limit`, with its own message
            chunks = self._body(response, None, name)
            if size is not None:  # not `limit`: an endless body was read to 512 MiB
                chunks = _sized(chunks, size, name)
            return store.put_stream(chunks, digest, size, limit, what)

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
        # Relative to the request, as RFC 9110 reads a Location (`uploads/x` was glued to
        # the host: `localhost:5000` and `0/x` made port 50000).
        location = str(response.url.join(location))
        separator = "&" if "?" in location else "?"
        url = f"{location}{separator}{urlencode({'digest': digest})}"
        response = self._send("PUT", repo, url, ("pull", "push"), content=data,
                              headers={"Content-Type": "application/octet-stream"})
        self._check(response, f"blob {digest}")

    # -- transport ------------------------------------------------------------------

    def _body(self, response: httpx.Response, limit: int | None,
              what: str) -> Iterator[bytes]:
        """The one reader of response bodies: the bytes as sent (`_follow` refused any
        Content-Encoding, and nothing here decodes), at most `limit`, each chunk refused
        once the exchange's deadline has passed (`_during` says so). Raises BlobTooLarge."""
        total = 0
        for chunk in response.iter_raw():
            if time.monotonic() > self._clock.until:
                raise _Late
            total += len(chunk)
            if limit is not None and total > limit:
                raise BlobTooLarge(f"{what}: larger than {limit} bytes; refused")
            yield chunk

    @contextlib.contextmanager
    def _during(self, what: str, seconds: float,
                overall: _Window | None = None) -> Iterator[None]:
        """Run the `with` body (one exchange, or a token's inside one) within `seconds`,
        and within every deadline already running and `overall`: the sockets are kept to
        the earliest. Its httpx errors, a late body or an encoded answer become
        RegistryUnavailable naming `what` (the deadline's refusal once it has passed)."""
        import httpx

        running = [*self._windows, _Window(Deadline.after(seconds)),
                   *([overall] if overall is not None else [])]
        first = min(running, key=lambda window: window.deadline.until)
        saved, self._windows = self._windows, running
        self._clock.until = first.deadline.until
        try:
            if time.monotonic() > first.deadline.until:
                raise _Late
            yield
        except _Late:
            raise first.refusal(what, self.host) from None
        except _Encoded as exc:
            raise RegistryUnavailable(f"{what}: registry {self.host} sent it with "
                                      f"Content-Encoding {exc}; only identity is accepted "
                                      "(Stockade does not decode answers); refused") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL: not an HTTPError
            if time.monotonic() >= first.deadline.until:
                raise first.refusal(what, self.host) from None
            raise self._unreachable(exc) from None
        finally:
            self._windows = saved
            self._clock.until = min((window.deadline.until for window in saved),
                                    default=math.inf)

    @contextlib.contextmanager
    def _exchange(self, what: str, seconds: float, method: str, repo: str, path: str,
                  actions: tuple[str, ...], overall: _Window | None = None,
                  **kwargs: Any) -> Iterator[httpx.Response]:
        """One request (with its redirects and authentication) and its response, closed on
        leaving, all within `seconds` (and `overall`); see `_during`."""
        with self._during(what, seconds, overall):
            response = self._open(method, repo, path, actions, kwargs)
            try:
                yield response
            finally:
                response.close()

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else \
            f"{self.scheme}://{self.host}{path}"

    def _send(self, method: str, repo: str, path: str, actions: tuple[str, ...],
              **kwargs: Any) -> httpx.Response:
        """A request whose answer (only its status and headers are used) is read through,
        bounded like a document, so the connection can be reused. What it uploads goes at
        `MIN_BLOB_RATE` at least."""
        what = f"answer to {method} {self.host}"
        allowed = self.deadline + len(kwargs.get("content") or b"") / MIN_BLOB_RATE
        with self._exchange(what, allowed, method, repo, path, actions, **kwargs) as response:
            for _ in self._body(response, MAX_MANIFEST_BYTES, what):
                pass
            return response

    def _follow(self, request: httpx.Request) -> httpx.Response:
        """The answer to `request`, redirects followed without reading their bodies. Raises
        `_Encoded` for an answer (redirects too) with a Content-Encoding but identity."""
        for _ in range(MAX_REDIRECTS + 1):
            response = self._http.send(request, stream=True)
            encoding = response.headers.get("content-encoding", "")
            if any(part.strip().lower() not in ("", "identity") for part in encoding.split(",")):
                response.close()
                raise _Encoded(shown(encoding))
            if response.next_request is None:
                return response
            request = response.next_request
            response.close()
        raise RegistryUnavailable(f"{self.host}: more than {MAX_REDIRECTS} redirects; refused")

    def _open(self, method: str, repo: str, path: str, actions: tuple[str, ...],
              kwargs: dict[str, Any]) -> httpx.Response:
        import httpx

        scope = f"repository:{repo}:{','.join(actions)}"
        url = self._url(path)
        # An upload's Location may name another host: credentials go to the registry only
        # (`oci push` sent them, Basic ones too, to whatever host the session named).
        own = self._own(httpx.URL(url))
        for attempt in range(2):
            headers = dict(kwargs.get("headers") or {})
            if scope in self._tokens and own:
                headers["Authorization"] = self._tokens[scope]
            request = self._http.build_request(method, url, headers=headers,
                                               content=kwargs.get("content"))
            response = self._follow(request)
            if response.status_code != 401 or attempt == 1:
                return response
            challenge = response.headers.get("www-authenticate", "")
            response.close()
            self._refuse_foreign_challenge(response.url)
            self._authenticate(challenge, scope)
        raise RegistryAuthError(f"{self.host}: authentication failed")  # pragma: no cover

    def _refuse_foreign_challenge(self, url: httpx.URL) -> None:
        """A 401 from anywhere but the registry (a redirect target) is answered with
        nothing: its realm would get the registry's credentials. Raises RegistryAuthError."""
        if not self._own(url):
            other = url.netloc.decode("ascii", "replace")
            raise RegistryAuthError(f"{self.host}: {other} (where the registry redirected "
                                    "us) asks for authentication; registry credentials go "
                                    f"only to {self.host}; refused")

    def _own(self, url: httpx.URL) -> bool:
        """Whether `url` is the registry's own (scheme, host and port)."""
        import httpx

        own = httpx.URL(self._url("/v2/"))
        return (url.scheme, url.netloc) == (own.scheme, own.netloc)

    @functools.cached_property
    def _found(self) -> Found:
        """Read once a registry asks for credentials: not every pull reads the user's
        files."""
        return find_credentials(self._ref.registry, self._ref.repository)

    def _authenticate(self, challenge: str, scope: str) -> None:
        scheme, params = parse_challenge(challenge)
        creds = self._found.credentials
        if scheme == "basic":
            if creds is None:
                passed = "; ".join(self._found.passed_over)
                raise RegistryAuthError(f"{self.host}: the registry wants credentials and none "
                                        "are in the Docker/Podman credential files"
                                        + (f" (passed over: {passed})" if passed else ""))
            pair = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            self._tokens[scope] = f"Basic {pair}"
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryAuthError(f"{self.host}: unsupported authentication "
                                    f"{shown(challenge)}")
        realm = params["realm"]
        if not _is_url(realm):
            raise RegistryAuthError(f"{self.host}: token realm {shown(realm)} is not a URL; "
                                    "refused")
        if creds is not None and not realm_may_get_credentials(self.scheme, realm):
            raise RegistryAuthError(f"{self.host}: token realm {shown(realm)} is not HTTPS; "
                                    "registry credentials are not sent there; refused")
        query = {"scope": scope, **({"service": params["service"]} if "service" in params else {})}
        document = _json_object(self._token_answer(realm, query, creds))
        token = (document.get("token") or document.get("access_token")) if document else None
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"{self.host}: token service answered without a token")
        if not (token.isascii() and token.isprintable()):  # it goes in a header as it is
            raise RegistryAuthError(f"{self.host}: token service answered an unusable token "
                                    "(not printable ASCII); refused")
        self._tokens[scope] = f"Bearer {token}"

    def _token_answer(self, realm: str, query: dict[str, str],
                      creds: Credentials | None) -> bytes:
        """The token service's answer: at most `MAX_TOKEN_BYTES`, within the document
        deadline (and the exchange's). Raises RegistryAuthError, RegistryUnavailable."""
        what = f"{self.host}: token service"
        headers = {}
        if creds:  # as httpx.BasicAuth; a redirect elsewhere drops it, as httpx does
            pair = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {pair}"
        try:
            with self._during(what, self.deadline):
                response = self._follow(self._http.build_request("GET", realm, params=query,
                                                                 headers=headers))
                try:
                    if response.status_code != 200:
                        raise RegistryAuthError(f"{what} refused us (HTTP "
                                                f"{response.status_code})")
                    return b"".join(self._body(response, MAX_TOKEN_BYTES, what))
                finally:
                    response.close()
        except BlobTooLarge:
            raise RegistryAuthError(f"{what} answered more than {MAX_TOKEN_BYTES} bytes; "
                                    "refused") from None

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


def _sized(chunks: Iterator[bytes], size: int, what: str) -> Iterator[bytes]:
    """`chunks`, stopped by IntegrityError as soon as they hold more than the `size`
    bytes the descriptor says (the rest is never read)."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > size:
            raise IntegrityError(f"{what}: the registry sent more than the {size} bytes "
                                 "its descriptor says; refused")
        yield chunk


def _json_object(body: bytes) -> dict[str, Any] | None:
    """`body` as a JSON object, or None (not JSON, not an object, nested too deep)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None

