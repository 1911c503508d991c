"""Flickr25k (MIRFlickr-25k): VGG16 (ImageNet, frozen) + Bi-half, cosine loss, mAP@All.

Command (the images and annotations in a manual directory, see docs/datasets.md):
    python -m trainers.image --dataset=flickr25k --bits=64 --data_dir=DIR --workdir=runs/flickr_64

Follows the reference code (REFERENCE §3): SGD lr 1e-4, momentum 0.9, coupled L2 5e-4, batch 32,
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


def get_config(smoke: bool = False) -> dict:
    config = {
        "model_type": "image",
        "dataset": "flickr25k",
        "protocol": None,
        "protocol_options": {},
        "follows": "reference code (its Flickr25k script)",
        "backbone": "vgg16",
        "weights": "imagenet",
        "image_size": [224, 224],
        "resize": "stretch",
        "dropout": None,  # The backbone's default: 0.5 after fc6 and fc7 for VGG16.
        "bits": 64,
        "hash_layer": "bihalf",
        # Keyword arguments per hash layer; the one named by "hash_layer" is used.
        "hash_layer_options": {
            "bihalf": {"gamma": 6.0},
            "sign": {},
            "signreg": {"alpha": 1.0},
            "tanh": {},
            "relaxed": {},
            "median": {},
        },
        "loss": {"pairing": "half"},
        "optimizer": {"name": "sgd", "learning_rate": 1e-4, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "step", "period": 60, "factor": 0.1},
        "epochs": 100,
        "batch_size": 32,
        "feature_cache": True,
        "cache_dir": "~/.cache/tf_bihalf/features",
        "extract_batch_size": 64,
        "evaluation": {
            "top_k": None,
            "extra_top_k": [],  # Further mAP@k to report.
            "ties": "stable",
            "precision_at": [100, 500, 1000, 5000],
            "batch_size": 256,
        },
        "seed": 0,
        "strategy": "mirrored",
    }
    if smoke:
        config.update(
            weights=None,
            image_size=[32, 32],
            epochs=2,
            batch_size=8,
            cache_dir=None,
            extract_batch_size=16,
            protocol_options={"num_query": 20, "num_train": 40},
            evaluation={**config["evaluation"], "top_k": None, "precision_at": [10, 50]},
        )
    return config
