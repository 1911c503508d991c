"""Run directories -> cells of mean ± standard deviation over seeds, refusing unlike runs.

A finished run directory holds ``results.json`` and ``config.json`` (the run directory contract,
docs/experiments.md). Runs are grouped into cells by ``(config_name, dataset, protocol,
hash_layer, bits)`` (plus the values of any ``split_on`` keys). Within a cell, the resolved
configs must be identical except for the keys in ``IGNORED_KEYS``: the seed, and keys that say
where things live or how progress is shown, never what is computed. Any other difference (an
epoch count, a learning rate, a hash layer option) makes ``aggregate`` raise a ``ValueError``
naming the dotted key(s) and both runs, and so does the same seed appearing twice in a cell.

Statistics: the mean and the sample standard deviation (``ddof=1``; None for a single run) of
each metric over the cell's runs. A metric that some runs of a cell lack is not aggregated.

Example:

>>> runs = load_runs(["runs/sweeps/autoencoder"])  # doctest: +SKIP
>>> cells = aggregate(runs)  # doctest: +SKIP
>>> cells[0].metrics["map"].mean, cells[0].metrics["map"].sd  # doctest: +SKIP
(0.4296, 0.0102)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

from absl import logging

from tf_bihalf.report import published

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.json"

# Top-level config keys that may differ between runs averaged together. "seed" is what a cell
# averages over; the others say where files live or how progress is displayed.
IGNORED_KEYS = ("seed", "workdir", "data_dir", "cache_dir", "progress")

# The keys that name a cell (besides any ``split_on`` keys).
CELL_KEYS = ("config_name", "dataset", "protocol", "hash_layer", "bits")


@dataclasses.dataclass
class Run:
    """One finished run directory."""

    path: str
    config: dict
    results: dict

    @property
    def metrics(self) -> dict:
        return self.results.get("metrics") or {}

    @property
    def seed(self) -> Any:
        return self.config.get("seed")


@dataclasses.dataclass
class Statistic:
    """A metric over a cell's runs, in the order of ``Cell.runs``."""

    values: list[float]
    mean: float
    sd: float | None  # Sample standard deviation (n - 1); None when n = 1.

    @property
    def n(self) -> int:
        return len(self.values)

    def to_json(self) -> dict:
        return {"mean": self.mean, "sd": self.sd, "n": self.n, "values": self.values}


@dataclasses.dataclass
class Cell:
    """The runs of one setting that differ only in the seed, and their statistics."""

    config_name: str | None
    dataset: str | None
    protocol: str | None
    hash_layer: str | None
    bits: int | None
    split: tuple[tuple[str, Any], ...]
    runs: list[Run]
    map_at: str | int | None
    metrics: dict[str, Statistic]
    published: published.PublishedValue | None

    @property
    def seeds(self) -> list[Any]:
        return [run.seed for run in self.runs]

    @property
    def setting(self) -> tuple:
        """What a table or plot groups by: everything but the hash layer and the bits."""
        return (self.config_name, self.dataset, self.protocol, self.split)

    @property
    def setting_label(self) -> str:
        parts = [self.config_name or "?", self.dataset or "?"]
        if self.protocol:
            parts.append(f"protocol {self.protocol}")
        parts += [f"{key}={value}" for key, value in self.split]
        return ", ".join(str(part) for part in parts)

    @property
    def resumed(self) -> bool:
        """Whether any run's training record says it resumed from a checkpoint."""
        return any(
            ((run.results.get("training") or {}).get("resumed_from_epoch") or 0) > 0
            for run in self.runs
        )

    def to_json(self) -> dict:
        return {
            "config_name": self.config_name,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "hash_layer": self.hash_layer,
            "bits": self.bits,
            "split": dict(self.split),
            "map_at": self.map_at,
            "n": len(self.runs),
            "seeds": self.seeds,
            "runs": [run.path for run in self.runs],
            "resumed": self.resumed,
            "metrics": {name: statistic.to_json() for name, statistic in self.metrics.items()},
            "published": None
            if self.published is None
            else {
                "map_percent": self.published.value,
                # Measured mean minus the paper's value, in mAP points (%).
                "difference_percent": 100 * self.metrics["map"].mean - self.published.value
                if "map" in self.metrics
                else None,
                "method": self.published.method,
                "source": self.published.table.source,
                "table": self.published.table.label,
            },
        }


def _read_json(path: str) -> Any:
    try:
        with open(path) as file:
            return json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}.") from None


def find_run_directories(paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(finished, unfinished)`` run directories under ``paths`` (each a run or a root).

    A directory with ``results.json`` is a finished run (not searched further); one with
    ``config.json`` but no ``results.json`` is an unfinished run.

    Raises:
        FileNotFoundError: a path does not exist, or no run is found under any of them.
    """
    finished, unfinished = [], []
    for path in paths:
        if not os.path.isdir(path):
            raise FileNotFoundError(f"No such run directory: {path}")
        for directory, subdirectories, files in os.walk(path):
            subdirectories.sort()
            if RESULTS_FILE in files:
                finished.append(os.path.normpath(directory))
                subdirectories.clear()
            elif CONFIG_FILE in files:
                unfinished.append(os.path.normpath(directory))
                subdirectories[:] = [name for name in subdirectories if name != "checkpoints"]
    if not finished:
        raise FileNotFoundError(
            f"No finished run (a directory with {RESULTS_FILE}) under {', '.join(paths)}."
        )
    return sorted(set(finished)), sorted(set(unfinished) - set(finished))


def load_run(path: str) -> Run:
    """Reads ``path/results.json`` and ``path/config.json`` (the resolved config); a run without
    ``config.json`` falls back to the copy inside ``results.json``."""
    results_path = os.path.join(path, RESULTS_FILE)
    if not os.path.isfile(results_path):
        raise FileNotFoundError(f"{results_path} does not exist (the run has not finished).")
    results = _read_json(results_path)
    if not isinstance(results, dict):
        raise ValueError(f"{results_path} does not hold a JSON object.")
    config_path = os.path.join(path, CONFIG_FILE)
    if os.path.isfile(config_path):
        config = _read_json(config_path)
    elif isinstance(results.get("config"), dict):
        config = results["config"]
    else:
        raise FileNotFoundError(f"{config_path} does not exist and {results_path} has no config.")
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} does not hold a JSON object.")
    return Run(path=path, config=config, results=results)


def load_runs(paths: Iterable[str]) -> tuple[list[Run], list[str]]:
    """``(finished runs, unfinished run directories)`` under ``paths``."""
    finished, unfinished = find_run_directories(list(paths))
    for directory in unfinished:
        logging.warning("Skipping %s: not finished (no %s).", directory, RESULTS_FILE)
    return [load_run(directory) for directory in finished], unfinished


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"optimizer.learning_rate": 0.001, ...}`` (lists are leaf values)."""
    flat = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


_MISSING = "<absent>"


def config_differences(
    first: dict, second: dict, ignored: Sequence[str] = IGNORED_KEYS
) -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ between two configs (absent keys included), ignoring the
    top-level ``ignored`` keys; sorted by key."""
    a = {k: v for k, v in flatten(first).items() if k.split(".")[0] not in ignored}
    b = {k: v for k, v in flatten(second).items() if k.split(".")[0] not in ignored}
    return [
        (key, a.get(key, _MISSING), b.get(key, _MISSING))
        for key in sorted(set(a) | set(b))
        if a.get(key, _MISSING) != b.get(key, _MISSING)
    ]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def run_metrics(run: Run) -> dict[str, float]:
    """The scalar metrics the report aggregates, by name:

    ``map`` (mAP at the protocol's k, ``metrics.map``), ``map_ties_average``, ``map@<k>`` for every
    other cut-off in ``metrics.map_at_k``, ``precision_within_radius`` (radius in the results),
    ``mean_entropy`` and ``max_abs_correlation`` (``metrics.bits``), ``wall_time_s`` and
    ``final_loss`` (``training``). Missing entries are left out.
    """
    metrics = run.metrics
    training = run.results.get("training") or {}
    values: dict[str, Any] = {
        "map": metrics.get("map"),
        "map_ties_average": metrics.get("map_ties_average"),
        "precision_within_radius": (metrics.get("precision_within_radius") or {}).get("precision"),
        "mean_entropy": (metrics.get("bits") or {}).get("mean_entropy"),
        "max_abs_correlation": (metrics.get("bits") or {}).get("max_abs_correlation"),
        "wall_time_s": training.get("wall_time_s"),
        "final_loss": training.get("final_loss"),
    }
    for cut, value in (metrics.get("map_at_k") or {}).items():
        if str(cut).lower() != str(metrics.get("map_at")).lower():
            values[f"map@{cut}"] = value
    return {
        name: number for name, value in values.items() if (number := _number(value)) is not None
    }


def statistic(values: Sequence[float]) -> Statistic:
    """Mean and sample standard deviation (n - 1) of ``values``."""
    values = [float(value) for value in values]
    mean = sum(values) / len(values)
    sd = None
    if len(values) > 1:
        sd = math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))
    return Statistic(values=values, mean=mean, sd=sd)


def _cell_key(run: Run, split_on: Sequence[str]) -> tuple:
    flat = flatten(run.config)
    return tuple(run.config.get(key) for key in CELL_KEYS) + tuple(
        (key, flat.get(key, _MISSING)) for key in split_on
    )


def _describe(differences: list[tuple[str, Any, Any]], limit: int = 5) -> str:
    shown = ", ".join(f"'{key}' ({a!r} vs {b!r})" for key, a, b in differences[:limit])
    if len(differences) > limit:
        shown += f" and {len(differences) - limit} more"
    return shown


def _check_alike(runs: list[Run], label: str, split_on: Sequence[str]) -> None:
    reference = runs[0]
    for run in runs[1:]:
        differences = config_differences(reference.config, run.config, (*IGNORED_KEYS,))
        if differences:
            raise ValueError(
                f"Refusing to average the runs of {label}: {reference.path} and {run.path} "
                f"differ in {_describe(differences)}; only {', '.join(IGNORED_KEYS)} may differ. "
                "Report them separately, or name the key in --split_on to make one row per value."
            )
    seen: dict[Any, str] = {}
    for run in runs:
        if run.seed in seen:
            raise ValueError(
                f"Refusing to average the runs of {label}: {seen[run.seed]} and {run.path} both "
                f"have seed {run.seed!r}; a cell averages over distinct seeds."
            )
        seen[run.seed] = run.path


def _published_for(runs: list[Run]) -> published.PublishedValue | None:
    run = runs[0]
    record = run.results.get("record") or {}
    return published.match(
        dataset=run.config.get("dataset"),
        protocol=run.config.get("protocol"),
        map_at=run.metrics.get("map_at"),
        bits=run.config.get("bits") or 0,
        hash_layer=run.config.get("hash_layer") or "",
        num_query=run.metrics.get("num_query"),
        backbone=record.get("backbone") or run.config.get("backbone"),
    )


def aggregate(runs: Sequence[Run], split_on: Sequence[str] = ()) -> list[Cell]:
    """Groups ``runs`` into cells and computes each metric's mean and standard deviation.

    Cells come in the order their settings first appear, within a setting by hash layer (first
    appearance) and bits; runs within a cell by seed.

    Raises:
        ValueError: two runs of a cell differ in a config key other than ``IGNORED_KEYS`` (the
            message names the dotted key), or share a seed.
    """
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(_cell_key(run, split_on), []).append(run)
    cells = []
    for key, members in groups.items():
        members = sorted(members, key=lambda run: (str(type(run.seed)), run.seed))
        config = members[0].config
        split = tuple(key[len(CELL_KEYS) :])
        label = (
            f"{config.get('config_name')}/{config.get('dataset')}"
            f"{'/' + str(config.get('protocol')) if config.get('protocol') else ''} "
            f"{config.get('hash_layer')} {config.get('bits')} bits"
            + "".join(f" {k}={v}" for k, v in split)
        )
        _check_alike(members, label, split_on)
        per_run = [run_metrics(run) for run in members]
        names = [name for name in per_run[0] if all(name in values for values in per_run)]
        for name in sorted({name for values in per_run for name in values} - set(names)):
            logging.warning("%s: '%s' is missing from some runs; not aggregated.", label, name)
        cells.append(
            Cell(
                config_name=config.get("config_name"),
                dataset=config.get("dataset"),
                protocol=config.get("protocol"),
                hash_layer=config.get("hash_layer"),
                bits=config.get("bits"),
                split=split,
                runs=members,
                map_at=members[0].metrics.get("map_at"),
                metrics={name: statistic([values[name] for values in per_run]) for name in names},
                published=_published_for(members),
            )
        )
    setting_order = {}
    layer_order = {}
    for cell in cells:
        setting_order.setdefault(repr(cell.setting), len(setting_order))
        layer_order.setdefault(cell.hash_layer, len(layer_order))
    return sorted(
        cells,
        key=lambda cell: (
            setting_order[repr(cell.setting)],
            layer_order[cell.hash_layer],
            cell.bits if isinstance(cell.bits, int) else 0,
        ),
    )
