"""The vault's storage: two LMDB environments in the custodian's home, never replicated.

    vault/bodies   record id || version (u32 BE) -> nonce || ChaCha20-Poly1305 ciphertext
    vault/keys     b"k" || record id -> data key;  b"s" || record id || version -> salt

Keys live apart from bodies so that erasure can rewrite the (small) key environment
without its free pages: LMDB is copy-on-write, and a deleted key would otherwise linger
in a freed page of the file until reused. `erase` deletes, then compacts the key
environment into a fresh file and replaces the old one.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import lmdb

__all__ = ["VaultStore"]

MAP_SIZE_BYTES = 4 * 1024 * 1024 * 1024


def _version_key(record_id: bytes, version: int) -> bytes:
    return record_id + struct.pack(">I", version)


def _delete_prefix(txn: lmdb.Transaction, prefix: bytes) -> None:
    with txn.cursor() as cursor:
        if not cursor.set_range(prefix):
            return
        while bytes(cursor.key()).startswith(prefix) and cursor.delete():
            pass


class VaultStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        self._bodies = self._open(root / "bodies")
        self._keys = self._open(root / "keys")

    @staticmethod
    def _open(path: Path) -> lmdb.Environment:
        path.mkdir(exist_ok=True)
        path.chmod(0o700)
        return lmdb.open(str(path), map_size=MAP_SIZE_BYTES, sync=True, metasync=True)

    def close(self) -> None:
        self._bodies.close()
        self._keys.close()

    def put(
        self, record_id: bytes, version: int, data_key: bytes, salt: bytes, sealed: bytes
    ) -> None:
        """Stores one version: its key material first, then its body (both fsynced)."""
        with self._keys.begin(write=True) as txn:
            txn.put(b"k" + record_id, data_key)
            txn.put(b"s" + _version_key(record_id, version), salt)
        with self._bodies.begin(write=True) as txn:
            txn.put(_version_key(record_id, version), sealed)

    def data_key(self, record_id: bytes) -> bytes | None:
        with self._keys.begin() as txn:
            value = txn.get(b"k" + record_id)
            return None if value is None else bytes(value)

    def salt(self, record_id: bytes, version: int) -> bytes | None:
        with self._keys.begin() as txn:
            value = txn.get(b"s" + _version_key(record_id, version))
            return None if value is None else bytes(value)

    def body(self, record_id: bytes, version: int) -> bytes | None:
        with self._bodies.begin() as txn:
            value = txn.get(_version_key(record_id, version))
            return None if value is None else bytes(value)

    def erase(self, record_id: bytes) -> None:
        """Crypto-shredding: the data key and every salt of the record are destroyed and
        the key file rewritten without them; the ciphertexts are deleted too."""
        with self._keys.begin(write=True) as txn:
            txn.delete(b"k" + record_id)
            _delete_prefix(txn, b"s" + record_id)
        with self._bodies.begin(write=True) as txn:
            _delete_prefix(txn, record_id)
        self._compact_keys()

    def _compact_keys(self) -> None:
        path = self.root / "keys"
        fresh = self.root / "keys.compacting"
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(mode=0o700)
        self._keys.copy(str(fresh), compact=True)
        self._keys.close()
        old = path / "data.mdb"
        # Overwrite the old file's bytes before unlinking it, so the freed pages do not
        # keep the destroyed key on disk (as far as the filesystem lets us).
        size = old.stat().st_size
        with old.open("r+b") as handle:
            handle.write(b"\0" * size)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(fresh / "data.mdb", old)
        shutil.rmtree(fresh, ignore_errors=True)
        self._keys = self._open(path)
