"""Writes a small one-folder-per-class image collection for ``benchmarks/gpu_check.sh``.

    python benchmarks/gpu_check_images.py DIR [--classes 3 --per_class 24]

Each class is a colour with noise and a class-specific stripe, so that even a smoke run's
codes have something to separate. PNGs are encoded with TensorFlow (no extra dependency).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--per_class", type=int, default=24)
    parser.add_argument("--size", type=int, default=48)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for label in range(args.classes):
        folder = os.path.join(args.directory, f"class_{label:02d}")
        os.makedirs(folder, exist_ok=True)
        colour = rng.uniform(40, 215, size=3)
        for index in range(args.per_class):
            image = colour + rng.normal(0, 25, size=(args.size, args.size, 3))
            image[:, label * 8 : label * 8 + 6] = 255 - colour  # the class's stripe
            pixels = np.clip(image, 0, 255).astype(np.uint8)
            path = os.path.join(folder, f"{index:03d}.png")
            tf.io.write_file(path, tf.io.encode_png(pixels))


if __name__ == "__main__":
    main()
