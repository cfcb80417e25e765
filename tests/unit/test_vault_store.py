"""The vault's storage: key material wrapped under a key-encryption key kept in a 0600
file, versions pending until their anchor commits, and erasure of every version."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medledger.vault import envelope
from medledger.vault.kek import FileKek, KekError
from medledger.vault.store import SlotTaken, VaultStore

RECORD = b"r" * 16


def files_of(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_the_key_encryption_key_is_a_0600_file_and_binds_each_wrap_to_its_context(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys" / "vault-kek.json"
    kek = FileKek.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    wrapped = kek.wrap(b"secret", b"slot-1")
    assert b"secret" not in wrapped
    assert FileKek.load_or_create(path).unwrap(wrapped, b"slot-1") == b"secret"  # same key
    with pytest.raises(KekError):
        kek.unwrap(wrapped, b"slot-2")  # moved to another record or version
    with pytest.raises(KekError):
        FileKek(os.urandom(32)).unwrap(wrapped, b"slot-1")  # another vault's key
    path.chmod(0o640)
    with pytest.raises(KekError, match="chmod 600"):
        FileKek.load_or_create(path)


def test_a_version_is_released_only_once_anchored_and_its_keys_are_never_on_disk_in_clear(
    tmp_path: Path,
) -> None:
    store = VaultStore(tmp_path / "vault", FileKek(os.urandom(32)))
    key, salt = envelope.new_data_key(), envelope.new_salt()
    store.put_pending(RECORD, 1, (key, salt), b"sealed-1", (b"c" * 32, 40))
    assert store.key_material(RECORD, 1) is None  # pending: never released
    assert [(p.record_id, p.version, p.expiry_height) for p in store.pending()] == [(RECORD, 1, 40)]
    with pytest.raises(SlotTaken):  # a concurrent amendment may not overwrite it
        store.put_pending(RECORD, 1, (os.urandom(32), salt), b"other", (b"d" * 32, 40))
    store.mark_anchored(RECORD, 1)
    assert store.key_material(RECORD, 1) == (key, salt)
    assert store.pending() == []
    on_disk = files_of(tmp_path / "vault")
    assert key not in on_disk
    assert salt not in on_disk


def test_discard_and_erasure_remove_every_trace(tmp_path: Path) -> None:
    store = VaultStore(tmp_path / "vault", FileKek(os.urandom(32)))
    keys = [(envelope.new_data_key(), envelope.new_salt()) for _ in range(3)]
    for version, material in enumerate(keys, start=1):
        store.put_pending(RECORD, version, material, b"sealed", (b"c" * 32, 40))
        store.mark_anchored(RECORD, version)
    store.put_pending(b"s" * 16, 1, keys[0], b"other", (b"c" * 32, 40))
    store.discard(b"s" * 16, 1)
    assert store.body(b"s" * 16, 1) is None
    assert store.pending() == []
    assert store.holds(RECORD)
    store.erase(RECORD)
    assert not store.holds(RECORD)
    assert all(store.key_material(RECORD, v) is None for v in (1, 2, 3))
    assert all(store.body(RECORD, v) is None for v in (1, 2, 3))


def test_a_crash_while_compacting_the_key_file_leaves_a_whole_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Erasure rewrites the key file; a crash just before the new file takes the old one's
    name must leave a vault that opens (a wiped old file would not)."""
    kek = FileKek(os.urandom(32))
    store = VaultStore(tmp_path / "vault", kek)
    material = (envelope.new_data_key(), envelope.new_salt())
    store.put_pending(RECORD, 1, material, b"sealed", (b"c" * 32, 40))
    store.mark_anchored(RECORD, 1)

    def crash(*_: object) -> None:
        raise SystemExit("killed")

    monkeypatch.setattr("medledger.vault.store.os.replace", crash)
    with pytest.raises(SystemExit):
        store.erase(RECORD)
    monkeypatch.undo()
    store.close()
    reopened = VaultStore(tmp_path / "vault", kek)  # the process restarts
    assert reopened.key_material(RECORD, 1) in (material, None)
    reopened.erase(RECORD)  # and the erasure can be done again
    assert reopened.key_material(RECORD, 1) is None
