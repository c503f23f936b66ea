"""cosign's key pair: ECDSA P-256, the secret key in cosign's encrypted key file.

`cosign generate-key-pair` writes `cosign.key`, a PEM block `ENCRYPTED SIGSTORE PRIVATE
KEY` (older releases: `ENCRYPTED COSIGN PRIVATE KEY`) whose body is the JSON of
go-securesystemslib's `encrypted` package: scrypt (N=32768, r=8, p=1, 32-byte salt)
derives a key from the password, nacl/secretbox (24-byte nonce) seals the PKCS#8 DER of
the key. `cosign.pub` is a plain SPKI PEM. Other scrypt parameters are refused before any
work is done (a key file must not make us spend gigabytes of memory), as cosign does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from .keys import (
    KeyFileError,
    key_files,
    key_pair_paths,
    pem_block,
    read_key_file,
    write_key_file,
)

__all__ = ["ImageKey", "CosignSecret", "encrypt_secret", "decrypt_secret", "load_cosign_key",
           "parse_image_key", "generate_cosign", "load_image_keys", "PEM_TYPES",
           "SCRYPT_PARAMS"]

PEM_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
SCRYPT_PARAMS = {"N": 32768, "r": 8, "p": 1}
_SALT, _NONCE = 32, 24


@dataclass(frozen=True)
class ImageKey:
    """A trusted image signer's ECDSA P-256 public key (SPKI DER) and where it came from."""

    der: bytes
    source: str = ""

    @property
    def hint(self) -> str:
        """The key hint of Sigstore bundles: base64 of SHA-256 of the SPKI DER."""
        return base64.b64encode(hashlib.sha256(self.der).digest()).decode()

    @property
    def key_id(self) -> str:
        """A short id for messages: the first 16 hex digits of SHA-256 of the SPKI DER."""
        return hashlib.sha256(self.der).hexdigest()[:16]

    def verify(self, signature: bytes, data: bytes, prehashed: bool = False) -> bool:
        """True when `signature` (DER) is this key's ECDSA-SHA256 signature of `data` (or,
        with `prehashed`, of the message whose SHA-256 is `data`)."""
        key = serialization.load_der_public_key(self.der)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        algorithm = ec.ECDSA(utils.Prehashed(hashes.SHA256()) if prehashed else hashes.SHA256())
        try:
            key.verify(signature, data, algorithm)
        except (InvalidSignature, ValueError):
            return False
        return True

    def pem(self) -> bytes:
        """SPKI PEM (cosign.pub; what `openssl dgst -verify` reads)."""
        return serialization.load_der_public_key(self.der).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class CosignSecret:
    """A decrypted cosign secret key."""

    key: ec.EllipticCurvePrivateKey

    @property
    def public(self) -> ImageKey:
        """The matching public key."""
        return ImageKey(self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))

    def sign(self, data: bytes) -> bytes:
        """The DER ECDSA-P256-SHA256 signature of `data` (what cosign's annotation holds)."""
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))


def _scrypt(password: bytes, salt: bytes) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=SCRYPT_PARAMS["N"], r=SCRYPT_PARAMS["r"],
                          p=SCRYPT_PARAMS["p"], maxmem=64 * 1024**2, dklen=32)


def encrypt_secret(secret: CosignSecret, password: bytes) -> bytes:
    """cosign's encrypted key file (PEM) for `secret` under `password`."""
    from nacl.secret import SecretBox

    der = secret.key.private_bytes(serialization.Encoding.DER,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    salt, nonce = os.urandom(_SALT), os.urandom(_NONCE)
    sealed = SecretBox(_scrypt(password, salt)).encrypt(der, nonce).ciphertext
    # Field order as Go's encoding/json writes go-securesystemslib's structs.
    body = json.dumps({
        "kdf": {"name": "scrypt", "params": SCRYPT_PARAMS,
                "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(sealed).decode(),
    }, separators=(",", ":")).encode()
    return _pem(PEM_TYPES[0], body)


def _pem(kind: str, body: bytes) -> bytes:
    text = base64.b64encode(body).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return (f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----\n").encode()


def _unpem(data: bytes, source: str) -> bytes:
    text = data.decode("ascii", "replace")
    for kind in PEM_TYPES:
        begin, end = f"-----BEGIN {kind}-----", f"-----END {kind}-----"
        if begin in text and end in text:
            inner = text.split(begin, 1)[1].split(end, 1)[0]
            try:
                return base64.b64decode("".join(inner.split()), validate=True)
            except ValueError:
                raise KeyFileError(f"{source}: the key block is not base64") from None
    raise KeyFileError(f"{source}: not a cosign key file (expected a PEM block "
                       f"{PEM_TYPES[0]!r})")


def _b64(value: object, what: str, source: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        raise KeyFileError(f"{source}: {what} is not base64") from None


def decrypt_secret(data: bytes, password: bytes | Callable[[], bytes],
                   source: str) -> CosignSecret:
    """The secret key of a cosign key file. Raises KeyFileError for another format,
    unexpected scrypt parameters (checked before deriving), or a wrong password.
    `password` may be asked for (a callable) once the file is known to be a cosign key:
    given an Ed25519 key, `oci sign` asked for a password before saying so."""
    from nacl.exceptions import CryptoError
    from nacl.secret import SecretBox

    try:
        document = json.loads(_unpem(data, source))
        kdf, cipher = document["kdf"], document["cipher"]
        names = (kdf["name"], cipher["name"])
        params = kdf["params"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise KeyFileError(f"{source}: the cosign key's JSON is malformed") from None
    if names != ("scrypt", "nacl/secretbox"):
        raise KeyFileError(f"{source}: unsupported key encryption {names[0]}/{names[1]}")
    if not isinstance(params, dict) or \
            {k: params.get(k) for k in SCRYPT_PARAMS} != SCRYPT_PARAMS:
        raise KeyFileError(f"{source}: unexpected scrypt parameters {params!r} (cosign "
                           "writes N=32768, r=8, p=1)")
    salt = _b64(kdf.get("salt"), "salt", source)
    nonce = _b64(cipher.get("nonce"), "nonce", source)
    sealed = _b64(document.get("ciphertext"), "ciphertext", source)
    if len(nonce) != _NONCE or not salt:
        raise KeyFileError(f"{source}: bad salt or nonce size")
    if callable(password):
        password = password()
    try:
        der = SecretBox(_scrypt(password, salt)).decrypt(sealed, nonce)
    except CryptoError:
        raise KeyFileError(f"{source}: wrong password for the cosign key (or the file "
                           "was altered)") from None
    try:
        key = serialization.load_der_private_key(der, None)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{source}: the decrypted key is not PKCS#8") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise KeyFileError(f"{source}: not an ECDSA P-256 key (cosign signs with P-256)")
    return CosignSecret(key)


def load_cosign_key(path: str | Path, password: bytes | Callable[[], bytes]) -> CosignSecret:
    """Read and decrypt a cosign key file. Raises KeyFileError naming the file."""
    path = Path(path)
    return decrypt_secret(read_key_file(path), password, str(path))


def parse_image_key(data: bytes, source: str) -> ImageKey | None:
    """The ECDSA P-256 public key of `data` (SPKI PEM or DER), or None when it holds
    another kind of key (an Ed25519 module signer's). Raises KeyFileError for P-384 etc.,
    and for a file of several PEM blocks (`keys.pem_block`): reading the first alone
    dropped an Ed25519 key after a cosign key without a word."""
    block = pem_block(data, source)
    try:
        key = (serialization.load_pem_public_key(block) if block is not None
               else serialization.load_der_public_key(data))
    except (ValueError, UnsupportedAlgorithm, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return None
    if key.curve.name != "secp256r1":
        raise KeyFileError(f"{source}: ECDSA key on {key.curve.name}; cosign keys are P-256")
    return ImageKey(key.public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo), source)


def generate_cosign(path: str | Path, password: bytes) -> tuple[Path, Path, CosignSecret]:
    """Write a new cosign key pair: `path` (encrypted, 0600, never over an existing file)
    and `path.pub` (SPKI PEM). Raises KeyFileError."""
    secret_path, public_path = key_pair_paths(path)
    secret = CosignSecret(ec.generate_private_key(ec.SECP256R1()))
    try:
        write_key_file(secret_path, encrypt_secret(secret, password), 0o600)
        write_key_file(public_path, secret.public.pem(), 0o644)
    except OSError as exc:
        raise KeyFileError(f"{exc.filename or secret_path}: cannot write key: "
                           f"{exc.strerror}") from None
    return secret_path, public_path, secret


def load_image_keys(path: str | Path) -> list[ImageKey]:
    """The cosign (ECDSA P-256) public keys of a file or of a directory's files; files
    holding other keys are skipped in a directory and refused on their own. Raises
    KeyFileError naming the file."""
    path = Path(path)
    keys = []
    for item in key_files(path):
        key = parse_image_key(read_key_file(item), str(item))
        if key is not None:
            keys.append(key)
        elif not path.is_dir():
            raise KeyFileError(f"{item}: not a cosign public key (ECDSA P-256, SPKI PEM)")
    if not keys:
        raise KeyFileError(f"{path}: no cosign public keys (ECDSA P-256, SPKI PEM)")
    return keys
