"""Key files: an Ed25519 key on disk, readable by its owner only.

The file is JSON with the public key and the 32-byte secret seed in hex. It is created
with mode 0600 (never world- or group-readable) and refused on load if anyone but the
owner can read it, the way ssh treats private keys.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from medledger.crypto import SigningKey

__all__ = ["KeyFileError", "load_key", "private_file_problem", "save_key"]

KEY_FILE_MODE = 0o600


class KeyFileError(Exception):
    """A key file that is missing, malformed or readable by others."""


def save_key(key: SigningKey, path: Path) -> None:
    """Writes `key` to a new file at `path` (mode 0600); refuses to overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(
        {"type": "ed25519", "public_key": key.public_key.hex(), "seed": key.seed().hex()}
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    except FileExistsError as error:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from error
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def private_file_problem(path: Path, what: str = "key file") -> str | None:
    """Why a private file may not be read (missing, or group- or world-accessible)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"{path}: no such {what}"
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path}: {what} is accessible by others (mode {mode & 0o777:o}); chmod 600 it"
    return None


def load_key(path: Path) -> SigningKey:
    """Reads a key file written by `save_key`, checking its permissions and contents."""
    problem = private_file_problem(path)
    if problem is not None:
        raise KeyFileError(problem)
    try:
        data = json.loads(path.read_text())
        key = SigningKey.from_seed(bytes.fromhex(data["seed"]))
        expected = bytes.fromhex(data["public_key"])
    except (ValueError, KeyError, TypeError) as error:
        raise KeyFileError(f"{path}: not a medledger key file") from error
    if key.public_key != expected:
        raise KeyFileError(f"{path}: public key does not match the seed")
    return key
