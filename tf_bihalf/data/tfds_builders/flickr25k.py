"""TFDS builder ``flickr25k``: MIRFlickr-25k with the 24 concept labels (manual download).

Importing this module registers the name ``flickr25k`` with TFDS. See ``base`` for the features
and the ``full`` split, and docs/datasets.md for the protocol.

Example:

>>> from tf_bihalf.data.tfds_builders.flickr25k import Flickr25k      # doctest: +SKIP
>>> builder = Flickr25k(data_dir="~/tensorflow_datasets")              # doctest: +SKIP
>>> builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
...     manual_dir="/data/manual"))                                     # doctest: +SKIP
>>> dataset = builder.as_dataset(split="full")                          # doctest: +SKIP
"""

from __future__ import annotations

from tf_bihalf.data.tfds_builders import base


class Flickr25k(base.ManualImageCollection):
    """MIRFlickr-25k: 25,000 Flickr images, 24 concept labels (multi-hot)."""

    COLLECTION = "flickr25k"
    NUM_LABELS = 24
    DESCRIPTION = (
        "MIRFlickr-25k (Huiskes and Lew, 2008): 25,000 Flickr images with 24 potential concept "
        "labels (animals, baby, ..., water; the *_r1 'relevant' files are not used). Labels in "
        "alphabetical concept order. One split, 'full'."
    )
    HOMEPAGE = "https://press.liacs.nl/mirflickr/"
    CITATION = """@inproceedings{huiskes08,
  author = {Mark J. Huiskes and Michael S. Lew},
  title = {The MIR Flickr Retrieval Evaluation},
  booktitle = {ACM International Conference on Multimedia Information Retrieval},
  year = {2008}
}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download from https://press.liacs.nl/mirflickr/mirdownload.html
  mirflickr25k.zip                     (the images)
  mirflickr25k_annotations_v080.zip    (the concept annotations)
and extract both into the manual directory (or its flickr25k/ sub-folder), giving:
  <manual_dir>/mirflickr/im1.jpg ... im25000.jpg
  <manual_dir>/mirflickr25k_annotations_v080/animals.txt ... water.txt  (24 files, 1-based
      image numbers; the *_r1.txt files may stay, they are not read)
Alternatively put a list file of the whole collection in the directory:
  <manual_dir>/all.txt   lines "relative/path.jpg l1 ... l24"
or the split lists of HashNet-style code, database.txt + test.txt, in the same format (pooled).
"""
