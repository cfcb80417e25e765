"""The vault's cryptography, all from `cryptography` (OpenSSL): ChaCha20-Poly1305 for
record bodies, HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
ChaCha20-Poly1305) to wrap a record's data key and salt for one recipient, and the salted
SHA-256 commitment that goes on the ledger."""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from medledger.crypto import sha256

__all__ = [
    "DATA_KEY_BYTES",
    "SALT_BYTES",
    "EnvelopeError",
    "commitment",
    "new_data_key",
    "new_salt",
    "open_body",
    "seal_body",
    "unwrap_key",
    "wrap_key",
]

DATA_KEY_BYTES = 32
SALT_BYTES = 32
NONCE_BYTES = 12
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
WRAP_INFO = b"medledger/v1/record-key"


class EnvelopeError(Exception):
    """A ciphertext or wrapped key that does not open (tampered, or the wrong key)."""


def new_data_key() -> bytes:
    return os.urandom(DATA_KEY_BYTES)


def new_salt() -> bytes:
    return os.urandom(SALT_BYTES)


def commitment(salt: bytes, content: bytes) -> bytes:
    """SHA-256(salt || content): binds the content without revealing it; without the
    salt, guessing the content cannot be confirmed."""
    return sha256(salt + content)


def _associated_data(record_id: bytes, version: int, commitment_: bytes) -> bytes:
    return record_id + struct.pack(">I", version) + commitment_


def seal_body(
    data_key: bytes, record_id: bytes, version: int, commitment_: bytes, content: bytes
) -> bytes:
    """nonce || ChaCha20-Poly1305(content), bound to the record, version and commitment."""
    nonce = os.urandom(NONCE_BYTES)
    aad = _associated_data(record_id, version, commitment_)
    return nonce + ChaCha20Poly1305(data_key).encrypt(nonce, content, aad)


def open_body(
    data_key: bytes, record_id: bytes, version: int, commitment_: bytes, sealed: bytes
) -> bytes:
    nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    aad = _associated_data(record_id, version, commitment_)
    try:
        return ChaCha20Poly1305(data_key).decrypt(nonce, ciphertext, aad)
    except InvalidTag as error:
        raise EnvelopeError("ciphertext: does not authenticate (tampered or wrong key)") from error


def _info(record_id: bytes, version: int) -> bytes:
    return WRAP_INFO + record_id + struct.pack(">I", version)


def wrap_key(
    data_key: bytes, salt: bytes, recipient: bytes, record_id: bytes, version: int
) -> bytes:
    """HPKE-seals data key || salt to the X25519 public key `recipient` (32 bytes)."""
    public_key = X25519PublicKey.from_public_bytes(recipient)
    return SUITE.encrypt(data_key + salt, public_key, info=_info(record_id, version))


def unwrap_key(
    wrapped: bytes, private_key: X25519PrivateKey, record_id: bytes, version: int
) -> tuple[bytes, bytes]:
    """(data key, salt) from `wrap_key`'s output."""
    try:
        opened = SUITE.decrypt(wrapped, private_key, info=_info(record_id, version))
    except Exception as error:  # cryptography raises InvalidTag or ValueError
        raise EnvelopeError("wrapped_key: does not open with this private key") from error
    if len(opened) != DATA_KEY_BYTES + SALT_BYTES:
        raise EnvelopeError("wrapped_key: wrong length")
    return opened[:DATA_KEY_BYTES], opened[DATA_KEY_BYTES:]
