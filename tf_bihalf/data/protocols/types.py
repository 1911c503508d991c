"""The result types of a protocol: ``ImageSet`` (one split) and ``ProtocolSplits`` (all three)."""

from __future__ import annotations

import dataclasses

import numpy as np

SPLIT_NAMES = ("train", "query", "database")


@dataclasses.dataclass
class ImageSet:
    """One split of an image dataset.

    Attributes:
        labels: int64 (N,) class ids, or uint8 (N, C) multi-hot.
        paths: image files (file-based datasets), or None.
        images: uint8 (N, H, W, 3) RGB (in-memory datasets such as CIFAR-10), or None.
        indices: int64 (N,) position of each item in the dataset's full collection (the pooled
            60,000 images for CIFAR-10, the list / folder order otherwise), or None.
    """

    labels: np.ndarray
    paths: list[str] | None = None
    images: np.ndarray | None = None
    indices: np.ndarray | None = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels)
        if self.labels.ndim not in (1, 2):
            raise ValueError(
                f"labels must be class ids (N,) or multi-hot (N, C); got shape {self.labels.shape}."
            )
        count = len(self.labels)
        if self.paths is not None and len(self.paths) != count:
            raise ValueError(f"{len(self.paths)} paths but {count} labels.")
        if self.images is not None and (
            np.ndim(self.images) != 4 or np.shape(self.images)[-1] != 3 or len(self.images) != count
        ):
            raise ValueError(
                f"images must be uint8 (N, H, W, 3) with N = {count}; got {np.shape(self.images)}."
            )
        if self.indices is not None:
            self.indices = np.asarray(self.indices, dtype=np.int64)
            if self.indices.shape != (count,):
                raise ValueError(f"indices must have shape ({count},); got {self.indices.shape}.")

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(kw_only=True)
class ProtocolSplits:
    """The train / query / database splits of a dataset under a protocol.

    Constructed by keyword only (``ProtocolSplits(dataset=..., protocol=..., ...)``).

    Attributes:
        dataset, protocol, num_classes: what was loaded.
        train, query, database: the splits.
        report: counts (collection size, split sizes, excluded images per reason and per split),
            the rule used, the selected classes, and ``"warnings"``: the messages about a
            protocol that is degenerate or lost images (see ``tf_bihalf.data.protocols``).
        seed: the protocol seed.
        options: the protocol options used (JSON-serialisable).
        class_names: names of the classes (label columns), when known.
        image_root: directory the file paths are written relative to by ``write_splits``.
        excluded: per split, ``(path_or_index, reason)`` of the images removed because they are
            missing or unusable.
    """

    dataset: str
    protocol: str
    num_classes: int
    train: ImageSet
    query: ImageSet
    database: ImageSet
    report: dict
    seed: int = 0
    options: dict = dataclasses.field(default_factory=dict)
    class_names: list[str] | None = None
    image_root: str | None = None
    excluded: dict = dataclasses.field(default_factory=dict)

    def split(self, name: str) -> ImageSet:
        """The split called ``name`` ("train", "query" or "database")."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"Unknown split {name!r}; expected one of {SPLIT_NAMES}.")
        return getattr(self, name)
