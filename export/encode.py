"""From an exported encoder to a searchable Hamming index, without writing code.

Encode a collection (and optionally build the index):

    python -m export.encode --saved_model DIR/NAME/N --images IMAGE_DIR --out codes.npz \\
        [--index_out INDEX_DIR] [--batch_size 64]
    python -m export.encode --saved_model DIR/NAME/N --list FILE --out codes.npz
    python -m export.encode --saved_model DIR/NAME/N --inputs X.npy --out codes.npz

Query it:

    python -m export.encode --saved_model DIR/NAME/N --query photo.jpg --index INDEX_DIR -k 10

``--images`` walks a directory (JPEG, PNG, BMP, GIF: the extensions training uses; ids are the
paths relative to it);
``--list`` reads a list file, one image per line, ``path [labels ...]`` (the hashing literature's
format; labels are ignored; relative paths are resolved against ``--image_root``, by default
the list file's directory; ids are the paths as written), with
``tf_bihalf.data.list_files.read_paths``. Images go through the SavedModel's
``image_bytes`` signature, so they are decoded and resized exactly as TF Serving would.
``--inputs`` takes a float ``.npy`` of raw model inputs (the autoencoder: ``(N, 784)`` pixels in
[0, 1]); ids are the row numbers.

``codes.npz`` holds ``codes`` (int8 ±1, (N, K)), ``codes_packed`` (uint8, (N, ceil(K/8)),
``numpy.packbits`` order), ``ids`` (unicode, (N,)), and ``skipped`` / ``skipped_reasons``
(unicode) for the images that could not be read or decoded, which are reported and left out.
No pickled objects: ``np.load(path)`` reads it with ``allow_pickle=False``.

``--index_out`` builds a ``tf_bihalf.search.HammingIndex`` over the packed codes with the ids
(strings) and saves it (a directory that ``python -m tf_bihalf.search`` reads too); ``--query``
with ``--index`` (any kind of index below, opened by ``tf_bihalf.search.stores.open_index``)
then prints ``query, rank, Hamming distance, id`` for the ``-k`` nearest items, ties broken by
id. Existing outputs are kept unless ``--overwrite``.

``--backend`` writes ``--index_out`` straight into another kind of index (default ``auto``: the
``HammingIndex`` directory above): ``sharded`` (memory-mapped shards, searched under a memory
budget) or ``milvus`` (``--index_out`` is a Milvus Lite ``*.db`` file or a server URI such as
``http://host:19530``; needs ``pip install 'tf_bihalf[milvus]'``); see ``docs/scale.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from export import preprocessing
from export.saved_model import SavedModelEncoder
from export.validation import check_float_inputs, load_float_array
from tf_bihalf.data.list_files import read_paths
from tf_bihalf.search import stores
from tf_bihalf.search.stores import INDEX_BACKENDS


@dataclasses.dataclass
class EncodedCollection:
    """Codes of a collection, with ids and the items that were skipped."""

    codes: np.ndarray
    codes_packed: np.ndarray
    ids: list[str]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def save(self, path: str) -> None:
        """Writes ``codes``, ``codes_packed``, ``ids``, ``skipped``, ``skipped_reasons`` (.npz)."""
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        np.savez(
            path,
            codes=self.codes.astype(np.int8),
            codes_packed=self.codes_packed.astype(np.uint8),
            ids=np.array(self.ids, dtype=str),
            skipped=np.array([item for item, _ in self.skipped], dtype=str),
            skipped_reasons=np.array([reason for _, reason in self.skipped], dtype=str),
        )


def _read_checked(path: str, max_file_bytes: int, max_pixels: int | None, dimensions) -> bytes:
    """The bytes of one image file, after the file and pixel checks (raises with the reason)."""
    data = preprocessing.read_image_file(path, max_file_bytes)
    if max_pixels is not None:
        width, height = (int(value) for value in dimensions(data))
        if width * height > max_pixels:
            raise preprocessing.ImageFileError(
                f"{path} declares {width}x{height} = {width * height} pixels, more than the "
                f"limit max_pixels={max_pixels}."
            )
    return data


def encode_image_files(
    encoder: SavedModelEncoder,
    paths: list[str],
    ids: list[str] | None = None,
    batch_size: int = 64,
    progress: bool = True,
    max_file_bytes: int = preprocessing.DEFAULT_MAX_FILE_BYTES,
    max_pixels: int | None = None,
) -> EncodedCollection:
    """Encodes image files with the ``image_bytes`` signature; unusable ones are skipped.

    Each file is read with ``preprocessing.read_image_file`` (regular files only: a FIFO or
    device named ``x.jpg`` is refused without being read; at most ``max_file_bytes``). With
    ``max_pixels``, an image whose header declares more pixels is refused before it is sent; the
    signature applies the limit it was exported with in any case. A batch that fails to encode
    is retried one image at a time; the images that still fail end up in ``skipped`` with the
    reason, and a warning is logged for each.

    Raises:
      ValueError: not an image model, a bad ``batch_size``, or no image could be encoded.
    """
    if not encoder.has_image_bytes:
        raise ValueError(
            "This encoder takes raw float inputs, not images (no image_bytes signature): pass "
            "--inputs FILE.npy (for the autoencoder: (N, 784) pixels in [0, 1])."
        )
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}.")
    if max_pixels is not None and int(max_pixels) < 1:
        raise ValueError(f"max_pixels must be positive; got {max_pixels}.")
    if int(max_file_bytes) < 1:
        raise ValueError(f"max_file_bytes must be positive; got {max_file_bytes}.")
    dimensions = tf.function(
        preprocessing.image_dimensions, input_signature=[tf.TensorSpec([], tf.string)]
    )
    ids = list(paths) if ids is None else list(ids)
    if len(ids) != len(paths):
        raise ValueError(f"Got {len(ids)} ids for {len(paths)} images.")
    kept_ids, codes, packed, skipped = [], [], [], []
    bar = keras.utils.Progbar(len(paths), unit_name="image") if progress else None
    for start in range(0, len(paths), int(batch_size)):
        batch_ids, batch_bytes = [], []
        for item_id, path in zip(
            ids[start : start + batch_size], paths[start : start + batch_size], strict=True
        ):
            try:
                batch_bytes.append(_read_checked(path, max_file_bytes, max_pixels, dimensions))
                batch_ids.append(item_id)
            except (OSError, ValueError, tf.errors.OpError) as error:
                skipped.append((item_id, preprocessing.short_reason(error)))
        if batch_bytes:
            try:
                outputs = encoder.encode_images(batch_bytes, batch_size=len(batch_bytes))
                results = [(batch_ids, outputs)]
            except ValueError:
                results = []
                for item_id, data in zip(batch_ids, batch_bytes, strict=True):
                    try:
                        results.append(([item_id], encoder.encode_images([data])))
                    except ValueError as error:
                        skipped.append((item_id, str(error)))
            for result_ids, outputs in results:
                kept_ids.extend(result_ids)
                codes.append(outputs["codes"])
                packed.append(outputs["codes_packed"])
        if bar is not None:
            bar.update(min(start + batch_size, len(paths)))
    for item_id, reason in skipped:
        logging.warning("Skipped %s: %s", item_id, reason)
    if not kept_ids:
        examples = "; ".join(f"{item_id}: {reason}" for item_id, reason in skipped[:3])
        raise ValueError(
            f"None of the {len(paths)} images could be read and encoded (for example {examples})."
        )
    return EncodedCollection(np.concatenate(codes), np.concatenate(packed), kept_ids, skipped)


def encode_inputs(encoder: SavedModelEncoder, inputs, batch_size: int = 256) -> EncodedCollection:
    """Encodes a float array of raw model inputs; ids are the row numbers."""
    inputs = check_float_inputs(inputs, encoder.input_shape)
    outputs = encoder.encode(inputs, batch_size=batch_size)
    ids = [str(index) for index in range(len(inputs))]
    return EncodedCollection(outputs["codes"], outputs["codes_packed"], ids)


def build_index(
    collection: EncodedCollection,
    bits: int,
    directory: str,
    overwrite: bool = False,
    backend: str = "auto",
) -> str:
    """Writes the packed codes, with the collection's ids (strings), into an index at
    ``directory`` with ``tf_bihalf.search.stores.write_index``: a ``HammingIndex`` directory for
    ``auto`` (``python -m tf_bihalf.search`` reads it too), or another kind of
    ``INDEX_BACKENDS`` (a sharded directory; a Milvus ``*.db`` file or URI for ``milvus``)."""
    return stores.write_index(
        directory,
        collection.codes_packed,
        bits=bits,
        ids=np.array(collection.ids, dtype=str),
        backend=backend,
        overwrite=overwrite,
    )


def search_index(
    directory: str, query_packed: np.ndarray, bits: int, k: int
) -> list[list[tuple[int, str]]]:
    """Opens the index at ``directory`` with ``tf_bihalf.search.stores.open_index`` (a
    ``HammingIndex`` or sharded directory, a Milvus ``*.db`` file or URI) and returns, per packed
    query code, the ``k`` nearest items as ``(Hamming distance, id)`` pairs, nearest first (ties
    by id)."""
    if isinstance(k, bool) or int(k) < 1:
        raise ValueError(f"k must be positive; got {k}.")
    index = stores.open_index(directory)
    try:
        if index.bits != int(bits):
            raise ValueError(
                f"The index in {directory!r} holds {index.bits}-bit codes but this encoder makes "
                f"{bits}-bit codes: query with the encoder that built the index."
            )
        distances, ids = index.search(query_packed, int(k))
    finally:
        close = getattr(index, "close", None)  # Milvus indexes hold a client connection.
        if close is not None:
            close()
    return [
        [(int(distance), str(item)) for distance, item in zip(row_distances, row_ids, strict=True)]
        for row_distances, row_ids in zip(distances, ids, strict=True)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.encode",
        description="Encode images or inputs with an exported encoder; build or query an index.",
    )
    parser.add_argument("--saved_model", required=True, help="exported version dir DIR/NAME/N")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="directory of images (recursive)")
    source.add_argument("--list", help="list file: one 'path [labels ...]' per line")
    source.add_argument("--inputs", help="float .npy of raw model inputs")
    source.add_argument("--query", nargs="+", help="query image(s) to look up in --index")
    parser.add_argument("--image_root", default=None, help="root for --list's relative paths")
    parser.add_argument("--out", default=None, help="codes .npz to write")
    parser.add_argument("--index_out", default=None, help="also build a Hamming index here")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=INDEX_BACKENDS,
        help="kind of index --index_out writes (sharded: a directory; milvus: a .db file or URI)",
    )
    parser.add_argument("--index", default=None, help="index directory to query")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out file / --index_out"
    )
    parser.add_argument("-k", "--k", type=int, default=10, help="neighbours per query")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument(
        "--max_file_bytes",
        type=int,
        default=preprocessing.DEFAULT_MAX_FILE_BYTES,
        help="larger image files are skipped without being read",
    )
    parser.add_argument(
        "--max_pixels",
        type=int,
        default=None,
        help="images whose header declares more pixels are skipped before decoding (default: "
        "the limit the SavedModel was exported with)",
    )
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    querying = args.query is not None or args.index is not None
    if querying and (args.index is None or args.out is not None or args.index_out is not None):
        parser.error("query with --query IMAGE... (or --inputs X.npy) --index DIR, without --out")
    if not querying and args.out is None:
        parser.error("--out codes.npz is required to encode a collection")
    if not querying and not args.out.endswith(".npz"):
        parser.error("--out must end with .npz")
    if not querying and not args.overwrite:
        for path in (args.out, args.index_out):
            if (
                path is not None
                and os.path.exists(path)
                and (not os.path.isdir(path) or os.listdir(path))
            ):
                parser.exit(2, f"error: {path!r} exists; pass --overwrite to replace it.\n")
    if args.batch_size < 1:
        parser.error("--batch_size must be positive")
    if args.max_file_bytes < 1 or (args.max_pixels is not None and args.max_pixels < 1):
        parser.error("--max_file_bytes and --max_pixels must be positive")
    limits = {"max_file_bytes": args.max_file_bytes, "max_pixels": args.max_pixels}
    try:
        encoder = SavedModelEncoder(args.saved_model)
        if args.inputs is not None:
            collection = encode_inputs(encoder, load_float_array(args.inputs), args.batch_size)
        elif args.images is not None:
            relative = preprocessing.list_images(args.images)
            if not relative:
                raise ValueError(
                    f"No images ({', '.join(preprocessing.IMAGE_EXTENSIONS)}) in {args.images!r}."
                )
            paths = [os.path.join(args.images, path) for path in relative]
            collection = encode_image_files(encoder, paths, relative, args.batch_size, **limits)
        elif args.list is not None:
            ids, paths = read_paths(args.list, args.image_root)
            collection = encode_image_files(encoder, paths, ids, args.batch_size, **limits)
        else:
            collection = encode_image_files(
                encoder, args.query, args.query, args.batch_size, progress=False, **limits
            )
        if querying:
            neighbours = search_index(args.index, collection.codes_packed, encoder.bits, args.k)
            print("query\trank\tdistance\tid")
            for query_id, row in zip(collection.ids, neighbours, strict=True):
                for rank, (distance, name) in enumerate(row, start=1):
                    print(f"{query_id}\t{rank}\t{distance}\t{name}")
        else:
            collection.save(args.out)
            if args.index_out is not None:
                build_index(
                    collection,
                    encoder.bits,
                    args.index_out,
                    overwrite=args.overwrite,
                    backend=args.backend,
                )
            print(
                f"encoded {len(collection.ids)} items ({encoder.bits} bits) -> {args.out}; "
                f"skipped {len(collection.skipped)}"
            )
            if args.index_out is not None:
                print(f"index -> {args.index_out}")
        for item_id, reason in collection.skipped:
            print(f"skipped\t{item_id}\t{reason}")
    except (OSError, ValueError) as error:  # FileNotFoundError, FileExistsError are OSErrors.
        parser.exit(2, f"error: {error}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
