"""MS-COCO (pruned, 122,218 images, 80 categories): VGG16 + Bi-half, cosine loss, mAP@5000.

Command (the COCO images and the list files in a manual directory, see docs/datasets.md):
    python -m trainers.image --dataset=mscoco --bits=64 --data_dir=DIR --workdir=runs/coco_64

Follows the reference code (docs/paper.md, "Settings"): SGD lr 1e-3 (ten times the other image settings),
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

from configs._image import image_config, smoke_variant


def get_config(smoke: bool = False) -> dict:
    config = image_config(
        "mscoco",
        dataset="mscoco",
        follows="reference code (its MS-COCO script; no paper number)",
        optimizer={"name": "sgd", "learning_rate": 1e-3, "momentum": 0.9, "weight_decay": 5e-4},
        epochs=150,
        evaluation={"top_k": 5000},
    )
    if smoke:
        smoke_variant(config, {"num_query": 20, "num_train": 40}, {"top_k": 50})
    return config
