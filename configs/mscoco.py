"""MS-COCO (pruned, 122,218 images, 80 categories): VGG16 + Bi-half, cosine loss, mAP@5000.

Command (the COCO images and the list files in a manual directory, see docs/datasets.md):
    python -m trainers.image --dataset=mscoco --bits=64 --data_dir=DIR --workdir=runs/coco_64

Follows the reference code (REFERENCE §3): SGD lr 1e-3 (ten times the other image settings),
momentum 0.9, coupled L2 5e-4, batch 32, x0.1 every 60 epochs, 150 epochs; VGG16 frozen with
dropout(0.5) after fc6 and fc7, Linear(4096, K) head, gamma numerator 6, half-batch cosine loss.
Protocol: 5,000 queries, the rest is the database, 10,000 of it for training. Metric: mAP@5000
(stable ties). The paper reports no MS-COCO number for Bi-half; this setting exists in the
reference code only.

Expected wall time: feature extraction over 122,218 images at 224 px (tens of minutes on a GPU,
more than a day on a 2-core CPU), then 150 epochs x 312 steps on cached features (minutes on a
GPU, under an hour on 2 CPU cores), evaluation 5,000 x 117,218 (a minute).
"""

from __future__ import annotations


def get_config(smoke: bool = False) -> dict:
    config = {
        "model_type": "image",
        "dataset": "mscoco",
        "protocol": None,
        "protocol_options": {},
        "follows": "reference code (its MS-COCO script; no paper number)",
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
        "optimizer": {"name": "sgd", "learning_rate": 1e-3, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "step", "period": 60, "factor": 0.1},
        "epochs": 150,
        "batch_size": 32,
        "feature_cache": True,
        "cache_dir": "~/.cache/tf_bihalf/features",
        "extract_batch_size": 64,
        "evaluation": {
            "top_k": 5000,
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
            evaluation={**config["evaluation"], "top_k": 50, "precision_at": [10, 50]},
        )
    return config
