"""Image datasets and the paper's retrieval protocols: query / database / train splits.

``load_protocol(dataset, data_dir, protocol, seed, **options)`` returns a ``ProtocolSplits``
with three ``ImageSet`` splits. Each dataset registers its loader by name
(``registry.register``); the rules use one ``np.random.RandomState(seed)``, so a split is fully
determined by the labels, the seed and the options, and is returned in ascending collection
order (``docs/paper.md``, "Dataset protocols"; ``docs/datasets.md``).

Modules:

- ``types``: ``ImageSet``, ``ProtocolSplits`` (built by keyword).
- ``split_rules``: the seeded rules (per class, random, per-label queries, most frequent
  concepts).
- ``file_checks``: threaded checks of image files (exists / header / decode), decode results
  cached by content hash.
- ``assemble``: exclusion of unusable files, the report and its warnings.
- ``split_files``: ``write_splits`` / ``verify_splits`` (list files and checksummed manifest).
- ``registry``: ``register``, ``load_protocol``.
- one module per dataset family: ``cifar10``, ``fashion_mnist_rgb``, ``manual_collections``
  (flickr25k, nus_wide, mscoco), ``folder`` (``folder:<dir>``), ``list_file``
  (``list:<file>``).

Unusable images. File-based datasets check every image a split drew (option ``verify``,
default ``"decode"``: TensorFlow decodes it exactly as the input pipeline will, after the
regular-file, size and header pixel-count checks of ``tf_bihalf.data.image_files``). Images that
fail are removed from their splits, counted per reason in ``report``, logged with their file
names, kept in ``ProtocolSplits.excluded`` and written to ``excluded.txt`` by ``write_splits``;
``on_missing="raise"`` makes any of them an error instead. Options: ``verify`` ("none",
"exists", "header", "decode"), ``on_missing``, ``max_pixels`` (50,000,000), ``max_file_bytes``
(256 MiB), ``max_excluded_fraction`` (0.05, the share of a split whose loss is warned about),
``check_cache_dir`` (where decode results are cached; False: no cache).

Example:

>>> splits = load_protocol("cifar10", protocol="I")      # doctest: +SKIP
>>> len(splits.query), len(splits.database), len(splits.train)   # doctest: +SKIP
(10000, 50000, 50000)
>>> write_splits(splits, "runs/cifar/splits")            # doctest: +SKIP
"""

from tf_bihalf.data.protocols import (  # noqa: F401 - each module registers its datasets
    cifar10,
    fashion_mnist_rgb,
    folder,
    list_file,
    manual_collections,
)
from tf_bihalf.data.protocols.cifar10 import load_cifar10_pool
from tf_bihalf.data.protocols.file_checks import FileProblem, check_image_files
from tf_bihalf.data.protocols.registry import load_protocol, register, registered_names
from tf_bihalf.data.protocols.split_files import (
    MANIFEST_NAME,
    render_split_files,
    verify_splits,
    write_splits,
)
from tf_bihalf.data.protocols.types import SPLIT_NAMES, ImageSet, ProtocolSplits

__all__ = [
    "MANIFEST_NAME",
    "SPLIT_NAMES",
    "FileProblem",
    "ImageSet",
    "ProtocolSplits",
    "check_image_files",
    "load_cifar10_pool",
    "load_protocol",
    "register",
    "registered_names",
    "render_split_files",
    "verify_splits",
    "write_splits",
]
