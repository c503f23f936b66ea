"""Policies: resource limits and capabilities, the built-in profiles, TOML loading."""

from __future__ import annotations

from .loader import apply_limit, load_policy, policy_from_mapping, trust_from_mapping
from .model import Capabilities, DirGrant, Limits, Policy, Trust
from .profiles import PROFILES, profile
from .units import format_duration, format_size, parse_duration, parse_size

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
