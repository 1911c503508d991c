"""tf_bihalf.report: aggregation over seeds, the refusal, published values, plots, the CLI.

The run directories are small fakes written by the tests in the shape of the run directory
contract (docs/experiments.md): ``config.json`` and ``results.json``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tf_bihalf.report import aggregation, published, write_report

BASE_CONFIG = {
    "task": "autoencoder",
    "config_name": "autoencoder",
    "dataset": "mnist",
    "protocol": None,
    "bits": 32,
    "hash_layer": "bihalf",
    "seed": 0,
    "epochs": 100,
    "batch_size": 128,
    "optimizer": {"name": "adam", "learning_rate": 0.001},
    "data_dir": None,
}


def make_run(
    root,
    name: str,
    *,
    map_value: float,
    seed: int = 0,
    radius: float = 0.8,
    wall: float = 100.0,
    map_at="All",
    num_query: int = 10000,
    extra_cut: tuple[str, float] | None = ("1000", 0.6),
    config: dict | None = None,
    balance_shift: float = 0.0,
) -> str:
    """Writes a fake finished run directory and returns its path."""
    resolved = copy.deepcopy(BASE_CONFIG)
    resolved["seed"] = seed
    for key, value in (config or {}).items():
        target = resolved
        *parents, last = key.split(".")
        for parent in parents:
            target = target[parent]
        target[last] = value
    bits = resolved["bits"]
    balance = list(np.linspace(0.5 - balance_shift, 0.5 + balance_shift, bits))
    map_at_k = {str(map_at): map_value}
    if extra_cut:
        map_at_k[extra_cut[0]] = extra_cut[1]
    results = {
        "record": {"format_version": 1, "backbone": None},
        "config": resolved,
        "metrics": {
            "map": map_value,
            "map_at": map_at,
            "ties": "stable",
            "map_ties_average": map_value + 0.001,
            "map_at_k": map_at_k,
            "precision_at_n": {"n": [1, 10, 100], "precision": [0.9, 0.8 - seed / 100, 0.6]},
            "pr_curve": {
                "radius": list(range(bits + 1)),
                "precision": list(np.linspace(0.9, 0.1, bits + 1)),
                "recall": list(np.linspace(0.0, 1.0, bits + 1)),
            },
            "precision_within_radius": {"radius": 2, "precision": radius},
            "bits": {
                "balance": balance,
                "entropy": [1.0] * bits,
                "mean_entropy": 0.99,
                "max_abs_correlation": 0.1,
            },
            "num_query": num_query,
            "num_database": 60000,
            "code_length": bits,
        },
        "training": {"epochs": resolved["epochs"], "resumed_from_epoch": 0, "wall_time_s": wall},
        "environment": {"tensorflow": "2.21.0", "keras": "3.15.1", "replicas": 1},
    }
    path = os.path.join(str(root), name)
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as file:
        json.dump(resolved, file)
    with open(os.path.join(path, "results.json"), "w") as file:
        json.dump(results, file)
    return path


def test_mean_and_sample_sd_against_a_hand_computation(tmp_path):
    for seed, (value, radius, wall) in enumerate(
        [(0.40, 0.80, 100), (0.42, 0.84, 110), (0.47, 0.83, 120)]
    ):
        make_run(tmp_path, f"bihalf_s{seed}", map_value=value, seed=seed, radius=radius, wall=wall)
    make_run(tmp_path, "sign_s0", map_value=0.30, config={"hash_layer": "sign"})

    runs, unfinished = aggregation.load_runs([str(tmp_path)])
    assert unfinished == []
    cells = aggregation.aggregate(runs)
    assert [(cell.hash_layer, len(cell.runs)) for cell in cells] == [("bihalf", 3), ("sign", 1)]
    bihalf = cells[0]
    assert bihalf.seeds == [0, 1, 2]
    # By hand: mean 0.43; deviations -0.03, -0.01, 0.04; sd = sqrt(0.0026 / 2).
    assert bihalf.metrics["map"].mean == pytest.approx(0.43)
    assert bihalf.metrics["map"].sd == pytest.approx(math.sqrt(0.0013))
    assert bihalf.metrics["precision_within_radius"].mean == pytest.approx(0.82333333)
    assert bihalf.metrics["precision_within_radius"].sd == pytest.approx(0.0208166600)
    assert bihalf.metrics["wall_time_s"].sd == pytest.approx(10.0)
    assert bihalf.metrics["map@1000"].sd == pytest.approx(0.0)
    assert "map@All" not in bihalf.metrics  # The protocol's own cut is "map", not repeated.
    assert cells[1].metrics["map"].sd is None  # One run: no standard deviation.

    report = write_report([str(tmp_path)], str(tmp_path / "out"), tensorboard=False)
    text = (tmp_path / "out" / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| bihalf | 32 | 3 |"))
    assert "| 43.00 ± 3.61 |" in row
    assert "| 82.33 ± 2.08 |" in row  # P(r<=2) in percent.
    assert "| 110 ± 10 |" in row  # Train time.
    assert "| sign | 32 | 1 | 30.00 |" in text
    assert "Fig. 3(d)) only as a plot" in text
    saved = report["cells"][0]
    assert saved["metrics"]["map"]["values"] == [0.40, 0.42, 0.47]
    assert saved["n"] == 3 and saved["published"] is None
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report


def test_refuses_runs_that_differ_in_a_config_key_and_names_it(tmp_path):
    make_run(tmp_path / "flat", "a", map_value=0.4, seed=0)
    make_run(tmp_path / "flat", "b", map_value=0.4, seed=1, config={"epochs": 30})
    runs, _ = aggregation.load_runs([str(tmp_path / "flat")])
    with pytest.raises(ValueError, match=r"differ in 'epochs' \(100 vs 30\)"):
        aggregation.aggregate(runs)

    # A nested key is named by its dotted path.
    other = tmp_path / "nested"
    make_run(other, "a", map_value=0.4, seed=0)
    make_run(other, "b", map_value=0.4, seed=1, config={"optimizer.learning_rate": 0.01})
    runs, _ = aggregation.load_runs([str(other)])
    with pytest.raises(ValueError, match=r"'optimizer\.learning_rate' \(0\.001 vs 0\.01\)"):
        aggregation.aggregate(runs)

    # --split_on turns the refusal into one row per value.
    runs, _ = aggregation.load_runs([str(tmp_path / "flat")])
    cells = aggregation.aggregate(runs, split_on=["epochs"])
    assert sorted(cell.split for cell in cells) == [(("epochs", 30),), (("epochs", 100),)]


def test_seed_and_location_keys_may_differ_but_a_seed_may_not_repeat(tmp_path):
    make_run(tmp_path, "a", map_value=0.4, seed=0, config={"data_dir": "/data/one"})
    make_run(tmp_path, "b", map_value=0.5, seed=1, config={"data_dir": "/data/two"})
    runs, _ = aggregation.load_runs([str(tmp_path)])
    assert len(aggregation.aggregate(runs)) == 1

    make_run(tmp_path, "c", map_value=0.6, seed=1)
    runs, _ = aggregation.load_runs([str(tmp_path)])
    with pytest.raises(ValueError, match="both have seed 1"):
        aggregation.aggregate(runs)


def test_config_differences_lists_absent_keys():
    differences = aggregation.config_differences(
        {"seed": 1, "a": {"b": 1}, "c": 2}, {"seed": 2, "a": {"b": 1, "d": 3}}
    )
    assert differences == [("a.d", "<absent>", 3), ("c", 2, "<absent>")]


def test_published_value_beside_a_paper_setting_only(tmp_path):
    cifar = {"config_name": "cifar10", "dataset": "cifar10", "protocol": "I", "bits": 64}
    for seed, value in enumerate([0.58, 0.60]):
        make_run(
            tmp_path,
            f"bihalf{seed}",
            map_value=value,
            seed=seed,
            map_at=1000,
            extra_cut=("All", 0.4),
            config=cifar,
        )
    make_run(
        tmp_path,
        "sign",
        map_value=0.5,
        map_at=1000,
        extra_cut=None,
        config={**cifar, "hash_layer": "sign"},
    )
    make_run(
        tmp_path,
        "signreg",
        map_value=0.5,
        map_at=1000,
        extra_cut=None,
        config={**cifar, "hash_layer": "signreg"},
    )
    # A smoke-sized split of the same config is not the paper's setting.
    make_run(
        tmp_path,
        "smoke",
        map_value=0.2,
        map_at=1000,
        num_query=100,
        config={**cifar, "epochs": 2, "bits": 16},
    )

    report = write_report(
        [str(tmp_path)], str(tmp_path / "out"), split_on=["epochs"], tensorboard=False
    )
    by_layer = {(cell["hash_layer"], cell["bits"]): cell for cell in report["cells"]}
    assert by_layer[("bihalf", 64)]["published"]["map_percent"] == 59.5
    assert by_layer[("bihalf", 64)]["published"]["method"] == "Ours"
    assert by_layer[("bihalf", 64)]["published"]["difference_percent"] == pytest.approx(-0.5)
    assert "Table 1" in by_layer[("bihalf", 64)]["published"]["source"]
    assert by_layer[("sign", 64)]["published"]["map_percent"] == 50.1
    assert by_layer[("signreg", 64)]["published"] is None
    assert by_layer[("bihalf", 16)]["published"] is None
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| bihalf | 64 | 2 | 59.00 ± 1.41 | 59.50 | 40.00 ± 0.00 |" in text
    assert "| sign | 64 | 1 | 50.00 | 50.10 |" in text
    assert "AAAI 2021, Table 1 (CIFAR-10 (I), mAP@1000)" in text
    assert "The paper publishes no number for this setting." in text  # The smoke-sized row.


def test_published_tables_transcription():
    # Spot checks of the transcription against the paper's tables.
    assert (
        published.match(
            dataset="flickr25k",
            protocol=None,
            map_at="All",
            bits=16,
            hash_layer="bihalf",
            num_query=2000,
        ).value
        == 71.42
    )
    assert (
        published.match(
            dataset="nus_wide",
            protocol="II",
            map_at="All",
            bits=32,
            hash_layer="sign",
            num_query=5000,
        ).value
        == 55.80
    )
    assert (
        published.match(
            dataset="cifar10",
            protocol="II",
            map_at="all",
            bits=64,
            hash_layer="bihalf",
            num_query=10000,
        ).value
        == 44.13
    )
    # Protocol (I) is mAP@1000: an mAP@All run is not compared with it.
    assert (
        published.match(
            dataset="cifar10",
            protocol="I",
            map_at="All",
            bits=64,
            hash_layer="bihalf",
            num_query=10000,
        )
        is None
    )
    video = published.match(
        dataset="ucf101",
        protocol=None,
        map_at=100,
        bits=16,
        hash_layer="bihalf",
        backbone="resnet101_3d",
    )
    assert video.value == 59.30 and "ResNet-101" in video.table.label
    assert (
        published.match(
            dataset="hmdb51",
            protocol=None,
            map_at=100,
            bits=64,
            hash_layer="sign",
            backbone="3D ResNet-34",
        ).value
        == 40.53
    )
    for table in published.TABLES:
        assert table.source.startswith(published.PAPER)
        assert all(set(row) == {16, 32, 64} for row in table.values.values())


def test_plots_and_tensorboard_images_are_written(tmp_path):
    for layer, values in (("bihalf", (0.45, 0.43)), ("sign", (0.36, 0.35))):
        for bits in (16, 32):
            for seed, value in enumerate(values):
                make_run(
                    tmp_path / "runs",
                    f"{layer}_{bits}_{seed}",
                    map_value=value,
                    seed=seed,
                    balance_shift=0.0 if layer == "bihalf" else 0.3,
                    config={"hash_layer": layer, "bits": bits},
                )
    os.makedirs(tmp_path / "runs" / "unfinished")
    (tmp_path / "runs" / "unfinished" / "config.json").write_text(json.dumps(BASE_CONFIG))

    out = tmp_path / "out"
    report = write_report([str(tmp_path / "runs")], str(out))
    expected = {"plots/autoencoder_mnist_map_vs_bits.png"} | {
        f"plots/autoencoder_mnist_{bits}bits_{kind}.png"
        for bits in (16, 32)
        for kind in ("pr_curve", "precision_at_n", "bit_balance")
    }
    assert set(report["plots"]) == expected
    from PIL import Image

    for path in expected:
        with Image.open(out / path) as image:
            assert image.format == "PNG" and image.size[0] > 300
    text = (out / "report.md").read_text()
    assert "![autoencoder_mnist_map_vs_bits](plots/autoencoder_mnist_map_vs_bits.png)" in text
    assert "## Not finished (skipped)" in text and "unfinished" in report["unfinished"][0]

    import tensorflow as tf

    tags = set()
    for name in os.listdir(out / "tensorboard"):
        for event in tf.compat.v1.train.summary_iterator(str(out / "tensorboard" / name)):
            tags.update(value.tag for value in event.summary.value)
    assert tags == {os.path.splitext(os.path.basename(path))[0] for path in expected}


def test_missing_paths_and_empty_roots_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such run directory"):
        aggregation.load_runs([str(tmp_path / "nope")])
    with pytest.raises(FileNotFoundError, match="No finished run"):
        aggregation.load_runs([str(tmp_path)])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="results.json is not valid JSON"):
        aggregation.load_runs([str(tmp_path)])


def test_command_line_refusal_exit_status(tmp_path):
    make_run(tmp_path, "a", map_value=0.4, seed=0)
    make_run(tmp_path, "b", map_value=0.4, seed=1, config={"batch_size": 64})
    result = subprocess.run(
        [sys.executable, "-m", "tf_bihalf.report", str(tmp_path), f"--out={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        timeout=300,
    )
    assert result.returncode == 2
    assert "differ in 'batch_size' (128 vs 64)" in result.stderr
    assert "Traceback" not in result.stderr


def test_rows_of_one_table_that_differ_beyond_layer_and_bits_are_flagged(tmp_path):
    make_run(tmp_path, "bihalf", map_value=0.4, config={"hash_layer_kwargs": {"gamma": 1.0}})
    make_run(
        tmp_path,
        "sign",
        map_value=0.3,
        config={"hash_layer": "sign", "epochs": 30, "hash_layer_kwargs": {"gamma": 0.2}},
    )
    write_report([str(tmp_path)], str(tmp_path / "out"), tensorboard=False)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "differ in `epochs` (100, 30)." in text
    assert "hash_layer_kwargs" not in text  # Each layer's own options are meant to differ.


def test_a_resumed_run_marks_its_train_time(tmp_path):
    make_run(tmp_path, "a", map_value=0.4, seed=0)
    path = make_run(tmp_path, "b", map_value=0.4, seed=1)
    results = json.loads(open(os.path.join(path, "results.json")).read())
    results["training"]["resumed_from_epoch"] = 40
    with open(os.path.join(path, "results.json"), "w") as file:
        json.dump(results, file)
    report = write_report([str(tmp_path)], str(tmp_path / "out"), tensorboard=False)
    assert report["cells"][0]["resumed"] is True
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| 100 ± 0 † |" in text
    assert "† at least one run of the row resumed" in text
