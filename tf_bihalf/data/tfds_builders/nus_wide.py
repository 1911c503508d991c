"""TFDS builder ``nus_wide``: NUS-WIDE images with their concept labels (manual download).

Importing this module registers the name ``nus_wide`` with TFDS. See ``base`` for the features
and the ``full`` split, and docs/datasets.md for the protocols (21 / 10 most frequent concepts).
The label width is whatever the files give: 81 from the owners' ground truth, 21 from the
common NUS-WIDE-21 list files.
"""

from __future__ import annotations

from tf_bihalf.data.tfds_builders import base


class NusWide(base.ManualImageCollection):
    """NUS-WIDE: about 270k Flickr images, 81 concepts (multi-hot)."""

    COLLECTION = "nus_wide"
    NUM_LABELS = None
    DESCRIPTION = (
        "NUS-WIDE (Chua et al., 2009): 269,648 Flickr image URLs with 81 concept labels. The "
        "images are not distributed by TFDS; many public copies miss some images, which are left "
        "out and counted in info.metadata['skipped']. One split, 'full', in image-list order."
    )
    HOMEPAGE = "https://lms.comp.nus.edu.sg/wp-content/uploads/2019/research/nuswide/NUS-WIDE.html"
    CITATION = """@inproceedings{nus-wide-civr09,
  author = {Tat-Seng Chua and Jinhui Tang and Richang Hong and Haojie Li and Zhiping Luo and
            Yan-Tao Zheng},
  title = {NUS-WIDE: A Real-World Web Image Database from National University of Singapore},
  booktitle = {ACM International Conference on Image and Video Retrieval},
  year = {2009}
}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
From the NUS-WIDE page (see the homepage) get the image list and ground truth:
  NUS-WIDE-urls / ImageList.zip   -> <manual_dir>/ImageList/Imagelist.txt
  Groundtruth.zip                 -> <manual_dir>/Groundtruth/AllLabels/Labels_<concept>.txt (81)
  Concepts81.txt (optional)       -> <manual_dir>/Concepts81.txt  (concept order; else by name)
and the images (from the owners on request, or a copy) under <manual_dir>/Flickr/<folder>/<file>.jpg,
the path of Imagelist.txt after its "C:\\ImageData\\" prefix.
Alternatively (or in the nus_wide/ sub-folder) a list file of the whole collection:
  <manual_dir>/all.txt   lines "relative/path.jpg l1 ... lC"
or the split lists of HashNet-style code, database.txt + test.txt, in the same format (pooled).
"""
