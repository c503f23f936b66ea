"""The gateway manifest, `stockade.toml`: functions, tenants and server settings.

    [server]                      # all optional
    workers = 2
    [state]                       # optional: quotas and breakers shared by replicas
    backend = "redis://redis:6379/0"   # default "local"; see stockade.state.settings
    on_unavailable = "fail_closed"     # or "fail_open"
    [tenant.acme]                 # quotas shared by the tenant's functions
    cordon = "finance"            # tenants of one cordon may share processes (see below)
    concurrency = 8
    rate = 100                    # requests per second (burst: `burst`, default 1 s worth)
    cpu_per_minute = "10s"        # guest CPU time per minute
    [[function]]
    name = "hello"
    route = "/hello"              # path prefix; `methods` default to any (not [])
    module = "hello.wasm"         # relative to this file
    tenant = "acme"
    profile = "strict"            # plus [function.limits], env, env_allow, dirs,
    max_concurrency = 4           # rate, burst, max_body, max_response,
                                  # allow_precompiled (a .cwasm this host compiled)
    cookies = "own"               # receives Cookie, sets cookies on its route (default "none")
    pass_headers = ["x-api-key"]  # withheld headers this function is sent (default none)
    isolate = "process"           # or "none"; default: "process" for the strict profile
    argv = ["python", "/app/handler.py"]  # the guest's command line, argv[0] first (WAGI)

Where a function runs: in the gateway worker process only when `isolate = "none"` and
its tenant is in no cordon (the `default` cordon); otherwise in the warm pool of
confined worker processes of its tenant's cordon. Tenants in different cordons never
share a process.

`load_manifest` resolves it into frozen dataclasses; every error names the file and the
key, e.g. ``stockade.toml: function[0] (hello).limits.timeout: not a duration: 'soon'``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import PolicyError, StockadeError
from ..isolate.factory import ISOLATION_MODES, default_isolation
from ..policy import Capabilities, Policy, Trust, apply_limit, format_size, parse_duration
from ..policy.loader import (
    dir_grants,
    env_names,
    env_pairs,
    named_profile,
    read_toml,
    trust_from_mapping,
)
from ..policy.tomlfile import refuse_shared
from ..policy.units import shown
from ..state.settings import StateSettings, parse_state
from .argv import parse_argv
from .headers import COOKIE_MODES, NEVER_PASSED, HeaderRules
from .images import Images, named, with_vouched
from .reqpath import has_dot_segment
from .settings import Quota, ServerSettings, header_names, parse_quota, parse_server, size_or_none

DEFAULT_CORDON = "default"  # tenants without `cordon`: the gateway worker processes

__all__ = ["FunctionSpec", "Manifest", "Quota", "ServerSettings", "load_manifest",
           "parse_manifest", "RESERVED_PATHS", "HEADER_ALLOWANCE", "DEFAULT_CORDON",
           "RELOADED_SERVER_KEYS", "restart_changes"]

RESERVED_PATHS = ("/healthz", "/readyz", "/metrics")
HEADER_ALLOWANCE = 64 * 1024  # bytes of CGI headers allowed on top of `max_response`
DEFAULT_TENANT = "default"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_FUNCTION_KEYS = {"name", "route", "methods", "module", "profile", "limits", "env", "env_allow",
                  "dirs", "tenant", "max_concurrency", "rate", "burst", "max_body",
                  "max_response", "cookies", "pass_headers", "allow_precompiled", "isolate",
                  "argv"}
# manifest key -> Quota field
_FUNCTION_QUOTA = {"max_concurrency": "concurrency", "rate": "rate", "burst": "burst"}
_TENANT_QUOTA = {"concurrency": "concurrency", "rate": "rate", "burst": "burst",
                 "cpu_per_minute": "cpu_per_minute"}


@dataclass(frozen=True)
class FunctionSpec:
    """One function: its route (`route` is a path prefix, `methods` empty for any), the
    module and policy it runs with, its tenant, its own quota, and body size limits in
    bytes (`max_response` counts the body the function writes after its headers),
    `headers`, which request headers it is sent and which response headers it may set,
    `argv`, its command line (`argv.py`; empty: the module's name, no arguments), and
    `capture_stderr`, whether its stderr is kept for the server log."""

    name: str
    route: str
    methods: tuple[str, ...]
    module: Path
    policy: Policy
    tenant: str
    quota: Quota
    max_body: int
    max_response: int
    headers: HeaderRules = field(default_factory=HeaderRules)
    isolate: str = "none"
    cordon: str = DEFAULT_CORDON
    argv: tuple[str, ...] = ()
    capture_stderr: bool = True
    image: str | None = None  # `REF@sha256:…` for an `oci://` module (images.py)

    @property
    def pooled(self) -> bool:
        """True when the function runs in its cordon's worker pool, not in the gateway
        worker process (see the module docstring)."""
        return self.isolate != "none" or self.cordon != DEFAULT_CORDON

    @property
    def args(self) -> tuple[str, ...]:
        """The arguments after argv[0] that every run of the function gets."""
        return self.argv[1:]

    def allows(self, method: str) -> bool:
        """True when the function accepts `method`."""
        return not self.methods or method in self.methods


@dataclass(frozen=True)
class Manifest:
    """A loaded manifest: where it came from, server settings, functions and tenants,
    and where their quotas and breakers live (`state`)."""

    source: Path
    server: ServerSettings
    functions: tuple[FunctionSpec, ...]
    tenants: dict[str, Quota] = field(default_factory=dict)
    cordons: dict[str, str] = field(default_factory=dict)  # tenant -> cordon
    state: StateSettings = field(default_factory=StateSettings)


# [server] keys a reload applies: they are read into each function's spec (`_function`).
# The others are read once, when the server and its workers start.
RELOADED_SERVER_KEYS = frozenset({"max_body", "max_response", "request_timeout",
                                  "withhold_headers"})


def restart_changes(running: Manifest, loaded: Manifest) -> list[str]:
    """The keys `loaded` (a reloaded manifest) changes from `running` that wait for the
    next restart, as `server.KEY` and `state.KEY`: [state], and [server] but for
    `RELOADED_SERVER_KEYS` (and `stderr_limit` set to 0: nothing is captured from now)."""
    changed = [f"server.{f.name}" for f in fields(ServerSettings)
               if f.name not in RELOADED_SERVER_KEYS
               and getattr(running.server, f.name) != getattr(loaded.server, f.name)
               and not (f.name == "stderr_limit" and loaded.server.stderr_limit == 0)]
    return changed + [f"state.{f.name}" for f in fields(StateSettings)
                      if getattr(running.state, f.name) != getattr(loaded.state, f.name)]


def load_manifest(path: str | Path, refresh_images: bool = False,
                  snapshot: Path | None = None) -> Manifest:
    """Read and resolve a manifest file. Raises PolicyError naming the key. `oci://`
    modules run the digests of the manifest's lock file; `refresh_images` (a reload)
    resolves their tags again and rewrites the lock. `snapshot`: a copy of the file's
    bytes to read instead (the text a supervisor accepted), all else as at `path`. A
    manifest another user could rewrite is refused (`tomlfile.refuse_shared`): with a
    `snapshot`, the file at `path` is judged, when there is one, not the copy."""
    path = Path(path)
    if snapshot is None:
        data = read_toml(path, "manifest", " (create one with `stockade new`)")
    else:
        # The copy sits in a directory only the server's user enters, its mode the
        # umask's; the file it copies grants what it grants, and may be gone by now.
        refuse_shared(path, "manifest")
        try:
            data = read_toml(snapshot, "manifest", shared=True)
        except PolicyError as exc:  # named as the user's file, which it copies
            raise PolicyError(exc.message.replace(str(snapshot), str(path), 1)) from None
    return parse_manifest(data, path, refresh_images)


def parse_manifest(data: Mapping[str, Any], path: Path,
                   refresh_images: bool = False) -> Manifest:
    """Resolve parsed TOML; module paths and dirs are relative to `path`'s directory."""
    source = str(path)
    _known(data, {"server", "state", "tenant", "function", "trust"}, source, "")
    server = parse_server(_table(data.get("server", {}), source, "server"), source)
    state = parse_state(_table(data.get("state", {}), source, "state"), source)
    tenants = {DEFAULT_TENANT: Quota()}
    cordons = {DEFAULT_TENANT: DEFAULT_CORDON}
    base = path.parent.resolve()
    # [trust] for every function; a tenant's own `trust` table names its signers (and
    # requires signatures if either does: a tenant never lifts the manifest's requirement).
    trust = trust_from_mapping(data.get("trust", {}), f"{source}: trust", base)
    trusts = {DEFAULT_TENANT: trust}
    raw_tenants = _table(data.get("tenant", {}), source, "tenant")
    for name, table in raw_tenants.items():
        where = f"tenant.{name}"
        if not _NAME.match(name):
            raise PolicyError(f"{source}: {where}: invalid tenant name")
        table = dict(_table(table, source, where))
        _known(table, {*_TENANT_QUOTA, "cordon", "trust"}, source, f"{where}.")
        own = trust_from_mapping(table.pop("trust", {}), f"{source}: {where}.trust", base)
        trusts[name] = Trust(trust.require_signature or own.require_signature,
                             own.keys or trust.keys,
                             trust.require_image_signature or own.require_image_signature)
        tenants[name] = parse_quota(table, source, where, _TENANT_QUOTA)
        cordons[name] = _cordon(table.get("cordon", DEFAULT_CORDON), source, where)
    raw_functions = data.get("function", [])
    if not isinstance(raw_functions, list) or not raw_functions:
        raise PolicyError(f"{source}: function: add at least one [[function]] table")
    functions: list[FunctionSpec] = []
    images = Images(path, refresh_images)
    for index, table in enumerate(raw_functions):
        spec = _function(_table(table, source, f"function[{index}]"), index, source, base,
                         server, tenants, cordons, images, trusts)
        trust = with_vouched(images, spec.image, trusts[spec.tenant])
        functions.append(replace(spec, policy=replace(spec.policy, trust=trust)))
    _check_unique(functions, source)
    images.save()
    return Manifest(path.resolve(), server, tuple(functions), tenants, cordons, state)


def _module_file(module: str, base: Path, source: str, where: str,
                 images: Images, trust: Trust) -> tuple[Path, str | None]:
    """(module file, pinned image or None): a path relative to the manifest, or
    `oci://REF` resolved to its verified blob in the local store (images.py)."""
    if not module.startswith("oci://"):
        return base / module, None
    try:
        return images.module(module, trust)
    except StockadeError as exc:
        raise named(exc, f"{source}: {where}.module") from None


def _function(table: Mapping[str, Any], index: int, source: str, base: Path,
              server: ServerSettings, tenants: Mapping[str, Quota],
              cordons: Mapping[str, str], images: Images,
              trusts: Mapping[str, Trust]) -> FunctionSpec:
    name = table.get("name")
    where = f"function[{index}]"
    if not isinstance(name, str) or not _NAME.match(name):
        raise PolicyError(f"{source}: {where}.name: required, letters, digits, '.', '_', '-'")
    where = f"function[{index}] ({name})"
    _known(table, _FUNCTION_KEYS, source, f"{where}.")
    module = table.get("module")
    if not isinstance(module, str) or not module:
        raise PolicyError(f"{source}: {where}.module: required, a path to a .wasm/.cwasm file")
    if "\0" in module:  # else a ValueError traceback when serve starts
        raise PolicyError(f"{source}: {where}.module: the path contains a NUL character")
    tenant = table.get("tenant", DEFAULT_TENANT)
    if not isinstance(tenant, str):
        raise PolicyError(f"{source}: {where}.tenant: expected a tenant's name, not "
                          f"{shown(tenant)}")
    if tenant not in tenants:
        table_name = tenant if shown(tenant) == repr(tenant) else "NAME"  # a short one
        raise PolicyError(f"{source}: {where}.tenant: {shown(tenant)} has no "
                          f"[tenant.{table_name}] table")
    max_response = size_or_none(table.get("max_response"), source, f"{where}.max_response") \
        or server.max_response
    if max_response > server.response_buffer:  # one answer would reset the others
        raise PolicyError(f"{source}: {where}.max_response: {format_size(max_response)} is "
                          f"more than a worker holds of unsent answers "
                          f"({format_size(server.response_buffer)}: server.response_buffer)")
    policy = _policy(table, source, where, base, server.request_timeout)
    # The server's request timeout caps every function's. The output cap is the response
    # limit plus room for CGI headers (a flood stops there), or less if set explicitly.
    timeout = policy.limits.timeout
    if timeout is None or timeout > server.request_timeout:
        policy = policy.with_limits(timeout=server.request_timeout)
    explicit = table.get("limits", {}).get("max_output") is not None
    cap = max_response + HEADER_ALLOWANCE
    policy = policy.with_limits(max_output=min(policy.limits.max_output, cap) if explicit
                                else cap)
    route = _route(table.get("route"), source, where)
    max_body = size_or_none(table.get("max_body"), source, f"{where}.max_body") \
        or server.max_body
    room = min(server.body_buffer, server.body_buffer_per_client)
    if max_body > room:
        raise PolicyError(f"{source}: {where}.max_body: {format_size(max_body)} is more "
                          f"than a worker holds for one client ({format_size(room)}: "
                          "server.body_buffer and body_buffer_per_client)")
    module_file, image = _module_file(module, base, source, where, images, trusts[tenant])
    return FunctionSpec(
        name=name, route=route,
        methods=_methods(table.get("methods"), source, where),
        module=module_file, image=image, policy=policy, tenant=tenant,
        quota=parse_quota(table, source, where, _FUNCTION_QUOTA),
        max_body=max_body,
        max_response=max_response,
        headers=_header_rules(table, source, where, route, server),
        isolate=_isolation(table.get("isolate"), policy, source, where),
        cordon=cordons[tenant],
        argv=parse_argv(table.get("argv"), f"{source}: {where}.argv"),
        capture_stderr=server.stderr_limit > 0,
    )


def _header_rules(table: Mapping[str, Any], source: str, where: str, route: str,
                  server: ServerSettings) -> HeaderRules:
    cookies = table.get("cookies", "none")
    if cookies not in COOKIE_MODES:
        raise PolicyError(f"{source}: {where}.cookies: expected one of "
                          f"{', '.join(COOKIE_MODES)}, not {cookies!r}")
    try:
        passed = header_names(table.get("pass_headers", []))
    except ValueError as exc:
        raise PolicyError(f"{source}: {where}.pass_headers: {exc}") from None
    for name in passed:
        if name in NEVER_PASSED or name == "cookie":
            hint = "set cookies = \"own\"" if name == "cookie" else "it is never passed"
            raise PolicyError(f"{source}: {where}.pass_headers: {name!r}: {hint}")
    return HeaderRules.build(route, cookies, server.withhold_headers, passed)


def _isolation(value: Any, policy: Policy, source: str, where: str) -> str:
    """`isolate`, or the profile's default: `process` for `strict` (as `stockade run`)."""
    if value is None:
        return default_isolation(policy)
    if value not in ISOLATION_MODES:
        raise PolicyError(f"{source}: {where}.isolate: expected \"process\" or \"none\", "
                          f"not {value!r}")
    return str(value)


def _cordon(value: Any, source: str, where: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise PolicyError(f"{source}: {where}.cordon: a name of letters, digits, '.', '_', "
                          f"'-', not {value!r}")
    return value


def _policy(table: Mapping[str, Any], source: str, where: str, base: Path,
            request_timeout: float) -> Policy:
    policy = named_profile(table.get("profile", "strict"), f"{source}: {where}.profile")
    for key, value in _table(table.get("limits", {}), source, f"{where}.limits").items():
        if key == "timeout" and _longer(value, request_timeout):
            # Capped by request_timeout in any case (`_function`), so a timeout past the
            # policy's ceiling is capped too, not refused.
            value = request_timeout
        policy = apply_limit(policy, key, value, f"{source}: {where}.limits.{key}")
    # The policy loader's checks: a NUL or `=` in a variable, a NUL in a path made every
    # request fail (400 blaming the client, or 500) instead of the manifest.
    env = env_pairs(table.get("env", {}), f"{source}: {where}.env")
    allow = env_names(table.get("env_allow", []), f"{source}: {where}.env_allow")
    dirs = dir_grants(table.get("dirs", []), f"{source}: {where}.dirs", base)
    precompiled = table.get("allow_precompiled", False)
    if not isinstance(precompiled, bool):
        raise PolicyError(f"{source}: {where}.allow_precompiled: expected true or false")
    caps = Capabilities(dirs=dirs, env=env, env_allow=allow, allow_precompiled=precompiled)
    return Policy(limits=policy.limits, capabilities=caps, profile=policy.profile)


def _longer(value: Any, seconds: float) -> bool:
    """True when `value` is a duration longer than `seconds` (False for anything else,
    which the policy's parser then judges)."""
    try:
        return not isinstance(value, bool) and parse_duration(value) > seconds
    except (ValueError, TypeError):
        return False


def _route(value: Any, source: str, where: str) -> str:
    # No request line carries a control character or a blank: such a route was accepted
    # and could never be reached.
    if not isinstance(value, str) or not value.startswith("/") or any(c in value for c in "?#") \
            or not value.isprintable() or any(c.isspace() for c in value):
        raise PolicyError(f"{source}: {where}.route: required, a path prefix like '/hello' "
                          "(no blanks or control characters)")
    route = "/" + value.strip("/") if value != "/" else "/"
    # Every request at a path with one is refused (400: `reqpath.ambiguous_path`), so
    # such a route could never be called.
    if "//" in route or has_dot_segment(route):
        raise PolicyError(f"{source}: {where}.route: {route!r} has a dot segment (/./ or "
                          "/../) or an empty one (//): no request could reach it")
    for reserved in RESERVED_PATHS:
        if route == reserved or route.startswith(reserved + "/"):
            raise PolicyError(f"{source}: {where}.route: {reserved} is reserved by the gateway")
    return route


def _methods(value: Any, source: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()  # any method
    if value == []:  # emptied to lock the function down, it would accept any method
        raise PolicyError(f"{source}: {where}.methods: an empty list; name the methods "
                          "it accepts, or leave `methods` out for any")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise PolicyError(f"{source}: {where}.methods: expected a list like ['GET', 'POST']")
    methods = tuple(dict.fromkeys(str(m).upper() for m in value))
    for method in methods:
        if method not in _METHODS:
            raise PolicyError(f"{source}: {where}.methods: unknown method {method!r} "
                              f"(known: {', '.join(_METHODS)})")
    if "GET" in methods and "HEAD" not in methods:
        methods += ("HEAD",)
    return methods


def _check_unique(functions: list[FunctionSpec], source: str) -> None:
    names: set[str] = set()
    routes: dict[str, str] = {}
    for spec in functions:
        if spec.name in names:
            raise PolicyError(f"{source}: function {spec.name!r}: name used twice")
        names.add(spec.name)
        if spec.route in routes:
            raise PolicyError(f"{source}: function {spec.name!r}: route {spec.route} is "
                              f"already used by {routes[spec.route]!r}")
        routes[spec.route] = spec.name


def _table(value: Any, source: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PolicyError(f"{source}: {where}: expected a table")
    return value


def _known(table: Mapping[str, Any], known: set[str], source: str, prefix: str) -> None:
    for key in table:
        if key not in known:
            raise PolicyError(f"{source}: unknown key {prefix}{key} (known: {sorted(known)})")
