"""PNG plots of a run's retrieval results: PR curve, top-N precision, bit balance.

Drawn with matplotlib's object API on an Agg canvas (no ``pyplot``, no global backend change),
so it works headless and inside other programs. ``write_plots(results, directory)`` draws every
plot a ``tf_bihalf.training.evaluation.evaluate_retrieval`` dict supports.

Example:

>>> write_plots(results, "RUN/plots", title="bihalf 32 bits")  # doctest: +SKIP
['RUN/plots/pr_curve.png', 'RUN/plots/precision_at_n.png', 'RUN/plots/bit_balance.png']
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(figure: Figure, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def plot_pr_curve(
    recall: Sequence[float], precision: Sequence[float], path: str, title: str = ""
) -> str:
    """Precision against recall of Hamming-ball retrieval, one point per radius 0..K."""
    figure = Figure(figsize=(5, 4))
    axes = figure.add_subplot()
    axes.plot(recall, precision, marker="o", markersize=3)
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    axes.set_title(title or "Precision-recall (Hamming radius 0..K)")
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_precision_at_n(
    ns: Sequence[int], precision: Sequence[float], path: str, title: str = ""
) -> str:
    """Top-N precision curve (log-scaled N)."""
    figure = Figure(figsize=(5, 4))
    axes = figure.add_subplot()
    axes.plot(ns, precision, marker="o", markersize=3)
    axes.set_xscale("log")
    axes.set(xlabel="N (retrieved items)", ylabel="precision@N", ylim=(0, 1.02))
    axes.set_title(title or "Top-N precision")
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_bit_balance(balance: Sequence[float], path: str, title: str = "") -> str:
    """Fraction of +1 per bit (bars), with the ideal 0.5 drawn as a line."""
    balance = np.asarray(balance, dtype=float)
    figure = Figure(figsize=(max(5, 0.12 * len(balance) + 2), 3.5))
    axes = figure.add_subplot()
    axes.bar(np.arange(len(balance)), balance, width=0.8)
    axes.axhline(0.5, color="black", linewidth=1, linestyle="--")
    axes.set(xlabel="bit", ylabel="fraction of +1", ylim=(0, 1))
    axes.set_title(title or "Bit balance")
    return _save(figure, path)


def write_plots(results: dict, directory: str, title: str = "") -> list[str]:
    """Writes ``pr_curve.png``, ``precision_at_n.png`` and ``bit_balance.png`` (those whose data
    ``results`` holds) to ``directory``; returns the paths."""
    prefix = f"{title}: " if title else ""
    paths = []
    if "pr_curve" in results:
        curve = results["pr_curve"]
        paths.append(
            plot_pr_curve(
                curve["recall"],
                curve["precision"],
                os.path.join(directory, "pr_curve.png"),
                f"{prefix}precision-recall",
            )
        )
    if "precision_at_n" in results:
        top_n = results["precision_at_n"]
        paths.append(
            plot_precision_at_n(
                top_n["n"],
                top_n["precision"],
                os.path.join(directory, "precision_at_n.png"),
                f"{prefix}top-N precision",
            )
        )
    if "bits" in results:
        paths.append(
            plot_bit_balance(
                results["bits"]["balance"],
                os.path.join(directory, "bit_balance.png"),
                f"{prefix}bit balance",
            )
        )
    return paths
