"""Settings of the circuit breakers and the audit log read from the environment
(`STOCKADE_BREAKER_*`, `STOCKADE_AUDIT_MAX_BYTES`, `STOCKADE_AUDIT_KEY`): read and checked
here only, once, when telemetry opens (as the `OTEL_*` variables are) or when the AoT
cache, which writes audit records of its own, is made. A malformed one stops a command
with one line (125) instead of failing the first breaker count or audit record of a run,
unheard; what was checked is what is used, whatever the variables say later.

Kept apart from `breaker` and `audit`, whose imports a run without a violation never pays.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from ..errors import UsageError
from ..records import FieldTuple
from ..result import Outcome

__all__ = ["BreakerConfig", "AuditSettings", "LIMIT_OUTCOMES", "audit_max_bytes",
           "audit_key_path", "unused_settings", "DEFAULT_AUDIT_MAX_BYTES",
           "AUDIT_MAX_BYTES_ENV", "AUDIT_KEY_ENV"]

# Resource limits: what a breaker counts by default.
LIMIT_OUTCOMES = frozenset({
    Outcome.TIMEOUT, Outcome.FUEL_EXHAUSTED, Outcome.MEMORY_LIMIT, Outcome.OUTPUT_LIMIT,
    Outcome.DISK_QUOTA, Outcome.FILE_QUOTA, Outcome.FD_QUOTA, Outcome.HOSTCALL_LIMIT,
})
DEFAULT_AUDIT_MAX_BYTES = 16 * 1024 * 1024
AUDIT_MAX_BYTES_ENV = "STOCKADE_AUDIT_MAX_BYTES"
AUDIT_KEY_ENV = "STOCKADE_AUDIT_KEY"


class BreakerConfig(FieldTuple):
    """`threshold` violations within `window` seconds open a breaker for `cooldown`
    seconds; a half-open probe not reported within `probe_timeout` (its process died)
    is given up. Resource-limit violations count; traps only with `count_traps`."""

    threshold: int = 3
    window: float = 60.0
    cooldown: float = 30.0
    probe_timeout: float = 300.0
    count_traps: bool = False

    @property
    def remembered(self) -> float:
        """How long a client's violation keeps it counted (refused while the breaker is
        half-open): the window and a cooldown, so that the clients that opened a breaker
        are all still counted when it half-opens, not only the latest."""
        return self.window + self.cooldown

    def counts(self, outcome: Outcome) -> bool:
        """Whether a run that ended with `outcome` counts toward opening a breaker."""
        return outcome in LIMIT_OUTCOMES or (self.count_traps and outcome is Outcome.TRAP)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BreakerConfig:
        """Defaults overridden by `STOCKADE_BREAKER_THRESHOLD`, `STOCKADE_BREAKER_WINDOW`,
        `STOCKADE_BREAKER_COOLDOWN` (durations like `60s`) and `STOCKADE_BREAKER_TRAPS`
        (`1`/`true`/`on` or `0`/`false`/`off`). Raises UsageError."""
        from ..policy.units import parse_duration

        env = os.environ if env is None else env
        config = cls()
        for key in ("WINDOW", "COOLDOWN"):
            raw = env.get(f"STOCKADE_BREAKER_{key}")
            if raw:
                try:
                    seconds = parse_duration(raw)
                except ValueError as exc:
                    raise UsageError(f"STOCKADE_BREAKER_{key}: {exc}") from None
                config = (config._replace(window=seconds) if key == "WINDOW"
                          else config._replace(cooldown=seconds))
        raw = env.get("STOCKADE_BREAKER_THRESHOLD")
        if raw:
            if not raw.isdigit() or int(raw) < 1:
                raise UsageError(f"STOCKADE_BREAKER_THRESHOLD={raw!r}: use a positive integer")
            config = config._replace(threshold=int(raw))
        raw = env.get("STOCKADE_BREAKER_TRAPS")
        if raw:
            flag = _FLAGS.get(raw.strip().lower())
            if flag is None:
                raise UsageError(f"STOCKADE_BREAKER_TRAPS={raw!r}: use on or off")
            config = config._replace(count_traps=flag)
        return config


_FLAGS = {"1": True, "true": True, "on": True, "yes": True,
          "0": False, "false": False, "off": False, "no": False}


def audit_max_bytes(env: Mapping[str, str] | None = None) -> int:
    """The size at which the audit log rotates: `STOCKADE_AUDIT_MAX_BYTES`, at least 4 KiB,
    else 16 MiB. Raises UsageError."""
    from ..policy.units import size_variable

    return size_variable(AUDIT_MAX_BYTES_ENV, env, DEFAULT_AUDIT_MAX_BYTES, 4096)


def audit_key_path(env: Mapping[str, str] | None = None) -> Path:
    """`STOCKADE_AUDIT_KEY` in `env` (default `os.environ`), else `audit.key` in the
    config directory."""
    from ..paths import config_dir

    explicit = (os.environ if env is None else env).get(AUDIT_KEY_ENV)
    return Path(explicit) if explicit else config_dir() / "audit.key"


class AuditSettings(FieldTuple):
    """How the audit log is kept: it rotates at `max_bytes`; its key is at `key_path`."""

    max_bytes: int
    key_path: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuditSettings:
        """`audit_max_bytes(env)` and `audit_key_path(env)`. Raises UsageError."""
        return cls(audit_max_bytes(env), audit_key_path(env))


def unused_settings(env: Mapping[str, str] | None = None, *, breaker: bool,
                    audit: bool) -> list[str]:
    """Lines for a warning: what is wrong with the variables of each feature turned off
    (`breaker`, `audit` False), which would refuse them were it on. Nothing is checked
    of a feature that is on."""
    checks: list[tuple[bool, Callable[[Mapping[str, str] | None], object], str]] = [
        (breaker, BreakerConfig.from_env, "circuit breakers are off"),
        (audit, audit_max_bytes, "the audit log is off"),
    ]
    found = []
    for on, check, why in checks:
        if on:
            continue
        try:
            check(env)
        except UsageError as exc:
            found.append(f"{exc.message} (ignored: {why})")
    return found
