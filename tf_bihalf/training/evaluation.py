"""Encode a query set and a database, then score Hamming retrieval with ``tf_bihalf.metrics``.

"Aggregate, then compute": codes and labels are collected batch by batch (with a progress bar),
and every metric is computed once at the end, outside the graph, from ONE pass over the query x
database distances (``tf_bihalf.metrics.retrieval_report``: mAP at every k, precision@N, the PR
curve and precision within a radius all derive from the same counts). Definitions:
docs/retrieval.md; this module gathers them into one JSON-ready dict.

Example:

>>> query = (np.array([[1, 1]]), np.array([0]))
>>> database = (np.array([[1, -1], [1, 1], [-1, 1], [1, -1]]), np.array([0, 1, 1, 0]))
>>> evaluate_retrieval(query, database, precision_ns=(1, 2))["map"]
0.5
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_bihalf import metrics

DEFAULT_PRECISION_NS = (1, 10, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


_INFERENCE_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _inference_function(encoder: keras.Model):
    """One traced ``encoder(x, training=False)`` per encoder, reused across calls."""
    if encoder not in _INFERENCE_FUNCTIONS:
        # A weak reference, so that the cached function does not keep its key alive.
        encoder_reference = weakref.ref(encoder)

        @tf.function(reduce_retracing=True)
        def forward(inputs):
            return encoder_reference()(inputs, training=False)

        _INFERENCE_FUNCTIONS[encoder] = forward
    return _INFERENCE_FUNCTIONS[encoder]


def encode_dataset(
    encoder: keras.Model,
    dataset,
    progress: bool = True,
    description: str = "encoding",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Runs ``encoder`` at inference over ``dataset``; returns ``(codes, labels)``.

    Args:
        encoder: a model mapping a batch of raw inputs to codes or continuous features; the
            output is binarised as ``sign`` with ``sign(0) = +1``.
        dataset: a ``tf.data.Dataset`` (or any iterable) of ``(inputs, labels)`` batches, or of
            ``inputs`` alone.
        progress: show a ``keras.utils.Progbar``.
        description: the progress bar's label.

    Returns:
        ``codes`` int8 ±1 (N, K) and ``labels`` (N, ...) as numpy arrays (None when the dataset
        has no labels).
    """

    forward = _inference_function(encoder)
    cardinality = None
    if isinstance(dataset, tf.data.Dataset):
        size = int(dataset.cardinality())
        cardinality = size if size >= 0 else None
    bar = keras.utils.Progbar(cardinality, unit_name="batch") if progress else None
    if progress:
        logging.info("%s (%s batches)", description, cardinality or "?")
    codes, labels = [], []
    for step, batch in enumerate(dataset, start=1):
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            inputs, batch_labels = batch
            labels.append(np.asarray(batch_labels))
        else:
            inputs = batch
        codes.append(np.asarray(forward(inputs)))
        if bar is not None:
            bar.update(step)
    if not codes:
        raise ValueError("encode_dataset got an empty dataset.")
    stacked = np.concatenate(codes)
    codes = np.where(stacked >= 0, 1, -1).astype(np.int8)
    return codes, (np.concatenate(labels) if labels else None)


def bit_statistics(codes: np.ndarray) -> dict:
    """Balance (fraction of +1), entropy per bit, mean entropy, max |correlation| between bits."""
    balance = metrics.bit_balance(codes)
    entropy, mean_entropy = metrics.bit_entropy(codes)
    correlation = metrics.bit_correlation(codes)
    off_diagonal = np.abs(correlation - np.eye(len(correlation)))
    return {
        "balance": balance,
        "entropy": entropy,
        "mean_entropy": float(mean_entropy),
        "max_abs_correlation": float(off_diagonal.max()) if off_diagonal.size else 0.0,
    }


def evaluate_retrieval(
    query: tuple[np.ndarray, np.ndarray],
    database: tuple[np.ndarray, np.ndarray],
    top_k: int | None = None,
    extra_top_k: Sequence[int] = (),
    precision_ns: Sequence[int] = DEFAULT_PRECISION_NS,
    ties: str = "stable",
    radius: int = 2,
    also_average_ties: bool = True,
) -> dict:
    """Hamming-ranking retrieval metrics of ``query`` against ``database``.

    Args:
        query: ``(codes, labels)``: ±1 / {0,1} codes (Q, K), class ids (Q,) or multi-hot.
        database: ``(codes, labels)`` (N, K).
        top_k: k of mAP@k; None for mAP@All (the protocol's metric, ``"map"``).
        extra_top_k: further k whose mAP@k is reported in ``"map_at_k"`` (beside the
            protocol's own).
        precision_ns: the N of the top-N precision curve (those above the database size are
            dropped).
        ties: tie rule of ``"map"`` and of the precision curve: ``"stable"`` (database order)
            or ``"average"`` (expectation over random orders within a distance).
        radius: the Hamming radius of ``precision_within_radius``.
        also_average_ties: also report the tie-averaged mAP as ``"map_ties_average"`` (with
            short codes the two differ; the reference code's random tie breaking scatters
            around the average).

    Returns:
        A JSON-ready dict: ``map``, ``map_at`` (``"All"`` or k), ``ties``, ``map_at_k``
        ({``"All"`` or ``str(k)``: mAP} for the protocol's k and every ``extra_top_k``),
        ``map_ties_average`` (optional), ``precision_at_n`` ({``n``, ``precision``}),
        ``pr_curve`` ({``radius``, ``precision``, ``recall``}),
        ``precision_within_radius`` ({``radius``, ``precision``}), ``bits`` (bit statistics of
        the database codes: ``balance``, ``entropy``, ``mean_entropy``,
        ``max_abs_correlation``), ``num_query``, ``num_database``, ``code_length``.
    """
    query_codes, query_labels = query
    database_codes, database_labels = database
    num_database = len(database_codes)

    def normalized(k):  # k >= N ranks the whole database: it is mAP@All
        return None if k is None or int(k) >= num_database else int(k)

    top_ks = [normalized(top_k)]
    for k in extra_top_k:
        if normalized(k) not in top_ks:
            top_ks.append(normalized(k))
    # One pass over the query x database distances gives every metric (tf_bihalf.metrics).
    report = metrics.retrieval_report(
        query_codes,
        database_codes,
        query_labels,
        database_labels,
        top_ks=top_ks,
        precision_ns=[int(n) for n in precision_ns if 1 <= int(n) <= num_database]
        or [num_database],
        radius=radius,
        ties=ties,
        also_average_ties=also_average_ties and ties != "average",
    )
    protocol_key = "All" if top_ks[0] is None else str(top_ks[0])
    results = {
        "map": report["map_at_k"][protocol_key],
        "map_at": "All" if top_ks[0] is None else top_ks[0],
        "ties": ties,
        "map_at_k": report["map_at_k"],
    }
    if "map_ties_average_at_k" in report:
        results["map_ties_average"] = report["map_ties_average_at_k"][protocol_key]
        results["map_ties_average_at_k"] = report["map_ties_average_at_k"]
    curve = report["pr_curve"]
    results.update(
        {
            "precision_at_n": report["precision_at_n"],
            "pr_curve": {
                "radius": curve["radius"],
                "precision": curve["precision"],
                "recall": curve["recall"],
            },
            "precision_within_radius": report["precision_within_radius"],
            "bits": bit_statistics(database_codes),
            "num_query": int(len(query_codes)),
            "num_database": int(num_database),
            "code_length": int(np.shape(query_codes)[1]),
        }
    )
    return results
