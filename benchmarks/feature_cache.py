r"""Cached-feature vs end-to-end training epochs with a frozen backbone (same run, same data).

Both variants start from the same head weights and see the same batches (one in-memory,
pre-resized copy of the images, ``epoch_batches`` with one seed); the backbone has no dropout
(EfficientNet-Lite0), so their losses and final weights must agree up to floating-point noise,
which is printed. Also measured: the input pipeline alone (``image_dataset``: resize, batch,
prefetch; images/s) and the one-off feature extraction (pipeline + frozen backbone).

    python benchmarks/feature_cache.py --weights=imagenet --images=1024 --image_size=112

Prints a table; see docs/BENCHMARKS.md ("Image hashing") for the measured figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tf_bihalf.data import ImageSet  # noqa: E402
from tf_bihalf.data.feature_cache import FeatureCache  # noqa: E402
from tf_bihalf.data.image_pipeline import image_dataset, resize_images  # noqa: E402
from tf_bihalf.models.image_hasher import ImageHasher, SimilarityPreservingModel  # noqa: E402
from tf_bihalf.training.loop import EpochTimer  # noqa: E402
from tf_bihalf.training.pipelines import epoch_batches  # noqa: E402


def load_images(source: str, count: int) -> ImageSet:
    if source == "fashion_mnist":
        from tf_bihalf.data import mnist  # noqa: PLC0415

        (x, y), _ = mnist.load("fashion_mnist", pixels="uint8", flatten=False)
        return ImageSet(
            labels=y[:count].astype(np.int64), images=np.repeat(x[:count, ..., None], 3, axis=-1)
        )
    rng = np.random.default_rng(0)
    return ImageSet(
        labels=rng.integers(0, 10, count),
        images=rng.integers(0, 256, (count, 28, 28, 3), dtype=np.uint8),
    )


def timed_fit(model, inputs, labels, batch_size, epochs):
    timer = EpochTimer()
    data = epoch_batches((inputs, labels), batch_size, seed=0, epochs=epochs, drop_remainder=True)
    history = model.fit(
        data, epochs=epochs, steps_per_epoch=len(inputs) // batch_size, callbacks=[timer], verbose=0
    )
    return history.history["loss"], timer.durations


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet", help="imagenet | none | a file")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--image_size", type=int, default=112)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per variant (>= 2)")
    parser.add_argument("--data", default="fashion_mnist", choices=["fashion_mnist", "random"])
    args = parser.parse_args()
    weights = None if args.weights == "none" else args.weights
    split = load_images(args.data, args.images)
    size = (args.image_size, args.image_size)

    # Input pipeline alone: resize + batch + prefetch, no model.
    start = time.perf_counter()
    for _ in image_dataset(split, size, args.batch_size):
        pass
    pipeline_rate = len(split) / (time.perf_counter() - start)

    keras.utils.set_random_seed(0)
    hasher = ImageHasher(args.backbone, bits=64, weights=weights, image_size=size)
    initial = [w.numpy() for w in hasher.tail.trainable_weights]
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        cached = FeatureCache.for_hasher(directory, hasher).load_or_build("train", split)
        extract_seconds = time.perf_counter() - start
    images = resize_images(split.images, size).numpy()

    def run(from_features):
        for weight, value in zip(hasher.tail.trainable_weights, initial, strict=True):
            weight.assign(value)
        model = SimilarityPreservingModel(hasher.training_network(from_features))
        model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9))
        inputs = cached.features if from_features else images
        losses, durations = timed_fit(model, inputs, split.labels, args.batch_size, args.epochs)
        return (
            losses,
            float(np.median(durations[1:])),
            [w.numpy() for w in hasher.tail.trainable_weights],
        )

    end_losses, end_epoch, end_weights = run(False)
    cache_losses, cache_epoch, cache_weights = run(True)
    examples = (len(split) // args.batch_size) * args.batch_size
    weight_difference = max(
        float(np.abs(a - b).max()) for a, b in zip(end_weights, cache_weights, strict=True)
    )
    loss_difference = float(np.abs(np.array(end_losses) - np.array(cache_losses)).max())
    print(
        f"backbone={args.backbone} weights={args.weights} images={len(split)} "
        f"size={args.image_size} batch={args.batch_size} epochs={args.epochs}"
    )
    print(f"{'variant':<36}{'epoch s':>10}{'examples/s':>14}{'speedup':>10}")
    print(
        f"{'end to end (frozen backbone)':<36}{end_epoch:>10.3f}{examples / end_epoch:>14.0f}"
        f"{1.0:>10.1f}"
    )
    print(
        f"{'cached features':<36}{cache_epoch:>10.4f}{examples / cache_epoch:>14.0f}"
        f"{end_epoch / cache_epoch:>10.1f}"
    )
    print(f"{'input pipeline alone (images/s)':<36}{'':>10}{pipeline_rate:>14.0f}")
    print(
        f"{'one-off extraction (images/s)':<36}{extract_seconds:>10.2f}"
        f"{len(split) / extract_seconds:>14.0f}"
    )
    print(
        f"max |loss difference| {loss_difference:.2e}; max |head weight difference| "
        f"{weight_difference:.2e}; cache pays off after "
        f"{extract_seconds / max(end_epoch - cache_epoch, 1e-9):.2f} epochs"
    )


if __name__ == "__main__":
    main()
