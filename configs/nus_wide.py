"""NUS-WIDE, protocols (I) 21 concepts and (II) 10 concepts: VGG16 + Bi-half, mAP@All.

Command (the images and the concept lists in a manual directory, see docs/datasets.md):
    python -m trainers.image --dataset=nus_wide --protocol=I --bits=64 --data_dir=DIR \
        --workdir=runs/nus_i_64

Follows the paper (the reference code has no NUS-WIDE script; docs/paper.md, "Settings"): SGD lr 1e-4,
momentum 0.9, coupled L2 5e-4, batch 32, VGG16 frozen with dropout(0.5) after fc6 and fc7,
Linear(4096, K) head, gamma numerator 6 (the reference's image value), half-batch cosine loss.
The paper divides the learning rate by 10 "when the loss plateaus": here ReduceLROnPlateau on the
training loss (patience 10, factor 0.1), 100 epochs (the paper gives no epoch count). Protocol
(I): 21 most frequent concepts, 100 queries per concept (2,100), the rest database and training;
(II): 10 concepts, 5,000 queries, the rest database, 10,500 of it for training. Many public
copies miss images: the loader counts and reports them (results.json, "data_report").
Metric: mAP@All as the paper's tables (stable ties).

Paper mAP@All (%), Bi-half, 16 / 32 / 64 bits: NUS-WIDE(I) 65.12 / 66.31 / 67.26;
NUS-WIDE(II) 67.12 / 68.05 / 68.21 (GreedyHash 55.49 / 57.47 / 60.93 and 51.39 / 55.80 / 59.27).
Not measured by this project (no NUS-WIDE or ImageNet VGG16 weights on its machines).

Expected wall time: feature extraction over about 190,000 (I) images at 224 px (tens of minutes
on a GPU, days on a 2-core CPU); training (I) on about 190,000 cached features is 100 epochs x
about 6,000 steps (an hour on a GPU), (II) on 10,500 far less; evaluation 2,100 x 190,000 takes
a minute or two.
"""

from __future__ import annotations

from configs._image import image_config, smoke_variant


def get_config(smoke: bool = False) -> dict:
    config = image_config(
        "nus_wide",
        dataset="nus_wide",
        protocol="I",
        follows="paper (no reference script; lr 1e-4, reduce on plateau)",
        schedule={"name": "plateau", "monitor": "loss", "factor": 0.1, "patience": 10},
    )
    if smoke:
        smoke_variant(
            config,
            {
                "by_protocol": {
                    "I": {"num_concepts": 5, "num_query_per_class": 2},
                    "II": {"num_concepts": 5, "num_query": 10, "num_train": 20},
                }
            },
            {"top_k": None},
        )
    return config
