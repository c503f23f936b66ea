"""Provenance: embedded module signatures (wasmsign2's format), signer keys, trust checks."""

from __future__ import annotations

from .keys import KeyFileError, PublicKey, SecretKey, generate, load_public_keys, load_secret_key
from .signing import Signed, Verification, sign_module, verify_module

__all__ = ["KeyFileError", "PublicKey", "SecretKey", "generate", "load_public_keys",
           "load_secret_key", "Signed", "Verification", "sign_module", "verify_module"]
