"""From index splits to ``ProtocolSplits``: file checks, exclusions, report and warnings.

Splits are computed from the labels alone, before any file is looked at, so an unusable file
never moves another image to a different split. ``assemble_file_splits`` then checks the files
of every image a split drew (``file_checks.check_image_files``), removes the ones that fail
from their splits, counts them per reason and per split in the report, keeps them with their
reason in ``ProtocolSplits.excluded`` (written to ``excluded.txt`` by ``write_splits``) and
logs them with their file names.

Warnings (logged with ``absl.logging.warning`` and listed in ``report["warnings"]``):

- the labels of the query and database splits have a single class: every query is relevant
  to every database item, so mAP is 1.0 whatever the codes;
- a split lost more than ``max_excluded_fraction`` (default 5%) of its images to exclusions;
- the query split ends with fewer queries than the rule drew, or a class got no query.
"""

from __future__ import annotations

import numpy as np
from absl import logging

from tf_bihalf.data import image_files
from tf_bihalf.data.protocols.file_checks import VERIFY_MODES, check_image_files
from tf_bihalf.data.protocols.types import SPLIT_NAMES, ImageSet, ProtocolSplits
from tf_bihalf.errors import InputError

# The file-check options every file-based protocol accepts, with their defaults.
FILE_OPTIONS = {
    "verify": "decode",
    "on_missing": "report",
    "max_pixels": image_files.DEFAULT_MAX_PIXELS,
    "max_file_bytes": image_files.DEFAULT_MAX_FILE_BYTES,
    "max_excluded_fraction": 0.05,
    "check_cache_dir": None,
}
# Options that do not change the splits and are not recorded with them.
UNRECORDED_OPTIONS = ("check_cache_dir",)
DEFAULT_MAX_EXCLUDED_FRACTION = FILE_OPTIONS["max_excluded_fraction"]


def assemble_file_splits(
    *,
    dataset: str,
    protocol: str,
    seed: int,
    options: dict,
    paths: list[str],
    labels: np.ndarray,
    index_splits: dict[str, np.ndarray],
    num_classes: int,
    class_names: list[str] | None,
    image_root: str | None,
    report: dict,
) -> ProtocolSplits:
    """Checks the files of the split images, removes the failures, assembles the result."""
    if options["on_missing"] not in ("report", "raise"):
        raise InputError(f"on_missing must be 'report' or 'raise'; got {options['on_missing']!r}.")
    if options["verify"] not in VERIFY_MODES:
        raise InputError(f"verify must be one of {VERIFY_MODES}; got {options['verify']!r}.")
    fraction = float(options["max_excluded_fraction"])
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"max_excluded_fraction must be in [0, 1]; got {fraction}.")
    limits = image_files.ImageLimits(int(options["max_pixels"]), int(options["max_file_bytes"]))
    used = np.unique(np.concatenate(list(index_splits.values())))
    problems = check_image_files(
        [paths[index] for index in used],
        options["verify"],
        limits,
        cache_dir=options["check_cache_dir"],
    )
    failures = {int(used[local]): problem for local, problem in problems.items()}
    present = [reason for reason in image_files.REASONS if reason != "missing"]
    for reason in ("missing", *present):
        count = sum(1 for problem in failures.values() if problem.reason == reason)
        if count or reason in ("missing", "corrupt", "unsupported"):
            report[reason] = count
    report["verify"] = options["verify"]
    report["counts_before_exclusion"] = {name: len(index_splits[name]) for name in SPLIT_NAMES}
    sets, excluded = {}, {}
    for name in SPLIT_NAMES:
        indices = index_splits[name]
        bad = np.asarray([index in failures for index in indices.tolist()], dtype=bool)
        excluded[name] = [(paths[index], failures[index].reason) for index in indices[bad].tolist()]
        kept = indices[~bad]
        sets[name] = ImageSet(
            labels=labels[kept], paths=[paths[index] for index in kept.tolist()], indices=kept
        )
    report["excluded"] = {name: len(excluded[name]) for name in SPLIT_NAMES}
    report["counts"] = {name: len(sets[name]) for name in SPLIT_NAMES}
    if failures:
        listed = [f"{paths[index]}: {problem.detail}" for index, problem in failures.items()]
        report["unusable_examples"] = listed[:20]
        counts = ", ".join(
            f"{report[reason]} {reason}" for reason in image_files.REASONS if report.get(reason)
        )
        message = (
            f"{dataset}: {len(failures)} of {len(used)} images are unusable ({counts}); they are "
            f"excluded from their splits (excluded per split: {report['excluded']}). "
            f"First: {listed[:5]}."
        )
        if options["on_missing"] == "raise":
            raise FileNotFoundError(message)
        logging.warning(message)
    for name in SPLIT_NAMES:
        if report["counts_before_exclusion"][name] and not report["counts"][name]:
            raise InputError(
                f"{dataset}: every one of the {report['counts_before_exclusion'][name]} images "
                f"of the {name!r} split is unusable (e.g. {report['unusable_examples'][:3]}); "
                "fix or replace the files."
            )
    add_warnings(dataset, sets, report, fraction)
    logging.info("%s protocol %s: %s", dataset, protocol, report["counts"])
    recorded = {key: value for key, value in options.items() if key not in UNRECORDED_OPTIONS}
    return ProtocolSplits(
        dataset=dataset,
        protocol=protocol,
        num_classes=int(num_classes),
        train=sets["train"],
        query=sets["query"],
        database=sets["database"],
        report=report,
        seed=seed,
        options=recorded,
        class_names=class_names,
        image_root=image_root,
        excluded=excluded,
    )


def add_warnings(
    dataset: str,
    sets: dict[str, ImageSet],
    report: dict,
    max_excluded_fraction: float = DEFAULT_MAX_EXCLUDED_FRACTION,
) -> list[str]:
    """Adds ``report["warnings"]`` (see the module docstring) and logs each one."""
    warnings = []
    labels = [np.asarray(sets[name].labels) for name in ("query", "database")]
    if labels[0].ndim == 1:
        classes = len(np.unique(np.concatenate(labels)))
    else:
        classes = int(np.concatenate(labels).any(axis=0).sum())
    if classes <= 1:
        warnings.append(
            f"{dataset}: the query and database labels have a single class, so every query is "
            "relevant to every database item and mAP is 1.0 whatever the codes: the evaluation "
            "measures nothing. Use data with at least two classes."
        )
    before = report.get("counts_before_exclusion")
    if before:
        for name in SPLIT_NAMES:
            lost = report["excluded"][name]
            if before[name] and lost / before[name] > max_excluded_fraction:
                warnings.append(
                    f"{dataset}: the {name!r} split lost {lost} of its {before[name]} images "
                    f"({100.0 * lost / before[name]:.1f}%, more than "
                    f"max_excluded_fraction={max_excluded_fraction:g}) to unusable files; "
                    "results are not comparable with the full protocol."
                )
        if report["counts"]["query"] < before["query"]:
            warnings.append(
                f"{dataset}: the protocol drew {before['query']} queries but only "
                f"{report['counts']['query']} are usable."
            )
    empty = report.get("classes_without_query") or []
    if empty:
        warnings.append(
            f"{dataset}: {len(empty)} class(es) have too few images for a query and are never "
            f"queried: {empty[:10]}."
        )
    for message in warnings:
        logging.warning(message)
    report["warnings"] = warnings
    return warnings
