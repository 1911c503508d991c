"""Command line for Hamming indexes: build one from codes, query it, describe it.

Usage::

    python -m tf_bihalf.search build --codes codes.npz --out INDEX [--ids ids.npy] [--bits K]
        [--backend auto|numpy|faiss|faiss_multihash|sharded|milvus] [--overwrite]
    python -m tf_bihalf.search query --index INDEX --codes queries.npz -k 10
        [--out result.npz | --json]
    python -m tf_bihalf.search query --index INDEX_DIR --codes queries.npy --radius 2 --json
    python -m tf_bihalf.search info --index INDEX_DIR

``INDEX`` is any kind of index of ``tf_bihalf.search.stores``: a ``HammingIndex`` directory
(``auto``, ``numpy``, ``faiss``, ``faiss_multihash``), a sharded directory (``sharded``; ``build``
appends to an existing one), or a Milvus Lite ``*.db`` file / server URI (``milvus``, needs
pymilvus). ``query`` opens whatever is there (``--backend`` picks the search backend of a
``HammingIndex`` or sharded directory).

Code files: ``.npy`` holding one array, or ``.npz`` with ``codes`` (±1 or {0,1}, (N, K)) or
``codes_packed`` (uint8, (N, ceil(K/8)), needs ``--bits`` or a ``bits`` entry), and optional
``ids`` (int or str) — the layout that ``export/encode.py`` writes. ``--ids`` takes a ``.npy``
array or a text file with one id per line. Files are read with ``allow_pickle=False``.

Query output: ``--out result.npz`` saves ``distances`` and ``ids`` (``(Q, k)`` for -k; for
--radius the flat ``lims``/``distances``/``ids`` layout) plus ``query_ids`` when the query file
has ids; ``--json`` prints one JSON object per query (``{"query": ..., "ids": [...],
"distances": [...]}``, one per line); with neither, a plain-text table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
import zlib

import numpy as np
from absl import logging

from tf_bihalf.codes import as_packed_codes
from tf_bihalf.search import stores
from tf_bihalf.search.index import HammingIndex


def _check_regular(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} file {path} not found.")
    if not os.path.isfile(path):
        raise ValueError(f"{what} file {path} is not a regular file.")


def _load_array(path: str, what: str) -> np.ndarray | np.lib.npyio.NpzFile:
    _check_regular(path, what)
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if not magic.startswith((b"\x93NUMPY", b"PK\x03\x04", b"PK\x05\x06")):
        raise ValueError(f"cannot read {what} file {path}: it is not a .npy or .npz file.")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickle" not in str(error):
            raise ValueError(f"cannot read {what} file {path}: {error}") from None
        raise ValueError(
            f"cannot read {path} without pickle ({error}); save ids as int or unicode arrays "
            "(np.asarray(ids, dtype=str)), not object arrays."
        ) from None
    except (EOFError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"cannot read {what} file {path}: it is truncated or not a .npy/.npz file "
            f"({type(error).__name__}: {error})."
        ) from None


def load_codes(
    path: str, bits: int | None = None
) -> tuple[np.ndarray, int | None, np.ndarray | None]:
    """Reads a ``.npy`` / ``.npz`` code file: ``(codes, bits or None, ids or None)``.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not a regular file, a truncated or corrupt file, or no codes in it (one line
        that names the file).
    """
    if not path.endswith((".npy", ".npz")):
        raise ValueError(f"code files must be .npy or .npz; got {path}.")
    loaded = _load_array(path, "codes")
    if isinstance(loaded, np.ndarray):
        return loaded, bits, None
    try:
        with loaded:
            return _read_npz_codes(loaded, path, bits)
    except (EOFError, OSError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(
            f"cannot read codes file {path}: a member is truncated or corrupt "
            f"({type(error).__name__}: {error})."
        ) from None
    except ValueError as error:
        if str(error).startswith(path):
            raise
        raise ValueError(f"cannot read codes file {path}: {error}") from None


def _read_npz_codes(loaded, path: str, bits: int | None):
    keys = set(loaded.files)
    ids = loaded["ids"] if "ids" in keys else None
    if "bits" in keys and bits is None:
        stored = loaded["bits"]
        if stored.shape != () or stored.dtype.kind not in "iu":
            raise ValueError(
                f"{path}: 'bits' must be one integer; got {stored.dtype} {stored.shape}."
            )
        bits = int(stored)
    if "codes" in keys:
        return loaded["codes"], bits, ids
    if "codes_packed" in keys:
        if bits is None:
            raise ValueError(f"{path} holds only codes_packed: pass --bits K (the code length).")
        return loaded["codes_packed"], bits, ids
    raise ValueError(f"{path} has no 'codes' or 'codes_packed' array (found: {sorted(keys)}).")


def load_ids(path: str) -> np.ndarray:
    """Reads ids from a ``.npy`` array or a text file with one id per line."""
    if path.endswith(".npy"):
        return _load_array(path, "ids")
    _check_regular(path, "ids")
    with open(path, encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle if line.strip()]
    return np.asarray(lines, dtype=str)


def _infer_bits(codes: np.ndarray, bits: int | None) -> int:
    if bits is not None:
        return bits
    return as_packed_codes(codes, None, "codes")[1]


def build(args: argparse.Namespace) -> int:
    codes, bits, ids = load_codes(args.codes, args.bits)
    if args.ids:
        ids = load_ids(args.ids)
    try:
        bits = _infer_bits(codes, bits)
        as_packed_codes(codes, bits, "codes")  # Checked before anything is written.
    except ValueError as error:
        raise ValueError(f"{args.codes}: {error}") from None
    stores.write_index(
        args.out, codes, bits=bits, ids=ids, backend=args.backend, overwrite=args.overwrite
    )
    index = stores.open_index(args.out)
    try:
        logging.info("Wrote %r to %s.", index, args.out)
        print(
            f"built {args.out}: {len(index)} codes of {bits} bits, "
            f"{type(index).__name__}, backend {index.backend}"
        )
    finally:
        _close(index)
    return 0


def _close(index) -> None:
    close = getattr(index, "close", None)  # Milvus indexes hold a client connection.
    if close is not None:
        close()


def query(args: argparse.Namespace) -> int:
    if (args.k is None) == (args.radius is None):
        raise ValueError("query needs exactly one of -k N (nearest neighbours) or --radius R.")
    if args.out and args.json:
        raise ValueError("pass at most one of --out and --json.")
    index = stores.open_index(args.index, backend=args.backend)
    try:
        return _query(args, index)
    finally:
        _close(index)


def _query(args: argparse.Namespace, index) -> int:
    codes, _, query_ids = load_codes(args.codes, index.bits)
    try:
        as_packed_codes(np.atleast_2d(codes), index.bits, "query codes")  # Checked up front.
    except ValueError as error:
        raise ValueError(f"{args.codes}: {error}") from None
    if args.k is not None:
        distances, ids = index.search(codes, args.k)
        rows = [(ids[i], distances[i]) for i in range(ids.shape[0])]
        arrays = {"distances": distances, "ids": ids}
    else:
        lims, distances, ids = index.range_search(codes, args.radius)
        rows = [
            (ids[lims[i] : lims[i + 1]], distances[lims[i] : lims[i + 1]])
            for i in range(len(lims) - 1)
        ]
        arrays = {"lims": lims, "distances": distances, "ids": ids}
    names = query_ids if query_ids is not None else np.arange(len(rows))
    if args.out:
        if query_ids is not None:
            arrays["query_ids"] = query_ids
        np.savez(args.out, **arrays)
        print(f"wrote {args.out}: {len(rows)} queries")
    elif args.json:
        for name, (row_ids, row_distances) in zip(names, rows, strict=True):
            print(
                json.dumps(
                    {
                        "query": name.item(),
                        "ids": row_ids.tolist(),
                        "distances": row_distances.tolist(),
                    }
                )
            )
    else:
        for name, (row_ids, row_distances) in zip(names, rows, strict=True):
            pairs = " ".join(
                f"{i}:{d}" for i, d in zip(row_ids.tolist(), row_distances.tolist(), strict=True)
            )
            print(f"{name}\t{pairs}")
    return 0


def info(args: argparse.Namespace) -> int:
    manifest_path = os.path.join(args.index, "manifest.json")
    index = HammingIndex.load(args.index)  # verifies the checksums
    with open(manifest_path) as handle:
        manifest = json.load(handle)
    manifest["loaded_with_backend"] = index.backend
    print(json.dumps(manifest, indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(
        prog="python -m tf_bihalf.search", description="Build and query exact Hamming indexes."
    )
    commands = main_parser.add_subparsers(dest="command", required=True)
    backend_choices = stores.INDEX_BACKENDS

    build_parser = commands.add_parser("build", help="build an index from a code file")
    build_parser.add_argument("--codes", required=True, help=".npy or .npz code file")
    build_parser.add_argument("--ids", help=".npy array or text file (one id per line)")
    build_parser.add_argument("--bits", type=int, help="code length K (needed for packed codes)")
    build_parser.add_argument(
        "--out", required=True, help="index directory, or a Milvus *.db file / server URI"
    )
    build_parser.add_argument("--backend", default="auto", choices=backend_choices)
    build_parser.add_argument("--overwrite", action="store_true", help="replace an existing index")
    build_parser.set_defaults(function=build)

    query_parser = commands.add_parser("query", help="search an index with query codes")
    query_parser.add_argument(
        "--index", required=True, help="index directory, or a Milvus *.db file / server URI"
    )
    query_parser.add_argument("--codes", required=True, help=".npy or .npz query code file")
    query_parser.add_argument("-k", type=int, help="number of nearest neighbours")
    query_parser.add_argument("--radius", type=int, help="Hamming radius (inclusive) instead of -k")
    query_parser.add_argument("--out", help="write results to this .npz")
    query_parser.add_argument("--json", action="store_true", help="print JSON lines")
    query_parser.add_argument("--backend", default=None, choices=backend_choices)
    query_parser.set_defaults(function=query)

    info_parser = commands.add_parser("info", help="print an index's manifest (checksums verified)")
    info_parser.add_argument("--index", required=True)
    info_parser.set_defaults(function=info)
    return main_parser


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    try:
        return arguments.function(arguments)
    except (ValueError, OSError) as error:  # OSError: FileNotFoundError, PermissionError...
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
