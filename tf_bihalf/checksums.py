"""SHA-256 checksums of files and bytes: one implementation for data sources, split files,
feature caches, weights and index files.

>>> sha256_bytes(b"abc")[:16]
'ba7816bf8f01cfea'
"""

from __future__ import annotations

import hashlib


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (memory stays bounded)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
