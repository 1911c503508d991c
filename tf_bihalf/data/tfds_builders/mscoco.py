"""TFDS builder ``mscoco``: MS-COCO 2014 train+val images with 80 category labels (manual).

Importing this module registers the name ``mscoco`` with TFDS (TFDS' own ``coco`` builder is
about detection and downloads; this one gives the multi-label retrieval collection). See
``base`` for the features and the ``full`` split. The collection holds every image of train2014
and val2014, including those without any object (all-zero labels); the paper's pruned set of
122,218 images is what ``load_protocol("mscoco")`` keeps after dropping those.
"""

from __future__ import annotations

from tf_bihalf.data.tfds_builders import base


class Mscoco(base.ManualImageCollection):
    """MS-COCO 2014 for retrieval: 80 categories (multi-hot)."""

    COLLECTION = "mscoco"
    NUM_LABELS = 80
    DESCRIPTION = (
        "MS-COCO 2014 (Lin et al., 2014) train2014 + val2014 images with multi-hot labels of the "
        "80 object categories (ascending category id). One split, 'full': train2014 images by "
        "image id, then val2014 images by image id (or the order of the given list files)."
    )
    HOMEPAGE = "https://cocodataset.org/"
    CITATION = """@inproceedings{lin2014microsoft,
  author = {Tsung-Yi Lin and Michael Maire and Serge Belongie and others},
  title = {Microsoft COCO: Common Objects in Context},
  booktitle = {European Conference on Computer Vision},
  year = {2014}
}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download from https://cocodataset.org/#download
  train2014.zip, val2014.zip            -> <manual_dir>/train2014/*.jpg, <manual_dir>/val2014/*.jpg
  annotations_trainval2014.zip          -> <manual_dir>/annotations/instances_train2014.json
                                           <manual_dir>/annotations/instances_val2014.json
Alternatively (or in the mscoco/ sub-folder) a list file of the collection:
  <manual_dir>/all.txt   lines "relative/path.jpg l1 ... l80"
or the split lists of HashNet-style code (the pruned 122,218-image set), database.txt +
test.txt, in the same format (pooled; give image paths relative to the directory).
"""
