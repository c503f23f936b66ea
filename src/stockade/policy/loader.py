"""Load a policy from TOML and apply overrides: flag > file > profile default.

Every error names the key and where it came from, e.g.
``policy.toml: limits.timeout: not a duration: 'soon' (use e.g. 500ms, 2s, 1m)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from ..envblock import variable_problem
from ..errors import PolicyError
from .model import Capabilities, DirGrant, Policy, Trust, scratch_problem
from .profiles import profile
from .tomlfile import read_toml
from .units import shown
from .values import LIMIT_PARSERS, suggest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["load_policy", "policy_from_mapping", "apply_limit", "named_profile", "read_toml",
           "trust_from_mapping", "LIMIT_PARSERS", "dir_grants", "env_pairs", "env_names"]

def apply_limit(policy: Policy, key: str, value: Any, label: str) -> Policy:
    """Return `policy` with limit `key` parsed from `value`; errors start with `label`
    (e.g. `policy.toml: limits.timeout` or `--timeout`)."""
    parser = LIMIT_PARSERS.get(key)
    if parser is None:
        raise PolicyError(f"{label}: unknown limit{suggest(key, LIMIT_PARSERS)} "
                          f"(known: {', '.join(LIMIT_PARSERS)})")
    try:
        parsed = parser(value)
    except (ValueError, TypeError) as exc:
        raise PolicyError(f"{label}: {exc}") from None
    return policy.with_limits(**{key: parsed})


def _dir_grant(item: Any, where: str) -> DirGrant:
    if isinstance(item, str):
        try:
            grant = DirGrant.parse(item)
        except ValueError as exc:
            raise PolicyError(f"{where}: {exc}") from None
    elif isinstance(item, Mapping) and isinstance(item.get("host"), str):
        mode = item.get("mode", "ro")
        if mode not in ("ro", "rw"):
            raise PolicyError(f"{where}.mode: must be 'ro' or 'rw', not {shown(mode)}")
        guest = item.get("guest", item["host"])
        if not isinstance(guest, str):
            raise PolicyError(f"{where}.guest: expected a guest path, not {shown(guest)}")
        grant = DirGrant(host=Path(item["host"]), guest=guest, writable=mode == "rw")
    else:
        raise PolicyError(f"{where}: expected 'HOST[:GUEST][:ro|:rw]' or "
                          "{host=..., mode=...}")
    # A NUL reached the first run as a ValueError traceback (gateway: every request's 500).
    if "\0" in str(grant.host) or "\0" in grant.guest:
        raise PolicyError(f"{where}: a path contains a NUL character")
    return grant


def dir_grants(raw: Any, where: str, base: Path) -> tuple[DirGrant, ...]:
    """The directory grants listed at `where` (`HOST[:GUEST][:ro|:rw]` strings or
    `{host, guest, mode}` tables); relative host paths resolve against `base`. Raises
    PolicyError naming the entry."""
    if not isinstance(raw, list):
        raise PolicyError(f"{where}: expected a list of 'HOST[:GUEST][:ro|:rw]'")
    grants = []
    for index, item in enumerate(raw):
        grant = _dir_grant(item, f"{where}[{index}]")
        if not grant.host.is_absolute():
            grant = replace(grant, host=base / grant.host)
        grants.append(grant)
    return tuple(grants)


def env_pairs(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    """The variables of the table at `where`, each one an environment can hold
    (`variable_problem`). Raises PolicyError naming the variable."""
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: expected a table of strings")
    for name, value in raw.items():
        problem = variable_problem(name, value)
        if problem is not None:
            raise PolicyError(f"{where}: {shown(name)}: {problem}")
    return tuple(raw.items())


def env_names(raw: Any, where: str) -> tuple[str, ...]:
    """The host variable names listed at `where`: each one a variable could have."""
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise PolicyError(f"{where}: expected a list of names")
    for name in raw:
        if variable_problem(name, "") is not None:
            raise PolicyError(f"{where}: {shown(name)}: not a variable name (empty, or has "
                              "'=' or NUL)")
    return tuple(raw)


def _capabilities(table: Mapping[str, Any], source: str, base: Path) -> Capabilities:
    known = {"dirs", "env", "env_allow", "scratch", "allow_precompiled"}
    for key in table:
        if key not in known:
            raise PolicyError(f"{source}: unknown key capabilities.{key}"
                              f"{suggest(key, known)} (known: {', '.join(sorted(known))})")
    dirs = dir_grants(table.get("dirs", []), f"{source}: capabilities.dirs", base)
    env = env_pairs(table.get("env", {}), f"{source}: capabilities.env")
    allow = env_names(table.get("env_allow", []), f"{source}: capabilities.env_allow")
    scratch = table.get("scratch")
    problem = scratch_problem(scratch)
    if problem is not None:
        raise PolicyError(f"{source}: capabilities.scratch: {problem}")
    precompiled = table.get("allow_precompiled", False)
    if not isinstance(precompiled, bool):
        raise PolicyError(f"{source}: capabilities.allow_precompiled: expected true or false")
    return Capabilities(dirs=dirs, env=env, env_allow=allow, scratch=scratch,
                        allow_precompiled=precompiled)


def trust_from_mapping(table: Any, where: str, base: Path) -> Trust:
    """The `[trust]` table found at `where`: `require_signature` (bool; default true when
    `keys` are listed, as `--trust-key` requires one: a table naming signers checked
    nothing, and said nothing, unless it also said `require_signature = true`) and `keys`
    (paths of public keys or key directories, relative to `base`). Raises PolicyError."""
    if not isinstance(table, Mapping):
        raise PolicyError(f"{where}: expected a table")
    for key in table:
        if key not in ("require_signature", "require_image_signature", "keys"):
            raise PolicyError(f"{where}.{key}: unknown key (known: keys, require_signature, "
                              "require_image_signature)")
    keys = table.get("keys", [])
    required = table.get("require_signature", bool(keys))
    image = table.get("require_image_signature", False)
    for name, value in (("require_signature", required), ("require_image_signature", image)):
        if not isinstance(value, bool):
            raise PolicyError(f"{where}.{name}: expected true or false")
    required = required or image
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise PolicyError(f"{where}.keys: expected a list of public key files or directories")
    if required and not keys:
        raise PolicyError(f"{where}: require_signature = true needs keys = [...] to trust")
    return Trust(required, tuple(base / k for k in keys), image)


def named_profile(name: Any, where: str) -> Policy:
    """The profile called `name`, a value found at `where` (file and key). Raises
    PolicyError naming that place for a non-string or unknown name."""
    if not isinstance(name, str):
        raise PolicyError(f"{where}: expected a string")
    try:
        return profile(name)
    except PolicyError as exc:
        raise PolicyError(f"{where}: {exc.message}") from None


def policy_from_mapping(
    data: Mapping[str, Any], source: str, base: Path | None = None, profile_name: str | None = None
) -> Policy:
    """Build a policy from parsed TOML data. `profile_name` (a flag) beats the file's `profile`."""
    known = {"profile", "limits", "capabilities", "trust"}
    for key in data:
        if key not in known:
            raise PolicyError(f"{source}: unknown key {key!r}{suggest(key, known)} "
                              f"(known: {', '.join(sorted(known))})")
    policy = named_profile(profile_name or data.get("profile", "default"), f"{source}: profile")
    limits = data.get("limits", {})
    if not isinstance(limits, Mapping):
        raise PolicyError(f"{source}: limits: expected a table")
    for key, value in limits.items():
        policy = apply_limit(policy, key, value, f"{source}: limits.{key}")
    caps = data.get("capabilities", {})
    if not isinstance(caps, Mapping):
        raise PolicyError(f"{source}: capabilities: expected a table")
    base = base or Path.cwd()
    trust = trust_from_mapping(data.get("trust", {}), f"{source}: trust", base)
    return replace(policy, capabilities=_capabilities(caps, source, base), trust=trust)


def load_policy(path: str | Path, profile_name: str | None = None) -> Policy:
    """Load a policy TOML file. Relative `dirs` resolve against the file's directory.

    Raises PolicyError for a missing, unreadable or invalid file, naming the key.
    """
    path = Path(path)
    data = read_toml(path, "policy file")
    return policy_from_mapping(data, str(path), path.parent.resolve(), profile_name)
