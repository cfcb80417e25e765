"""The vault's key-encryption key: every data key and salt is stored wrapped under it, so
the vault's LMDB files alone (a copied disk, a backup) open no record.

`KeyWrapper` is the interface; `FileKek` keeps a 32-byte key in a file readable by its
owner only (mode 0600, refused otherwise, like the signing keys). A KMS or a PKCS#11
module implements the same two methods, and the key then never touches the vault's disk.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

__all__ = ["FileKek", "KekError", "KeyWrapper"]

KEK_BYTES = 32
NONCE_BYTES = 12
FILE_MODE = 0o600
WRAP_DOMAIN = b"medledger/v1/vault-kek\x00"


class KekError(Exception):
    """A key file that is missing, malformed or readable by others, or a wrapped key that
    does not open under this key-encryption key."""


class KeyWrapper(Protocol):
    def wrap(self, secret: bytes, context: bytes) -> bytes:
        """`secret` sealed under the key-encryption key, bound to `context`."""
        ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """The secret `wrap` sealed with this `context`; raises KekError otherwise."""
        ...


class FileKek:
    """ChaCha20-Poly1305 under a key kept in a 0600 file; a random nonce per wrap."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEK_BYTES:
            raise KekError(f"a key-encryption key is {KEK_BYTES} bytes")
        self._aead = ChaCha20Poly1305(key)

    @classmethod
    def load_or_create(cls, path: Path) -> FileKek:
        """The key in `path`, created (0600, fsynced) the first time."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"type": "vault-kek", "key": os.urandom(KEK_BYTES).hex()})
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            except FileExistsError:
                pass  # another process created it first: read theirs
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(text + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KekError(f"{path}: accessible by others (mode {mode & 0o777:o}); chmod 600 it")
        try:
            data = json.loads(path.read_text())
            key = bytes.fromhex(data["key"])
        except (ValueError, KeyError, TypeError) as error:
            raise KekError(f"{path}: not a vault key-encryption key file") from error
        return cls(key)

    def wrap(self, secret: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret, WRAP_DOMAIN + context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        nonce, sealed = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, sealed, WRAP_DOMAIN + context)
        except (InvalidTag, ValueError) as error:
            raise KekError("a wrapped key does not open under this key-encryption key") from error
