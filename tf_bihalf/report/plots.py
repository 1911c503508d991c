"""Comparison plots of aggregated cells, drawn with matplotlib's object API on an Agg canvas.

- ``plot_map_vs_bits``: mAP against code length, one line per hash layer with mean ± sd error
  bars over seeds (the paper's Fig. 3(d) style), the paper's published values as open markers.
- ``plot_pr_curves`` / ``plot_precision_at_n``: several cells on shared axes, each the mean
  over its seeds with a ± sd band.
- ``plot_bit_balance``: the fraction of +1 of every bit, sorted per run (bit order is arbitrary,
  so sorting makes seeds and methods comparable), one thin line per seed, one colour per cell.

Every function writes one PNG and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tf_bihalf.report.aggregation import Cell

_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _save(figure: Figure, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def _colour(index: int) -> str:
    return _COLOURS[index % len(_COLOURS)]


def _cut_label(map_at) -> str:
    return f"mAP@{map_at if map_at is not None else '?'}"


def plot_map_vs_bits(cells: Sequence[Cell], path: str, title: str = "") -> str:
    """mAP (%) against bits for the cells of one setting, one line per hash layer."""
    figure = Figure(figsize=(5.5, 4))
    axes = figure.add_subplot()
    layers = list(dict.fromkeys(cell.hash_layer for cell in cells))
    all_bits = sorted({cell.bits for cell in cells})
    for index, layer in enumerate(layers):
        members = sorted(
            (cell for cell in cells if cell.hash_layer == layer and "map" in cell.metrics),
            key=lambda cell: cell.bits,
        )
        if not members:
            continue
        bits = [cell.bits for cell in members]
        means = [100 * cell.metrics["map"].mean for cell in members]
        errors = [100 * (cell.metrics["map"].sd or 0.0) for cell in members]
        counts = sorted({cell.metrics["map"].n for cell in members})
        axes.errorbar(
            bits,
            means,
            yerr=errors,
            marker="o",
            capsize=4,
            color=_colour(index),
            label=f"{layer} (n={'/'.join(map(str, counts))})",
        )
        paper = [(cell.bits, cell.published) for cell in members if cell.published is not None]
        if paper:
            axes.plot(
                [b for b, _ in paper],
                [value.value for _, value in paper],
                linestyle=":",
                marker="s",
                markerfacecolor="none",
                color=_colour(index),
                label=f"{layer}: paper ({paper[0][1].method})",
            )
    axes.set_xscale("log", base=2)
    axes.set_xticks(all_bits, [str(bits) for bits in all_bits])
    axes.minorticks_off()
    axes.set(xlabel="bits", ylabel=f"{_cut_label(cells[0].map_at)} (%)")
    axes.set_title(title or "mAP vs code length (mean ± sd over seeds)", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def _curves(cell: Cell, section: str, x_key: str, y_key: str):
    xs, ys = [], []
    for run in cell.runs:
        curve = run.metrics.get(section) or {}
        if x_key in curve and y_key in curve:
            xs.append(np.asarray(curve[x_key], dtype=float))
            ys.append(np.asarray(curve[y_key], dtype=float))
    if (
        not ys
        or any(y.shape != ys[0].shape for y in ys)
        or any(x.shape != y.shape for x, y in zip(xs, ys, strict=True))
    ):
        return None
    return (
        np.mean(xs, axis=0),
        np.mean(ys, axis=0),
        np.std(ys, axis=0, ddof=1 if len(ys) > 1 else 0),
    )


def _cell_label(cell: Cell) -> str:
    return f"{cell.hash_layer} {cell.bits} bits (n={len(cell.runs)})"


def plot_pr_curves(cells: Sequence[Cell], path: str, title: str = "") -> str | None:
    """Hamming-ball precision against recall (radius 0..K), mean over seeds, ± sd band."""
    figure = Figure(figsize=(5.5, 4))
    axes = figure.add_subplot()
    drawn = 0
    for index, cell in enumerate(cells):
        curve = _curves(cell, "pr_curve", "recall", "precision")
        if curve is None:
            continue
        recall, precision, sd = curve
        axes.plot(recall, precision, marker=".", color=_colour(index), label=_cell_label(cell))
        axes.fill_between(recall, precision - sd, precision + sd, color=_colour(index), alpha=0.2)
        drawn += 1
    if not drawn:
        return None
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    axes.set_title(title or "Precision-recall (Hamming radius 0..K)", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_precision_at_n(cells: Sequence[Cell], path: str, title: str = "") -> str | None:
    """Top-N precision against N (log scale), mean over seeds, ± sd band."""
    figure = Figure(figsize=(5.5, 4))
    axes = figure.add_subplot()
    drawn = 0
    for index, cell in enumerate(cells):
        curve = _curves(cell, "precision_at_n", "n", "precision")
        if curve is None:
            continue
        ns, precision, sd = curve
        axes.plot(
            ns, precision, marker="o", markersize=3, color=_colour(index), label=_cell_label(cell)
        )
        axes.fill_between(ns, precision - sd, precision + sd, color=_colour(index), alpha=0.2)
        drawn += 1
    if not drawn:
        return None
    axes.set_xscale("log")
    axes.set(xlabel="N (retrieved items)", ylabel="precision@N", ylim=(0, 1.02))
    axes.set_title(title or "Top-N precision", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_bit_balance(cells: Sequence[Cell], path: str, title: str = "") -> str | None:
    """Sorted per-bit fraction of +1, one line per run, one colour per cell; 0.5 is ideal."""
    figure = Figure(figsize=(5.5, 4))
    axes = figure.add_subplot()
    drawn = 0
    for index, cell in enumerate(cells):
        labelled = False
        for run in cell.runs:
            balance = (run.metrics.get("bits") or {}).get("balance")
            if not balance:
                continue
            balance = np.sort(np.asarray(balance, dtype=float))
            axes.plot(
                np.arange(1, len(balance) + 1),
                balance,
                color=_colour(index),
                linewidth=1,
                alpha=0.8,
                label=None if labelled else _cell_label(cell),
            )
            labelled = True
            drawn += 1
    if not drawn:
        return None
    axes.axhline(0.5, color="black", linewidth=1, linestyle="--")
    axes.set(xlabel="bit (sorted by balance)", ylabel="fraction of +1", ylim=(0, 1))
    axes.set_title(title or "Per-bit balance (each line one seed)", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)
