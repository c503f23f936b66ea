"""Turn `run` flags into a `Policy` and an `Invocation`: flag > --policy file > profile."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from ..errors import PolicyError, UsageError
from ..invocation import Invocation
from ..policy import DirGrant, Policy, apply_limit, load_policy, profile

__all__ = ["build_policy", "build_invocation", "parse_env"]

MAX_STDIN = 256 * 1024**2


def parse_env(pairs: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """`KEY=VALUE` strings to pairs; UsageError naming the bad one."""
    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {pair!r}: expected KEY=VALUE")
        parsed.append((key, value))
    return tuple(parsed)


def build_policy(
    profile_name: str | None,
    policy_file: Path | None,
    limits: Mapping[str, object],
    dirs: tuple[str, ...],
    env: tuple[str, ...],
    env_allow: tuple[str, ...],
) -> Policy:
    """The run's policy. `limits` maps limit names to raw flag values (None = not given)."""
    if policy_file is not None:
        policy = load_policy(policy_file, profile_name)
    else:
        policy = profile(profile_name or "default")
    for key, value in limits.items():
        if value is not None:
            policy = apply_limit(policy, key, value, f"--{key.replace('_', '-')}")
    grants = list(policy.capabilities.dirs)
    for spec in dirs:
        try:
            grants.append(DirGrant.parse(spec))
        except ValueError as exc:
            raise PolicyError(f"--dir: {exc}") from None
    caps = replace(
        policy.capabilities,
        dirs=tuple(grants),
        env=policy.capabilities.env + parse_env(env),
        env_allow=policy.capabilities.env_allow + env_allow,
    )
    return replace(policy, capabilities=caps)


def build_invocation(args: tuple[str, ...], stdin: str | None) -> Invocation:
    """The invocation: guest args and stdin bytes (`-` reads this process's stdin)."""
    data = b""
    if stdin == "-":
        data = sys.stdin.buffer.read(MAX_STDIN + 1)
    elif stdin is not None:
        try:
            with open(stdin, "rb") as handle:
                data = handle.read(MAX_STDIN + 1)
        except OSError as exc:
            raise UsageError(f"--stdin {stdin}: {exc.strerror}") from None
    if len(data) > MAX_STDIN:
        raise UsageError(f"--stdin: input larger than {MAX_STDIN // 1024**2} MiB")
    return Invocation(args=args, stdin=data)


def with_trust(policy: Policy, trust_keys: tuple[Path, ...], require_signature: bool) -> Policy:
    """`policy` with `--trust-key` files added to its trusted keys; either flag requires a
    signature (flags only narrow: they never lift a policy's own requirement)."""
    from ..policy import Trust

    keys = policy.trust.keys + tuple(key.absolute() for key in trust_keys)
    required = policy.trust.require_signature or require_signature or bool(trust_keys)
    if required and not keys:
        raise PolicyError("--require-signature: no trusted keys (add --trust-key PUB, or "
                          "keys = [...] under [trust] in the policy)")
    return replace(policy, trust=Trust(required, keys))
