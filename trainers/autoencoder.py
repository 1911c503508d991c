"""Train the MNIST / Fashion-MNIST hashing autoencoder (the paper's Fig. 3 experiment).

Usage::

    python -m trainers.autoencoder              # README main job: the paper's 100 epochs
    python -m trainers.autoencoder --bits 64 --hash_layer sign --dataset fashion_mnist
    python -m trainers.autoencoder --epochs 30  # shorter: lr milestones stretched to 18, 24
    python -m trainers.autoencoder --smoke      # tiny end-to-end run, under a minute

The config is ``configs/autoencoder.py`` (``--config`` names another); the task is
``tf_bihalf.tasks.autoencoder``; the loop, the run directory and the flags shared by every
trainer are described in ``trainers/common.py`` and docs/training.md. The run directory
(``--workdir``, default ``runs/autoencoder_<dataset>_<layer>_<K>bits``; re-running the same
command resumes) receives ``config.json``, ``checkpoints/``, ``tensorboard/``, and at the end
``results.json``, ``run.json``, ``plots/*.png`` and ``encoder.keras`` (raw pixels -> ±1 codes).
"""

from __future__ import annotations

import sys

from absl import flags

from trainers import common

# configs/<name>.py when neither --config nor --dataset names one; users' folder:/list:
# collections use CUSTOM_DATASET_CONFIG's settings.
DEFAULT_CONFIG = "autoencoder"
CUSTOM_DATASET_CONFIG = None

DATASETS = ["mnist", "fashion_mnist", "digits"]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The common flags plus this trainer's (called from ``__main__`` only)."""
    common.define_common_flags(DEFAULT_CONFIG, flag_values)
    define = {"flag_values": flag_values}
    flags.DEFINE_integer("train_examples", None, "Use only the first N training images.", **define)
    flags.DEFINE_integer("test_examples", None, "Use only the first N test images.", **define)


def task_overrides(values: flags.FlagValues) -> dict:
    if values.dataset is not None and values.dataset not in DATASETS:
        raise common.InputError(f"--dataset must be one of {DATASETS}; got {values.dataset!r}.")
    return {"train_examples": values.train_examples, "test_examples": values.test_examples}


main = common.main_for(sys.modules[__name__])

if __name__ == "__main__":
    define_flags()
    common.run(main)
