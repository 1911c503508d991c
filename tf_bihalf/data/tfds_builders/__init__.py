"""TFDS builders for the manual-download image collections (Flickr25k, NUS-WIDE, MS-COCO).

The builder modules import ``tensorflow_datasets`` and register their names with TFDS when they
are imported; this package's ``__init__`` imports nothing so that the layout readers in
``manual_layouts`` stay light. Use the builders with:

>>> from tf_bihalf.data.tfds_builders import flickr25k  # doctest: +SKIP
>>> builder = flickr25k.Flickr25k(data_dir="~/tensorflow_datasets")  # doctest: +SKIP
>>> builder.download_and_prepare(  # doctest: +SKIP
...     download_config=tfds.download.DownloadConfig(manual_dir="/data/flickr25k"))
"""
