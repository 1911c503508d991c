"""Training-step cost of the Bi-half layer against the straight-through sign layer.

Times one optimisation step (forward, BCE reconstruction loss, backward, Adam update) of the
paper's MNIST autoencoder 784-256-K-256-784 with batch M = 128 and K = 64, with ``BiHalf`` and
with ``Sign`` as the hash layer, in the same process. Rounds of steps alternate between the
variants so that machine noise hits both alike; the table reports the median step time, the
ratio of the medians BiHalf / Sign, and the median of the per-round ratios (each round's BiHalf
time over the same round's Sign time: slow drifts of the machine's speed, which move the medians
of a shared machine by 10-20% between runs, cancel in it; more and shorter rounds help).

    python benchmarks/layer_overhead.py [--steps 200 --rounds 7 --jit]
    python benchmarks/layer_overhead.py --jit --steps 50 --rounds 40   # finer interleaving

Variants: ``bihalf`` (the layer as shipped), ``sign``, and under ``--jit`` also ``bihalf:top_k``
(``selection="top_k"``) and ``bihalf:bitwise``, the shipped layer with the threshold search of
before 2026-11-30 (the k-th largest key built bit by bit: 32 unrolled compare-and-count passes,
kept here as the baseline of the snapped bisection that replaced it; the same codes), and where
a GPU is visible ``bihalf:search`` (``selection="search"``: on a GPU ``auto`` picks ``top_k``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_bihalf import layers  # noqa: E402
from tf_bihalf.layers import bi_half  # noqa: E402


def bitwise_search(keys, k):
    """The previous ``_search_threshold``: the k-th largest key of each column built bit by bit,
    sign bit first; a bit is kept when at least k keys are ``>=`` the candidate."""

    def count_at_least(candidate):
        return tf.reduce_sum(tf.cast(keys >= candidate, tf.int32), axis=0)

    zero = tf.zeros([tf.shape(keys)[1]], tf.int32)
    found = tf.where(count_at_least(zero) >= k, zero, tf.fill(tf.shape(zero), -(2**31)))
    for bit in range(30, -1, -1):
        candidate = tf.bitwise.bitwise_or(found, 1 << bit)
        found = tf.where(count_at_least(candidate) >= k, candidate, found)
    return found


def build_step(hash_layer: str, bits: int, jit: bool):
    keras.utils.set_random_seed(0)
    name, _, selection = hash_layer.partition(":")
    search = bitwise_search if selection == "bitwise" else bi_half._search_threshold
    if selection == "bitwise":
        selection = "search"
    options = {"selection": selection} if selection else {}
    inputs = keras.Input((784,))
    hidden = keras.layers.Dense(256, activation="relu")(inputs)
    codes = layers.get(name, gamma=1.0, **options)(keras.layers.Dense(bits)(hidden))
    hidden = keras.layers.Dense(256, activation="relu")(codes)
    outputs = keras.layers.Dense(784, activation="sigmoid")(hidden)
    model = keras.Model(inputs, outputs)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.BinaryCrossentropy()

    @tf.function(jit_compile=jit)
    def step(x):
        shipped = bi_half._search_threshold
        bi_half._search_threshold = search  # read while tracing only
        try:
            with tf.GradientTape() as tape:
                loss = loss_fn(x, model(x, training=True))
        finally:
            bi_half._search_threshold = shipped
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return step


def time_steps(step, batch, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(batch)
    loss.numpy()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--jit", action="store_true", help="also time XLA-compiled steps")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    batch = tf.constant(rng.integers(0, 2, size=(args.batch_size, 784)).astype("float32"))
    variants = [("bihalf", False), ("sign", False)]
    if args.jit:
        variants += [("bihalf", True), ("bihalf:bitwise", True), ("bihalf:top_k", True)]
        if tf.config.list_logical_devices("GPU"):  # "auto" is top_k there: time the search too
            variants += [("bihalf:search", True)]
        variants += [("sign", True)]
    steps = {v: build_step(v[0], args.bits, v[1]) for v in variants}
    for step in steps.values():  # trace and warm up
        time_steps(step, batch, 20)
    times = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant, step in steps.items():
            times[variant].append(time_steps(step, batch, args.steps))

    print(
        f"\nAutoencoder 784-256-{args.bits}, batch {args.batch_size}, {args.rounds} rounds x "
        f"{args.steps} steps, {os.cpu_count()} CPU cores, TF {tf.__version__}\n"
    )
    print(
        "| hash layer | XLA | median step (ms) | min step (ms) | ratio to sign "
        "| paired ratio (median per round) |"
    )
    print("|---|---|---|---|---|---|")
    for variant in variants:
        median = statistics.median(times[variant])
        sign = times[("sign", variant[1])]
        paired = statistics.median(a / b for a, b in zip(times[variant], sign, strict=True))
        print(
            f"| {variant[0]} | {'yes' if variant[1] else 'no'} | {median * 1e3:.3f} | "
            f"{min(times[variant]) * 1e3:.3f} | {median / statistics.median(sign):.3f} "
            f"| {paired:.3f} |"
        )


if __name__ == "__main__":
    main()
