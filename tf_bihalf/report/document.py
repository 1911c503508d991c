"""The report itself: ``report.md``, ``report.json``, ``plots/*.png`` and TensorBoard images.

``write_report(paths, out)`` reads every finished run under ``paths``, aggregates them
(``tf_bihalf.report.aggregation``: mean ± sample sd over seeds, refusing runs whose configs differ
in anything but the seed), and writes into ``out``:

- ``report.md``: per setting (config, dataset, protocol) a table with one row per (hash layer,
  bits): the number of seeds, mAP at the protocol's k, the paper's published value where the run
  is a paper setting (``tf_bihalf.report.published``), the other mAP@k, precision within Hamming
  radius 2, mean bit entropy, the largest absolute correlation between two bits and the training
  wall time; then the plots, and which run directories each row averages.
- ``report.json``: the same numbers with every per-seed value, for other tools.
- ``plots/``: mAP vs bits per setting (error bars = sd over seeds), and per (setting, bits) the
  PR curves, precision@N and per-bit balance of all hash layers on shared axes.
- ``tensorboard/``: every plot as an image summary (``tensorboard --logdir OUT/tensorboard``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

from absl import logging

from tf_bihalf.report import plots
from tf_bihalf.report.aggregation import IGNORED_KEYS, Cell, aggregate, flatten, load_runs

FORMAT_VERSION = 1


def _slug(*parts) -> str:
    text = "_".join(str(part) for part in parts if part not in (None, ""))
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_") or "run"


def _setting_slug(cell: Cell) -> str:
    return _slug(
        cell.config_name, cell.dataset, cell.protocol, *(f"{k}={v}" for k, v in cell.split)
    )


def _settings(cells: Sequence[Cell]) -> list[list[Cell]]:
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(repr(cell.setting), []).append(cell)
    return list(groups.values())


def _format(cell: Cell, name: str, scale: float = 1.0, digits: int = 2) -> str:
    statistic = cell.metrics.get(name)
    if statistic is None:
        return "–"
    text = f"{scale * statistic.mean:.{digits}f}"
    if statistic.sd is not None:
        text += f" ± {scale * statistic.sd:.{digits}f}"
    return text


def _other_cuts(cells: Sequence[Cell]) -> list[str]:
    names = {name for cell in cells for name in cell.metrics if name.startswith("map@")}

    def order(name: str):
        cut = name[4:]
        return (1, 0) if cut.lower() == "all" else (0, int(cut) if cut.isdigit() else 0)

    return sorted(names, key=order)


def _protocol_line(cell: Cell) -> str:
    run = cell.runs[0]
    metrics, config = run.metrics, run.config
    parts = [f"mAP@{cell.map_at}"]
    if metrics.get("num_query") is not None:
        parts.append(
            f"{metrics['num_query']} queries against {metrics.get('num_database', '?')} database items"
        )
    if metrics.get("ties"):
        parts.append(f"ties: {metrics['ties']}")
    if config.get("epochs") is not None:
        parts.append(f"{config['epochs']} epochs")
    if config.get("batch_size") is not None:
        parts.append(f"batch {config['batch_size']}")
    return "; ".join(parts)


# Keys that are meant to differ between the rows of one table.
_ROW_KEYS = ("hash_layer", "hash_layer_kwargs", "hash_layer_options", "bits")


def row_differences(cells: Sequence[Cell]) -> dict[str, list]:
    """Dotted config keys, other than the hash layer, its options, the bits and the ignored keys,
    whose values differ between the rows of one table: ``{key: [distinct values]}``."""
    flat = [flatten(cell.runs[0].config) for cell in cells]
    ignored = (*IGNORED_KEYS, *_ROW_KEYS)
    keys = sorted({key for config in flat for key in config if key.split(".")[0] not in ignored})
    differing = {}
    for key in keys:
        values = []
        for config in flat:
            value = config.get(key, "<absent>")
            if value not in values:
                values.append(value)
        if len(values) > 1:
            differing[key] = values
    return differing


def _table(cells: Sequence[Cell]) -> list[str]:
    cuts = _other_cuts(cells)
    with_paper = any(cell.published is not None for cell in cells)
    header = ["hash layer", "bits", "n", f"mAP@{cells[0].map_at} (%)"]
    if with_paper:
        header.append("paper (%)")
    header += [f"mAP@{name[4:]} (%)" for name in cuts]
    header += ["P(r≤2) (%)", "bit entropy", "max abs bit corr.", "train time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in cells:
        row = [str(cell.hash_layer), str(cell.bits), str(len(cell.runs)), _format(cell, "map", 100)]
        if with_paper:
            row.append(f"{cell.published.value:.2f}" if cell.published is not None else "–")
        row += [_format(cell, name, 100) for name in cuts]
        row += [
            _format(cell, "precision_within_radius", 100),
            _format(cell, "mean_entropy", digits=3),
            _format(cell, "max_abs_correlation", digits=3),
            _format(cell, "wall_time_s", digits=0) + (" †" if cell.resumed else ""),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _environment(cells: Sequence[Cell]) -> str:
    versions = set()
    for cell in cells:
        for run in cell.runs:
            environment = run.results.get("environment") or {}
            versions.add(
                ", ".join(
                    f"{key} {environment[key]}"
                    for key in ("tensorflow", "keras", "replicas")
                    if key in environment
                )
                or "not recorded"
            )
    return "; ".join(sorted(versions))


def markdown(
    cells: Sequence[Cell],
    unfinished: Sequence[str],
    plot_files: dict[str, list[str]],
    command: str,
) -> str:
    """The Markdown report (``plot_files``: setting slug -> plot paths relative to the report)."""
    runs = sum(len(cell.runs) for cell in cells)
    lines = [
        "# Experiment report",
        "",
        f"{runs} finished runs in {len(cells)} cells, from `{command}`.",
        "",
        "Each row is the mean ± sample standard deviation (n − 1) over its n seeds; a single "
        "run shows its value alone. mAP and precision are in percent (the paper's unit), the "
        "bit entropy in bits (1 is perfectly balanced), 'max abs bit corr.' is the largest "
        "|Pearson correlation| between two bits of the database codes (a constant bit counts as "
        "uncorrelated, so read it beside the entropy), 'P(r≤2)' is the precision of the items "
        "within Hamming radius 2. Every number is the final model's (no epoch picked "
        "on the query set). A row averages only runs whose resolved configs are identical except "
        f"for {', '.join(f'`{key}`' for key in IGNORED_KEYS)}.",
        "",
        f"Environment: {_environment(cells)}.",
        "",
    ]
    if any(cell.resumed for cell in cells):
        lines += [
            "† at least one run of the row resumed from a checkpoint: its train time covers "
            "only the last process.",
            "",
        ]
    for group in _settings(cells):
        first = group[0]
        lines += [f"## {first.setting_label}", "", f"Protocol: {_protocol_line(first)}.", ""]
        lines += _table(group)
        differing = row_differences(group)
        if differing:
            lines += [
                "",
                "**Not like for like:** besides the hash layer and the bits, the rows of this "
                "table differ in "
                + "; ".join(
                    f"`{key}` ({', '.join(map(repr, values))})" for key, values in differing.items()
                )
                + ". The protocol line above is the first row's.",
            ]
        sources = sorted(
            {
                f"{cell.published.table.source} ({cell.published.table.label})"
                for cell in group
                if cell.published is not None
            }
        )
        if sources:
            methods = sorted(
                {f"{cell.hash_layer} = {cell.published.method}" for cell in group if cell.published}
            )
            lines += [
                "",
                f"Paper values: {'; '.join(sources)}; rows {', '.join(methods)}.",
            ]
        elif first.dataset == "mnist" and first.runs[0].config.get("task") == "autoencoder":
            lines += [
                "",
                "The paper gives the autoencoder experiment (Fig. 3(d)) only as a plot, so there "
                "is no published value to print beside these rows.",
            ]
        else:
            lines += ["", "The paper publishes no number for this setting."]
        lines.append("")
        for path in plot_files.get(_setting_slug(first), []):
            name = os.path.splitext(os.path.basename(path))[0]
            lines.append(f"![{name}]({path})")
        lines += ["", "Runs per row:", ""]
        for cell in group:
            lines.append(
                f"- {cell.hash_layer} {cell.bits} bits, seeds {', '.join(map(str, cell.seeds))}: "
                + ", ".join(f"`{run.path}`" for run in cell.runs)
            )
        lines.append("")
    if unfinished:
        lines += ["## Not finished (skipped)", ""]
        lines += [f"- `{path}`" for path in unfinished]
        lines.append("")
    return "\n".join(lines)


def write_plots(cells: Sequence[Cell], directory: str) -> dict[str, list[str]]:
    """All comparison plots; returns setting slug -> written PNG paths."""
    written: dict[str, list[str]] = {}
    for group in _settings(cells):
        slug = _setting_slug(group[0])
        paths = written.setdefault(slug, [])
        label = group[0].setting_label
        paths.append(
            plots.plot_map_vs_bits(
                group,
                os.path.join(directory, f"{slug}_map_vs_bits.png"),
                f"{label}: mAP vs bits (mean ± sd)",
            )
        )
        for bits in sorted({cell.bits for cell in group}):
            members = [cell for cell in group if cell.bits == bits]
            stem = os.path.join(directory, f"{slug}_{bits}bits")
            for function, suffix, what in (
                (plots.plot_pr_curves, "pr_curve", "precision-recall"),
                (plots.plot_precision_at_n, "precision_at_n", "precision@N"),
                (plots.plot_bit_balance, "bit_balance", "per-bit balance"),
            ):
                path = function(members, f"{stem}_{suffix}.png", f"{label}, {bits} bits: {what}")
                if path is not None:
                    paths.append(path)
    return written


def write_tensorboard_images(paths: Sequence[str], log_dir: str) -> None:
    """Writes each PNG as an image summary named by its file name (step 0) into ``log_dir``."""
    import tensorflow as tf  # Imported here: the rest of the report does not need TensorFlow.

    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        for path in paths:
            image = tf.io.decode_png(tf.io.read_file(path), channels=3)
            name = os.path.splitext(os.path.basename(path))[0]
            tf.summary.image(name, image[tf.newaxis], step=0)
    writer.close()


def write_report(
    paths: Sequence[str],
    out: str,
    split_on: Sequence[str] = (),
    tensorboard: bool = True,
    command: str | None = None,
) -> dict:
    """Reads, aggregates and writes the report into ``out``; returns the ``report.json`` dict.

    Raises:
        FileNotFoundError: a path does not exist or holds no finished run.
        ValueError: runs that would be averaged differ in a config key (named in the message).
    """
    runs, unfinished = load_runs(paths)
    cells = aggregate(runs, split_on)
    os.makedirs(out, exist_ok=True)
    plot_files = write_plots(cells, os.path.join(out, "plots"))
    relative = {
        slug: [os.path.relpath(path, out) for path in files] for slug, files in plot_files.items()
    }
    all_plots = [path for files in plot_files.values() for path in files]
    command = command or "python -m tf_bihalf.report " + " ".join(paths)
    with open(os.path.join(out, "report.md"), "w") as file:
        file.write(markdown(cells, unfinished, relative, command))
    report = {
        "format_version": FORMAT_VERSION,
        "command": command,
        "ignored_keys": list(IGNORED_KEYS),
        "split_on": list(split_on),
        "cells": [cell.to_json() for cell in cells],
        "unfinished": list(unfinished),
        "plots": [os.path.relpath(path, out) for path in all_plots],
        "tensorboard": None,
    }
    if tensorboard and all_plots:
        write_tensorboard_images(all_plots, os.path.join(out, "tensorboard"))
        report["tensorboard"] = "tensorboard"
    with open(os.path.join(out, "report.json"), "w") as file:
        json.dump(report, file, indent=1)
    logging.info(
        "Report of %d runs in %d cells: %s (%d plots).",
        len(runs),
        len(cells),
        os.path.join(out, "report.md"),
        len(all_plots),
    )
    return report
