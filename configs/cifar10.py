"""Cifar-10, protocols (I) and (II): VGG16 (ImageNet, frozen) + Bi-half, cosine loss.

Command:
    python -m trainers.image --dataset=cifar10 --protocol=I --bits=64 --workdir=runs/cifar10_64
    python -m trainers.image --dataset=cifar10 --protocol=II --bits=64 --workdir=runs/cifar10ii_64

Follows the reference code (docs/paper.md, "Settings"), which here agrees with the paper: VGG16 frozen, fc7
after ReLU and dropout(0.5) active in training, hash head Linear(4096, K) with PyTorch's init,
gamma numerator 6, cosine-similarity preservation over the M/2 half-batch pairs, SGD lr 1e-4,
momentum 0.9, coupled L2 5e-4, batch 32 (even, remainder dropped), x0.1 every 120 epochs,
300 epochs, images resized 32 -> 224, no augmentation. Metric: (I) mAP@1000 over the 50,000
database with 10,000 queries; (II) mAP@All (ties broken stably by database order).
Keras' VGG16 weights are the Caffe conversion (BGR, mean subtraction), not torchvision's.

Paper mAP (%), Bi-half, 16 / 32 / 64 bits: Cifar-10(I) @1000 56.1 / 57.6 / 59.5;
Cifar-10(II) @All 42.87 / 43.29 / 44.13 (GreedyHash: 44.8 / 47.2 / 50.1 and 28.71 / 31.72 /
35.47). Not measured by this project: CIFAR-10 and the ImageNet VGG16 weights cannot be
downloaded on its machines (TFDS ``cifar10`` and Keras' VGG16 weights load wherever the internet
is reachable).

Expected wall time: the one-off VGG16 feature extraction over 60,000 images at 224 px (about
15.5 GFLOP per image) takes minutes on a GPU and many hours on a 2-core CPU; training on the
cached fc6 features (300 epochs x 1,562 steps of fc7 + head) takes tens of minutes on a GPU and
several hours on 2 CPU cores. Protocol (II) trains on 5,000 images: 10x less.
"""

from __future__ import annotations

from configs._image import image_config, smoke_variant


def get_config(smoke: bool = False) -> dict:
    config = image_config(
        "cifar10",
        dataset="cifar10",
        protocol="I",
        follows="reference code (its Cifar-10 script; the paper agrees)",
        schedule={"name": "step", "period": 120, "factor": 0.1},
        epochs=300,
        # Metric k per protocol: (I) mAP@1000, (II) mAP@All (None).
        evaluation={"top_k": {"by_protocol": {"I": 1000, "II": None}}},
    )
    if smoke:
        smoke_variant(
            config,
            {"num_query_per_class": 10, "num_database_per_class": 40, "num_train_per_class": 20},
            {"top_k": {"by_protocol": {"I": 100, "II": None}}},
        )
    return config
