"""Shared TFDS builder for the manual-download multi-label image collections.

A concrete builder names its collection (``flickr25k``, ``nus_wide``, ``mscoco``), its number of
label columns and its download instructions. It reads ``dl_manager.manual_dir`` (or its
``<name>/`` sub-folder when there is one) with ``manual_layouts.read_collection`` and writes one
split, ``full``: every usable image of the collection, in collection order, with

- ``image``: the encoded file as it is (JPEG/PNG/BMP; GIF re-encoded as PNG of its first frame),
  decoded by TFDS to uint8 (H, W, 3) RGB;
- ``labels``: uint8 multi-hot (C,);
- ``file_name``: the path relative to the collection directory;
- ``index``: the position in the collection (what ``load_protocol`` reports as ``indices``).

The paper's query / database / train protocols are not TFDS splits: apply them with
``tf_bihalf.data.protocols`` (``load_protocol`` reads the same files directly) or select by
``index``. Images whose file is missing or unusable (the checks of ``load_protocol``'s default
``verify="decode"``: a regular file within the size cap, a readable header within the pixel cap,
a full TensorFlow decode) are left out of ``full``; their number and the first file names are
logged and stored in ``builder.info.metadata["skipped"]``.
"""

from __future__ import annotations

import io
import os

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from tf_bihalf.data.tfds_builders import manual_layouts


class ManualImageCollection(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class: set ``COLLECTION``, ``NUM_LABELS`` (None: any), ``DESCRIPTION``,
    ``HOMEPAGE``, ``CITATION`` and ``MANUAL_DOWNLOAD_INSTRUCTIONS``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: one split, full, holding the whole collection."}
    COLLECTION = ""
    NUM_LABELS: int | None = None
    DESCRIPTION = ""
    HOMEPAGE = ""
    CITATION = ""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "labels": tfds.features.Tensor(shape=(self.NUM_LABELS,), dtype=np.uint8),
                    "file_name": tfds.features.Text(),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=("image", "labels"),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            metadata=tfds.core.MetadataDict(),
        )

    def _collection_root(self, manual_dir) -> str:
        root = os.fspath(manual_dir)
        nested = os.path.join(root, self.COLLECTION)
        return nested if os.path.isdir(nested) else root

    def _split_generators(self, dl_manager):
        from tf_bihalf.data.protocols import check_image_files

        root = self._collection_root(dl_manager.manual_dir)
        collection = manual_layouts.read_collection(self.COLLECTION, root)
        width = collection.labels.shape[1]
        if self.NUM_LABELS is not None and width != self.NUM_LABELS:
            raise ValueError(
                f"{self.COLLECTION}: the files in {root!r} give {width} label columns; this "
                f"builder expects {self.NUM_LABELS}."
            )
        failures = check_image_files(collection.paths)
        if failures:
            examples = [collection.paths[index] for index in sorted(failures)[:5]]
            logging.warning(
                "%s: %d of %d images are missing or unreadable and are left out: %s ...",
                self.COLLECTION,
                len(failures),
                len(collection),
                examples,
            )
        self.info.metadata.update(
            {
                "source": collection.source,
                "class_names": collection.class_names,
                "collection_size": len(collection),
                "skipped": {
                    "count": len(failures),
                    "first": [
                        os.path.relpath(collection.paths[index], collection.image_root)
                        for index in sorted(failures)[:100]
                    ],
                },
            }
        )
        return {"full": self._generate_examples(collection, set(failures))}

    def _generate_examples(self, collection, skipped):
        for index, (path, labels) in enumerate(
            zip(collection.paths, collection.labels, strict=True)
        ):
            if index in skipped:
                continue
            yield (
                index,
                {
                    "image": _encoded_image(path),
                    "labels": labels,
                    "file_name": os.path.relpath(path, collection.image_root),
                    "index": index,
                },
            )


def _encoded_image(path: str):
    """The file's bytes, or a PNG of the first frame for GIF (TFDS decodes GIFs as 4-D)."""
    from PIL import Image

    with open(path, "rb") as handle:
        data = handle.read()
    if data[:6] in (b"GIF87a", b"GIF89a"):
        with Image.open(io.BytesIO(data)) as image:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
            return buffer.getvalue()
    return data
