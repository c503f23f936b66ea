"""Policies: resource limits and capabilities, the built-in profiles, TOML loading."""

from __future__ import annotations

from ..lazyexports import lazy_exports
from .model import Capabilities, DirGrant, Limits, Policy, Trust
from .profiles import PROFILES, profile
from .units import format_duration, format_size, parse_duration, parse_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .loader import apply_limit, load_policy, policy_from_mapping, trust_from_mapping

__all__ = [
    "Capabilities",
    "DirGrant",
    "Limits",
    "Policy",
    "Trust",
    "PROFILES",
    "profile",
    "load_policy",
    "policy_from_mapping",
    "trust_from_mapping",
    "apply_limit",
    "parse_size",
    "parse_duration",
    "format_size",
    "format_duration",
]

# Imported on first use: the TOML reader and the mapping checks serve policy files,
# which a plain `stockade run` does not read.
_LAZY = dict.fromkeys(("load_policy", "policy_from_mapping", "trust_from_mapping",
                       "apply_limit"), "loader")

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
