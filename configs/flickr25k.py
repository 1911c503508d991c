"""Flickr25k (MIRFlickr-25k): VGG16 (ImageNet, frozen) + Bi-half, cosine loss, mAP@All.

Command (the images and annotations in a manual directory, see docs/datasets.md):
    python -m trainers.image --dataset=flickr25k --bits=64 --data_dir=DIR --workdir=runs/flickr_64

Follows the reference code (docs/paper.md, "Settings"): SGD lr 1e-4, momentum 0.9, coupled L2 5e-4, batch 32,
x0.1 every 60 epochs, 100 epochs; VGG16 frozen with dropout(0.5) after fc6 and fc7 in training,
Linear(4096, K) head, gamma numerator 6, half-batch cosine loss. Protocol: 2,000 random queries,
5,000 training images from the rest, database = everything but the queries, 24 labels
(relevant = at least one shared label); the 419 unlabeled images stay in the collection as the
reference keeps them (a query without labels scores AP 0). Metric: mAP@All (stable ties).

Paper mAP@All (%), Bi-half, 16 / 32 / 64 bits: 71.42 / 72.35 / 73.10 (GreedyHash 62.36 / 63.12 /
63.41). Not measured by this project (no copy of MIRFlickr or the ImageNet VGG16 weights on its
machines).

Expected wall time: feature extraction over 25,000 images at 224 px (minutes on a GPU, hours on a
2-core CPU), then 100 epochs x 156 steps on cached features (a few minutes on a GPU, about 10-20
minutes on 2 CPU cores) and the 2,000 x 23,000 evaluation (seconds).

This config is also the default for users' own collections (``--dataset=folder:DIR`` or
``list:FILE``), with its protocol options dropped.
"""

from __future__ import annotations

from configs._image import image_config, smoke_variant


def get_config(smoke: bool = False) -> dict:
    config = image_config(
        "flickr25k", dataset="flickr25k", follows="reference code (its Flickr25k script)"
    )
    if smoke:
        smoke_variant(config, {"num_query": 20, "num_train": 40}, {"top_k": None})
    return config
