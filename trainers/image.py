r"""Train an image hasher (frozen backbone + hash head + Bi-half) under a paper protocol.

    python -m trainers.image --dataset=nus_wide --bits=64                 # configs/nus_wide.py
    python -m trainers.image --dataset=cifar10 --protocol=II --bits=32
    python -m trainers.image --dataset=folder:/data/photos --bits=32      # users' own images
    python -m trainers.image --dataset=fashion_mnist_rgb --hash_layer=sign   # offline real check

The config is ``configs/<dataset>.py`` (``--config`` names another; users' ``folder:DIR`` and
``list:FILE`` collections use ``configs/flickr25k.py``'s settings without its protocol options).
The task is ``tf_bihalf.tasks.image`` (splits written to ``RUN/splits/`` with checksums,
features of the frozen backbone cached, the head trained on them); the loop, the run directory
and the flags shared by every trainer are described in ``trainers/common.py`` and
docs/training.md. ``RUN/encoder.keras`` is the whole model: raw RGB [0, 255] -> ±1 codes.
"""

from __future__ import annotations

import sys

from absl import flags

from trainers import common

# configs/<name>.py when neither --config nor --dataset names one; users' folder:/list:
# collections use CUSTOM_DATASET_CONFIG's settings.
DEFAULT_CONFIG = None
CUSTOM_DATASET_CONFIG = "flickr25k"


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The common flags plus this trainer's (called from ``__main__`` only)."""
    common.define_common_flags(DEFAULT_CONFIG, flag_values)
    common.define_backbone_flags(
        "vgg16 | resnet50 | efficientnet_b0 | mobilenet_v3_small | efficientnet_lite0 | ...",
        "imagenet | a local file",
        flag_values,
    )
    define = {"flag_values": flag_values}
    flags.DEFINE_string(
        "protocol", None, "The dataset's protocol: I | II (cifar10, nus_wide).", **define
    )
    flags.DEFINE_integer("image_size", None, "Square input size in pixels.", **define)


def task_overrides(values: flags.FlagValues) -> dict:
    return {
        **common.backbone_overrides(values),
        "protocol": values.protocol,
        "image_size": None if values.image_size is None else [values.image_size] * 2,
    }


main = common.main_for(sys.modules[__name__])

if __name__ == "__main__":
    define_flags()
    common.run(main)
