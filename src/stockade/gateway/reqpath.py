"""Request paths the router refuses: those a proxy in front may read as another
function's (`ambiguous_path`, `encoded_route`), so a proxy's rule for one function cannot
be passed to reach another. The manifest refuses routes no request could reach by the
same reading (`has_dot_segment`)."""

from __future__ import annotations

import functools
from urllib.parse import quote

__all__ = ["ambiguous_path", "encoded_route", "has_dot_segment"]


def ambiguous_path(path: str, raw: bytes) -> str | None:
    """Why the request path `path` (percent-decoded; `raw` as sent) may name another
    function to a proxy in front than to this router, or None. A dot segment
    (`/admin/../echo`, also `..;x` and with backslashes, as some proxies read them)
    routes here by its first segment where a proxy that normalises sees `/echo`; an
    encoded slash (`/admin%2Fx`) is one segment to such a proxy and two here. Either can
    pass a proxy's rule for one function and reach another, so both are refused (as
    Apache does encoded slashes by default)."""
    if has_dot_segment(path):
        return "the request path has a dot segment (/./ or /../): send it normalised"
    if b"%" in raw and b"%2f" in raw.lower():
        return "the request path has an encoded slash (%2F)"
    if "//" in path:  # `/p//q` routes to `/p` here, to `/p/q` past a proxy merging slashes
        return "the request path has an empty segment (//): send it normalised"
    return None


def has_dot_segment(path: str) -> bool:
    """Whether `path` has a `.` or `..` segment as some proxy reads one: also `..;x`
    (a parameter after it) and between backslashes. A manifest route with one is refused
    at load, since every request for it would be."""
    return ("/." in path or "\\" in path) and any(
        part.split(";", 1)[0] in (".", "..") for part in path.replace("\\", "/").split("/"))


def encoded_route(route: str, raw: bytes) -> str | None:
    """Why a request routed to the function at prefix `route` may reach it past a proxy's
    rule for that prefix, or None: the prefix not sent in its one canonical form, the
    route with only what must be percent-encoded encoded (`/%65cho` for `/echo`,
    `/%63af%C3%A9` for `/café`, `/a|b` for `/a%7Cb`), which routes here decoded while a
    proxy matching the path as sent sees another path (found by review). Hex digits'
    case is free."""
    if not raw:
        return None
    canonical = _canonical(route)
    if raw[:len(canonical)].lower() == canonical:
        return None
    return ("the request path does not send its route as is (percent-encoded "
            "only where a path must be)")


@functools.lru_cache(maxsize=1024)  # routes come from the manifest
def _canonical(route: str) -> bytes:
    """`route` as a client sends it, lower-case: UTF-8, and percent-encoded only where a
    path must be (RFC 3986: unreserved characters, sub-delimiters, `:`, `@`, `/` as they
    are)."""
    return quote(route, safe="/!$&'()*+,;=:@~").lower().encode()
