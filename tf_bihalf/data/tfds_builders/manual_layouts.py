"""Readers for the on-disk layouts of the manual-download image collections.

Each reader turns a directory into a ``Collection``: every image of the collection in a fixed,
documented order, with its multi-hot labels. The protocols (``tf_bihalf.data.protocols``)
and the TFDS builders (this package) both start from a ``Collection``. A directory is read by the
first of these that applies:

1. an explicit list file (``list_file=...``): ``path l1 ... lC`` lines;
2. ``all.txt`` in the directory: the whole collection as one list file;
3. ``database.txt`` + ``test.txt`` (+ optional ``train.txt``, a subset of the database), the split
   lists distributed with HashNet/DCH-style code: pooled as database lines then test lines,
   duplicates (same path) kept once, then re-split by the protocol;
4. the owners' own layout:

   - Flickr25k (MIRFlickr-25k): ``mirflickr/im1.jpg ... im25000.jpg`` and the 24 annotation files
     ``<concept>.txt`` (1-based image numbers, one per line; the ``*_r1.txt`` "relevant" files are
     not used) in ``mirflickr25k_annotations_v080/``, ``annotations/`` or the directory itself.
     The collection is ``im1 .. imN`` with N the largest image number seen in either place.
   - NUS-WIDE: ``ImageList/Imagelist.txt`` (one image per line, Windows paths such as
     ``C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg``; everything up to ``ImageData\\`` is
     dropped, so the image is read from ``Flickr/actor/0001_2124494179.jpg``),
     ``Groundtruth/AllLabels/Labels_<concept>.txt`` (one 0/1 per image, in list order) and
     optionally ``Concepts81.txt`` (the concept order; otherwise concepts sort by name).
   - MS-COCO 2014: ``annotations/instances_train2014.json`` and ``instances_val2014.json`` with
     images in ``train2014/`` and ``val2014/``. Labels: the 80 categories in ascending category id.
     Order: train2014 images by ascending image id, then val2014 images by ascending image id.
     Images without any annotated object are part of the collection with an all-zero label (the
     ``mscoco`` protocol drops them, giving the pruned 122,218-image set).

Paths in list files are relative to ``image_root`` (default: the directory being read); a
machine-specific prefix can be removed with ``strip_prefix``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np

from tf_bihalf.data import list_files

FLICKR25K_CONCEPTS = (
    "animals",
    "baby",
    "bird",
    "car",
    "clouds",
    "dog",
    "female",
    "flower",
    "food",
    "indoor",
    "lake",
    "male",
    "night",
    "people",
    "plant_life",
    "portrait",
    "river",
    "sea",
    "sky",
    "structures",
    "sunset",
    "transport",
    "tree",
    "water",
)

COLLECTIONS = ("flickr25k", "nus_wide", "mscoco")


@dataclasses.dataclass
class Collection:
    """All images of a collection, in a fixed order.

    Attributes:
        paths: image paths (joined with ``image_root``).
        labels: uint8 (N, C) multi-hot labels.
        class_names: C names, or None when the source does not name its classes.
        image_root: the directory paths are relative to (used to write portable split files).
        source: which layout was read (for reports).
    """

    paths: list[str]
    labels: np.ndarray
    class_names: list[str] | None
    image_root: str
    source: str

    def __len__(self) -> int:
        return len(self.paths)


def read_collection(
    name: str,
    root: str,
    list_file: str | None = None,
    image_root: str | None = None,
    strip_prefix: str | None = None,
) -> Collection:
    """Reads collection ``name`` (flickr25k | nus_wide | mscoco) from directory ``root``.

    See the module docstring for the layouts tried, in order.

    Raises:
        FileNotFoundError: ``root`` or the files a layout needs do not exist.
        ValueError: ``name`` unknown, or malformed files.
    """
    if name not in COLLECTIONS:
        raise ValueError(f"Unknown collection {name!r}; expected one of {COLLECTIONS}.")
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"Data directory {root!r} for {name} does not exist. See docs/datasets.md for the "
            "files to download and where to put them."
        )
    image_root = image_root or root
    if list_file is not None:
        if not os.path.isabs(list_file) and not os.path.isfile(list_file):
            list_file = os.path.join(root, list_file)
        return _from_lists(name, [list_file], image_root, strip_prefix)
    if os.path.isfile(os.path.join(root, "all.txt")):
        return _from_lists(name, [os.path.join(root, "all.txt")], image_root, strip_prefix)
    database, test = os.path.join(root, "database.txt"), os.path.join(root, "test.txt")
    if os.path.isfile(database) and os.path.isfile(test):
        return _from_lists(name, [database, test], image_root, strip_prefix)
    reader = {"flickr25k": _read_flickr25k, "nus_wide": _read_nus_wide, "mscoco": _read_mscoco}
    return reader[name](root, image_root)


def _from_lists(name, paths, image_root, strip_prefix) -> Collection:
    all_paths: list[str] = []
    all_labels: list[np.ndarray] = []
    seen: set[str] = set()
    width = None
    for path in paths:
        entries = list_files.read_list_file(
            path, label_format="multi_hot", image_root=image_root, strip_prefix=strip_prefix
        )
        if width is not None and entries.labels.shape[1] != width:
            raise ValueError(
                f"{path} has {entries.labels.shape[1]} label columns but {paths[0]} has {width}."
            )
        width = entries.labels.shape[1]
        keep = []
        for row, item in enumerate(entries.paths):
            if item not in seen:
                seen.add(item)
                keep.append(row)
        all_paths.extend(entries.paths[row] for row in keep)
        all_labels.append(entries.labels[keep])
    source = "list files " + ", ".join(os.path.basename(path) for path in paths)
    class_names = list(FLICKR25K_CONCEPTS) if name == "flickr25k" and width == 24 else None
    return Collection(all_paths, np.concatenate(all_labels), class_names, image_root, source)


def _read_flickr25k(root: str, image_root: str) -> Collection:
    image_dir = os.path.join(root, "mirflickr")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(
            f"Flickr25k: found neither a list file (all.txt, database.txt + test.txt) nor the "
            f"image folder {image_dir!r} in {root!r}. See docs/datasets.md."
        )
    annotation_dir = None
    for candidate in ("mirflickr25k_annotations_v080", "annotations", "."):
        directory = os.path.normpath(os.path.join(root, candidate))
        if os.path.isfile(os.path.join(directory, FLICKR25K_CONCEPTS[0] + ".txt")):
            annotation_dir = directory
            break
    if annotation_dir is None:
        raise FileNotFoundError(
            f"Flickr25k: annotation files (animals.txt, ..., water.txt from "
            f"mirflickr25k_annotations_v080.zip) not found under {root!r}."
        )
    members: dict[str, list[int]] = {}
    largest = 0
    for concept in FLICKR25K_CONCEPTS:
        path = os.path.join(annotation_dir, concept + ".txt")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Flickr25k: annotation file {path!r} is missing.")
        numbers = []
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                text = line.strip()
                if not text:
                    continue
                if not text.isdigit() or int(text) < 1:
                    raise ValueError(
                        f"{path}:{line_number}: expected a 1-based image number, got {text!r}."
                    )
                numbers.append(int(text))
        members[concept] = numbers
        largest = max([largest, *numbers])
    pattern = re.compile(r"^im(\d+)\.jpg$")
    for entry in os.listdir(image_dir):
        match = pattern.match(entry)
        if match:
            largest = max(largest, int(match.group(1)))
    labels = np.zeros((largest, len(FLICKR25K_CONCEPTS)), dtype=np.uint8)
    for column, concept in enumerate(FLICKR25K_CONCEPTS):
        labels[np.asarray(members[concept], dtype=np.int64) - 1, column] = 1
    paths = [os.path.join(image_dir, f"im{number}.jpg") for number in range(1, largest + 1)]
    return Collection(paths, labels, list(FLICKR25K_CONCEPTS), image_root, "mirflickr owner layout")


def _read_nus_wide(root: str, image_root: str) -> Collection:
    list_path = os.path.join(root, "ImageList", "Imagelist.txt")
    label_dir = os.path.join(root, "Groundtruth", "AllLabels")
    if not os.path.isfile(list_path) or not os.path.isdir(label_dir):
        raise FileNotFoundError(
            f"NUS-WIDE: found neither a list file (all.txt, database.txt + test.txt) nor the "
            f"owner layout (ImageList/Imagelist.txt and Groundtruth/AllLabels/) in {root!r}. "
            "See docs/datasets.md."
        )
    paths = []
    with open(list_path, encoding="utf-8") as handle:
        for line in handle:
            text = line.strip().replace("\\", "/")
            if not text:
                continue
            marker = text.find("ImageData/")
            if marker >= 0:
                text = text[marker + len("ImageData/") :]
            paths.append(text if os.path.isabs(text) else os.path.join(image_root, text))
    concepts_path = os.path.join(root, "Concepts81.txt")
    files = sorted(
        entry[len("Labels_") : -len(".txt")]
        for entry in os.listdir(label_dir)
        if entry.startswith("Labels_") and entry.endswith(".txt")
    )
    if os.path.isfile(concepts_path):
        with open(concepts_path, encoding="utf-8") as handle:
            concepts = [line.strip() for line in handle if line.strip()]
        missing = [concept for concept in concepts if concept not in files]
        if missing:
            raise FileNotFoundError(
                f"NUS-WIDE: label files missing in {label_dir!r} for concepts {missing[:5]}."
            )
    else:
        concepts = files
    if not concepts:
        raise FileNotFoundError(f"NUS-WIDE: no Labels_<concept>.txt files in {label_dir!r}.")
    labels = np.zeros((len(paths), len(concepts)), dtype=np.uint8)
    for column, concept in enumerate(concepts):
        path = os.path.join(label_dir, f"Labels_{concept}.txt")
        with open(path, encoding="utf-8") as handle:
            values = [line.strip() for line in handle if line.strip()]
        if len(values) != len(paths):
            raise ValueError(
                f"{path} has {len(values)} values but {list_path} lists {len(paths)} images."
            )
        bad = [index for index, value in enumerate(values) if value not in ("0", "1")]
        if bad:
            raise ValueError(f"{path}: value {values[bad[0]]!r} (entry {bad[0] + 1}) is not 0/1.")
        labels[:, column] = np.asarray(values) == "1"
    return Collection(paths, labels, concepts, image_root, "NUS-WIDE owner layout")


def _read_mscoco(root: str, image_root: str) -> Collection:
    annotation_dir = os.path.join(root, "annotations")
    parts = [("train2014", "instances_train2014.json"), ("val2014", "instances_val2014.json")]
    if not all(os.path.isfile(os.path.join(annotation_dir, file)) for _, file in parts):
        raise FileNotFoundError(
            f"MS-COCO: found neither a list file (all.txt, database.txt + test.txt) nor "
            f"annotations/instances_train2014.json and instances_val2014.json in {root!r}. "
            "See docs/datasets.md."
        )
    paths: list[str] = []
    rows: list[np.ndarray] = []
    category_ids = None
    for folder, file in parts:
        with open(os.path.join(annotation_dir, file), encoding="utf-8") as handle:
            data = json.load(handle)
        ids = sorted(int(category["id"]) for category in data["categories"])
        names = {int(category["id"]): category["name"] for category in data["categories"]}
        if category_ids is None:
            category_ids = ids
            class_names = [names[category] for category in ids]
            column_of = {category: column for column, category in enumerate(ids)}
        elif ids != category_ids:
            raise ValueError(f"MS-COCO: {file} has different categories than the train file.")
        images = sorted(data["images"], key=lambda image: int(image["id"]))
        row_of = {int(image["id"]): row for row, image in enumerate(images)}
        labels = np.zeros((len(images), len(category_ids)), dtype=np.uint8)
        for annotation in data["annotations"]:
            row = row_of.get(int(annotation["image_id"]))
            if row is not None:
                labels[row, column_of[int(annotation["category_id"])]] = 1
        paths.extend(os.path.join(image_root, folder, image["file_name"]) for image in images)
        rows.append(labels)
    return Collection(
        paths, np.concatenate(rows), class_names, image_root, "COCO 2014 owner layout"
    )
