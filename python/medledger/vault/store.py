"""The vault's storage: two LMDB environments in the custodian's home, never replicated.

    vault/bodies   record id || version (u32 BE) -> nonce || ChaCha20-Poly1305 ciphertext
    vault/keys     b"v" || record id || version -> data key || salt, wrapped under the KEK
                   b"p" || record id || version -> commitment || anchor expiry height (u64)
                   b"h" || hash -> salt || a clinician's emergency reason, wrapped (the
                   chain holds the hash: SHA-256(salt || text), which reads within the
                   window it opened carry too)
                   b"e" || record id || hash -> (empty): the record it was declared for,
                   so erasing the record erases the words

Every version has a data key of its own, so a key released for one version opens no
other. Data keys and salts are stored wrapped under the vault's key-encryption key
(`vault.kek`): the files alone open nothing. A version is *pending* (the `p` entry) from
the moment it is stored until its anchor commits; a pending version is never released,
and one whose anchor was refused or can no longer commit is discarded (`Vault.reconcile`).

Keys live apart from bodies so that erasure can rewrite the (small) key environment
without its free pages: LMDB is copy-on-write, and a deleted key would otherwise linger
in a freed page of the file until reused. Erasure and discards delete, then compact the
key environment into a fresh file and replace the old one.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import lmdb

from medledger.vault.envelope import DATA_KEY_BYTES
from medledger.vault.kek import KeyWrapper

__all__ = ["Pending", "SlotTaken", "VaultStore"]

MAP_SIZE_BYTES = 4 * 1024 * 1024 * 1024
HASH_BYTES = 32


def _version_key(record_id: bytes, version: int) -> bytes:
    return record_id + struct.pack(">I", version)


def _delete_prefix(txn: lmdb.Transaction, prefix: bytes) -> None:
    with txn.cursor() as cursor:
        if not cursor.set_range(prefix):
            return
        while bytes(cursor.key()).startswith(prefix) and cursor.delete():
            pass


class SlotTaken(Exception):
    """Another body is already stored under this record id and version."""


@dataclass(frozen=True)
class Pending:
    """A stored version whose anchor has not been seen committed."""

    record_id: bytes
    version: int
    commitment: bytes
    expiry_height: int


class VaultStore:
    def __init__(self, root: Path, kek: KeyWrapper) -> None:
        self.root = root
        self.kek = kek
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

    def put_pending(
        self,
        record_id: bytes,
        version: int,
        material: tuple[bytes, bytes],
        sealed: bytes,
        anchor: tuple[bytes, int],
    ) -> None:
        """Stores one version, pending: its wrapped key material and pending entry
        (`anchor` = commitment, the anchor's expiry height) first, then its body (both
        fsynced)."""
        data_key, salt = material
        commitment, expiry_height = anchor
        slot = _version_key(record_id, version)
        with self._keys.begin(write=True) as txn:
            # Two amendments at once both want the next version: the second must not
            # overwrite what the first's anchor will commit to.
            if not txn.put(b"v" + slot, self.kek.wrap(data_key + salt, slot), overwrite=False):
                raise SlotTaken(f"record {record_id.hex()} v{version} is already stored")
            txn.put(b"p" + slot, commitment + struct.pack(">Q", expiry_height))
        with self._bodies.begin(write=True) as txn:
            txn.put(slot, sealed)

    def mark_anchored(self, record_id: bytes, version: int) -> None:
        with self._keys.begin(write=True) as txn:
            txn.delete(b"p" + _version_key(record_id, version))

    def pending(self) -> list[Pending]:
        found = []
        with self._keys.begin() as txn, txn.cursor() as cursor:
            if cursor.set_range(b"p"):
                for key, value in cursor:
                    if not bytes(key).startswith(b"p"):
                        break
                    slot, raw = bytes(key)[1:], bytes(value)
                    found.append(
                        Pending(
                            slot[:-4],
                            struct.unpack(">I", slot[-4:])[0],
                            raw[:HASH_BYTES],
                            struct.unpack(">Q", raw[HASH_BYTES:])[0],
                        )
                    )
        return found

    def is_pending(self, record_id: bytes, version: int) -> bool:
        with self._keys.begin() as txn:
            return txn.get(b"p" + _version_key(record_id, version)) is not None

    def discard(self, record_id: bytes, version: int) -> None:
        """Removes a version whose anchor never committed: key material, pending entry
        and body; the key file is rewritten without them."""
        slot = _version_key(record_id, version)
        with self._keys.begin(write=True) as txn:
            txn.delete(b"v" + slot)
            txn.delete(b"p" + slot)
        with self._bodies.begin(write=True) as txn:
            txn.delete(slot)
        self._compact_keys()

    def key_material(self, record_id: bytes, version: int) -> tuple[bytes, bytes] | None:
        """(data key, salt) of an anchored version; None if erased, unknown or pending."""
        slot = _version_key(record_id, version)
        with self._keys.begin() as txn:
            if txn.get(b"p" + slot) is not None:
                return None
            wrapped = txn.get(b"v" + slot)
            if wrapped is None:
                return None
            wrapped = bytes(wrapped)
        opened = self.kek.unwrap(wrapped, slot)
        return opened[:DATA_KEY_BYTES], opened[DATA_KEY_BYTES:]

    def put_reason(self, record_id: bytes, digest: bytes, salt: bytes, text: str) -> None:
        """Keeps a break-glass declaration's words, under their salted hash `digest`,
        tied to the record it was declared for (erased with it)."""
        with self._keys.begin(write=True) as txn:
            txn.put(b"h" + digest, self.kek.wrap(salt + text.encode(), digest))
            txn.put(b"e" + record_id + digest, b"")

    def reason(self, digest: bytes) -> tuple[bytes, str] | None:
        """(salt, words) whose salted hash is `digest`, if still held."""
        with self._keys.begin() as txn:
            wrapped = txn.get(b"h" + digest)
            if wrapped is None:
                return None
            wrapped = bytes(wrapped)
        opened = self.kek.unwrap(wrapped, digest)
        return opened[:HASH_BYTES], opened[HASH_BYTES:].decode()

    def holds(self, record_id: bytes) -> bool:
        """Whether any version's key material is still here (false once erased)."""
        with self._keys.begin() as txn, txn.cursor() as cursor:
            prefix = b"v" + record_id
            return cursor.set_range(prefix) and bytes(cursor.key()).startswith(prefix)

    def body(self, record_id: bytes, version: int) -> bytes | None:
        with self._bodies.begin() as txn:
            value = txn.get(_version_key(record_id, version))
            return None if value is None else bytes(value)

    def erase(self, record_id: bytes) -> None:
        """Crypto-shredding: every version's data key and salt, and the words of every
        emergency declared on the record, are destroyed and the key file rewritten
        without them; the ciphertexts are deleted too."""
        with self._keys.begin(write=True) as txn:
            _delete_prefix(txn, b"v" + record_id)
            _delete_prefix(txn, b"p" + record_id)
            with txn.cursor() as cursor:  # the words declared for this record
                prefix = b"e" + record_id
                digests = []
                if cursor.set_range(prefix):
                    for key, _ in cursor:
                        if not bytes(key).startswith(prefix):
                            break
                        digests.append(bytes(key)[len(prefix) :])
            for digest in digests:
                txn.delete(b"h" + digest)
            _delete_prefix(txn, b"e" + record_id)
        with self._bodies.begin(write=True) as txn:
            _delete_prefix(txn, record_id)
        self._compact_keys()

    def _compact_keys(self) -> None:
        """Replaces the key file by a compacted copy, then wipes the old one. The copy is
        fsynced and renamed over the old name first, so a crash at any point leaves a
        whole key file under `keys/data.mdb` (the old or the new one); the old file's
        bytes are zeroed through a handle opened before the rename (its inode outlives
        the name), so the destroyed keys do not linger in its freed pages."""
        path = self.root / "keys"
        fresh = self.root / "keys.compacting"
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(mode=0o700)
        self._keys.copy(str(fresh), compact=True)
        self._keys.close()
        with (fresh / "data.mdb").open("rb") as copied:
            os.fsync(copied.fileno())
        old = path / "data.mdb"
        with old.open("r+b") as handle:
            os.replace(fresh / "data.mdb", old)
            _fsync_dir(path)
            size = os.fstat(handle.fileno()).st_size
            handle.write(b"\0" * size)
            handle.flush()
            os.fsync(handle.fileno())
        shutil.rmtree(fresh, ignore_errors=True)
        self._keys = self._open(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
