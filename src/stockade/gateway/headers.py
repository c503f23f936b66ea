"""Which request headers a function sees, and which response headers it may send.

Functions of many tenants share one origin (scheme, host and port), so what one function
is sent or may send is decided per function, by `HeaderRules`:

- In: credentials are withheld (`WITHHELD`, configurable per server, opened per function),
  `Cookie` only reaches a function that owns cookies (`cookies = "own"`), `Proxy` never
  does (it would become `HTTP_PROXY`, "httpoxy"), and a header whose name contains `_`
  is dropped, as nginx and Apache drop it: `X_Forwarded_For` and `X-Forwarded-For` would
  otherwise become the same CGI variable and a client could pose as a proxy. Hop-by-hop
  headers (`HOP_BY_HOP`, and those a request's `Connection` names: cgi.py) describe the
  client's connection to the gateway, not the request: never passed (RFC 9110 7.6.1).
- Out: an allow-list (`ALLOWED_RESPONSE`, plus `X-*` names other than those a proxy in
  front acts on). Headers that act on the whole origin (`Strict-Transport-Security`,
  `Alt-Svc`, `Clear-Site-Data`, `Service-Worker-Allowed`...), on the connection or its
  framing (`Connection`, `Transfer-Encoding`, `Content-Length`...) or that the gateway owns
  (`Server`, `Date`) never pass. `Set-Cookie` passes only for a function that owns
  cookies, only without `Domain` and only for a path inside the function's route (a
  cookie with no `Path` gets the route's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import Headers

__all__ = ["HeaderRules", "WITHHELD", "NEVER_PASSED", "HOP_BY_HOP", "COOKIE_MODES",
           "ALLOWED_RESPONSE", "DEFAULT_RULES"]

COOKIE_MODES = ("none", "own")
# Credentials by default: HTTP authentication, API keys and the tokens cloud load
# balancers and identity proxies add (AWS, Google, Azure, Cloudflare), secret stores.
WITHHELD = frozenset({
    "authorization", "proxy-authorization", "proxy", "cookie", "x-api-key", "api-key",
    "x-auth-token", "x-access-token", "x-amz-security-token", "x-goog-api-key",
    "x-goog-iap-jwt-assertion", "x-serverless-authorization", "x-amzn-oidc-accesstoken",
    "x-amzn-oidc-data", "x-ms-token-aad-access-token", "x-ms-token-aad-id-token",
    "x-ms-token-aad-refresh-token", "x-ms-client-principal", "x-functions-key",
    "ocp-apim-subscription-key", "cf-access-jwt-assertion", "cf-access-token",
    "x-vault-token", "private-token",
})
# RFC 9110 7.6.1 and 9112 6.1: about one connection, not the request (cgi.py also drops
# the headers a request's `Connection` names).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te",
                        "transfer-encoding", "upgrade"})
NEVER_PASSED = frozenset({"proxy"}) | HOP_BY_HOP
ALLOWED_RESPONSE = frozenset({
    b"content-type", b"content-language", b"content-encoding", b"content-disposition",
    b"content-range", b"cache-control", b"expires", b"etag", b"last-modified", b"vary",
    b"pragma", b"location", b"link", b"accept-ranges", b"allow", b"retry-after",
    b"access-control-allow-origin", b"access-control-allow-credentials",
    b"access-control-allow-headers", b"access-control-allow-methods",
    b"access-control-expose-headers", b"access-control-max-age",
    b"content-security-policy", b"content-security-policy-report-only",
    b"cross-origin-opener-policy", b"cross-origin-embedder-policy",
    b"cross-origin-resource-policy", b"permissions-policy", b"referrer-policy",
    b"reporting-endpoints", b"server-timing", b"timing-allow-origin", b"content-digest",
    b"repr-digest",
})
# X-* names a reverse proxy in front acts on (nginx serves the file X-Accel-Redirect
# names, Apache and lighttpd the one X-Sendfile names) or that claim to come from one.
_PROXY_X = (b"x-accel-", b"x-sendfile", b"x-lighttpd-", b"x-forwarded-", b"x-real-ip")


@dataclass(frozen=True)
class HeaderRules:
    """The header rules of one function routed at `route`: `cookies` is `none` or `own`,
    `withheld` the request header names (lower-case) it is never sent."""

    route: str = "/"
    cookies: str = "none"
    withheld: frozenset[str] = WITHHELD
    # Parsed CGI header blocks of this function (cgi.py), bounded there.
    parsed: dict[bytes, object] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, route: str, cookies: str = "none",
              withhold: frozenset[str] | tuple[str, ...] = WITHHELD,
              passed: tuple[str, ...] = ()) -> HeaderRules:
        """Rules for a function: the server's `withhold` list minus the function's
        `passed` names; `Cookie` follows `cookies`, `Proxy` and the hop-by-hop headers
        are always withheld."""
        names = {name.lower() for name in withhold} - {name.lower() for name in passed}
        names.discard("cookie")
        if cookies != "own":
            names.add("cookie")
        return cls(route, cookies, frozenset(names | NEVER_PASSED))

    def passes_request(self, name: bytes) -> bool:
        """True when request header `name` (lower-case) may reach the function."""
        return b"_" not in name and name.decode("latin-1") not in self.withheld

    def response(self, headers: Headers) -> Headers:
        """The response headers a function may send, in order; the others are dropped."""
        kept: Headers = []
        for name, value in headers:
            if name == b"set-cookie":
                cookie = self._cookie(value)
                if cookie is not None:
                    kept.append((name, cookie))
            elif name in ALLOWED_RESPONSE or (name.startswith(b"x-")
                                              and not name.startswith(_PROXY_X)):
                kept.append((name, value))
        return kept

    def _cookie(self, value: bytes) -> bytes | None:
        """`value` when the cookie stays on the function's path (with the route added as
        its path when it names none), None when it must not be set."""
        if self.cookies != "own":
            return None
        paths: list[bytes] = []
        for attribute in value.split(b";")[1:]:
            key, _, raw = attribute.partition(b"=")
            key = key.strip().lower()
            if key == b"domain":
                return None  # would reach other hosts of the domain
            if key == b"path":
                paths.append(raw.strip())
        if not paths:
            return value + b"; Path=" + self.route.encode()
        return value if all(self._in_route(path) for path in paths) else None

    def _in_route(self, path: bytes) -> bool:
        route = self.route.encode()
        if not path.startswith(b"/"):
            return False  # the browser would use a default path, maybe outside the route
        if any(segment in (b".", b"..") for segment in path.split(b"/")):
            return False  # `/fn/../x` starts with the route; no request path has one
        return route == b"/" or path == route or path.startswith(route + b"/")


DEFAULT_RULES = HeaderRules.build("/")
