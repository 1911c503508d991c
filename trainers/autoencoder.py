"""Train the MNIST / Fashion-MNIST hashing autoencoder (the paper's Fig. 3 experiment).

Usage::

    python -m trainers.autoencoder              # README main job: the paper's 100 epochs
    python -m trainers.autoencoder --bits 64 --hash_layer sign --dataset fashion_mnist
    python -m trainers.autoencoder --epochs 30  # shorter: lr milestones stretched to 18, 24
    python -m trainers.autoencoder --smoke                   # tiny end-to-end run, < 1 minute

Writes the run directory (``--workdir``, default ``runs/<config>_<dataset>_<layer>_<K>bits``):
``config.json``, ``checkpoints/`` (every epoch; re-running the same command resumes),
``tensorboard/`` (loss, learning rate, U histograms and bit statistics per epoch, mAP when
``--eval_every``), and at the end ``results.json`` (mAP@All, top-N precision, PR curve, bit
statistics, wall time, samples/s, config), ``plots/*.png`` and ``encoder.keras`` (raw pixels ->
±1 codes). Flags left unset keep the config's values; ``--epochs`` stretches a multistep
schedule's milestones proportionally.
"""

from __future__ import annotations

import os
import time

import keras
import tensorflow as tf
from absl import flags, logging

import tf_bihalf  # noqa: F401  (registers the layers for saving)
from tf_bihalf.callbacks import BitMonitor, RetrievalEvaluation
from tf_bihalf.data import mnist
from tf_bihalf.losses.reconstruction import BinaryReconstructionLoss
from tf_bihalf.models.autoencoder import HashingAutoencoder
from tf_bihalf.training import evaluation, pipelines, plots, schedules, strategy, workdir
from tf_bihalf.training.checkpoint import TrainingCheckpoint
from tf_bihalf.training.optimizers import build_optimizer
from trainers import common


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the trainer's flags on ``flag_values``.

    Called from ``__main__`` only, so that importing this module (tests, other trainers in the
    same process) defines no global flags.
    """
    define = {"flag_values": flag_values}
    flags.DEFINE_string("config", "autoencoder", "Config name: configs/<name>.py.", **define)
    flags.DEFINE_integer("bits", None, "Code length K (config default 32).", **define)
    flags.DEFINE_enum(
        "hash_layer",
        None,
        ["bihalf", "sign", "signreg", "tanh", "relaxed", "median"],
        "Hash layer (config default bihalf).",
        **define,
    )
    flags.DEFINE_enum(
        "dataset",
        None,
        ["mnist", "fashion_mnist", "digits"],
        "Dataset (digits: scikit-learn's 8x8 digits, a tiny offline stand-in).",
        **define,
    )
    flags.DEFINE_integer(
        "epochs", None, "Epochs; a multistep schedule is stretched to match.", **define
    )
    flags.DEFINE_integer("batch_size", None, "Global batch size (config default 128).", **define)
    flags.DEFINE_float(
        "gamma", None, "Gamma numerator of the hash layer (bihalf/sign/signreg).", **define
    )
    flags.DEFINE_integer("seed", None, "Random seed (init and data order).", **define)
    flags.DEFINE_string(
        "workdir", None, "Run directory (default runs/<config>_<dataset>_...).", **define
    )
    flags.DEFINE_boolean(
        "smoke", False, "Tiny run: 5k/1k subset, 2 epochs (under a minute).", **define
    )
    flags.DEFINE_string(
        "data_dir", None, "Directory with mnist.npz or IDX files (optional).", **define
    )
    flags.DEFINE_integer(
        "eval_every", None, "Log mAP to TensorBoard every N epochs (0 = off).", **define
    )
    flags.DEFINE_integer("train_examples", None, "Use only the first N training images.", **define)
    flags.DEFINE_integer("test_examples", None, "Use only the first N test images.", **define)
    flags.DEFINE_boolean("progress", True, "Progress bars (else one line per epoch).", **define)


def resolve_config(flag_values: flags.FlagValues = flags.FLAGS) -> dict:
    """The config with the command-line flags applied (what ``config.json`` records)."""
    values = flag_values
    config = common.load_config(values.config, smoke=values.smoke)
    configured_epochs = config["epochs"]
    common.apply_overrides(
        config,
        {
            "bits": values.bits,
            "hash_layer": values.hash_layer,
            "dataset": values.dataset,
            "epochs": values.epochs,
            "batch_size": values.batch_size,
            "seed": values.seed,
            "data_dir": values.data_dir,
            "train_examples": values.train_examples,
            "test_examples": values.test_examples,
            "evaluation.every_n_epochs": values.eval_every,
        },
    )
    if values.epochs is not None and config["schedule"].get("name") == "multistep":
        config["schedule"]["milestones"] = schedules.scale_milestones(
            config["schedule"]["milestones"], config["epochs"], configured_epochs
        )
    return finalize_config(config, gamma=values.gamma)


def finalize_config(config: dict, gamma: float | None = None) -> dict:
    """Checks the config and replaces ``hash_layer_options`` by the chosen layer's
    ``hash_layer_kwargs`` (with ``gamma`` overriding the layer's gamma when given)."""
    for name in ("bits", "epochs", "batch_size"):
        if isinstance(config[name], bool) or not isinstance(config[name], int) or config[name] < 1:
            raise ValueError(f"{name} must be a positive integer; got {config[name]!r}.")
    if "hash_layer_options" in config:
        options = config.pop("hash_layer_options")
        if config["hash_layer"] not in options:
            raise ValueError(
                f"Unknown hash layer {config['hash_layer']!r}; choose one of {sorted(options)}."
            )
        config["hash_layer_kwargs"] = dict(options[config["hash_layer"]])
    if gamma is not None:
        if "gamma" not in config["hash_layer_kwargs"]:
            raise ValueError(
                f"--gamma applies to bihalf, sign and signreg; {config['hash_layer']} has none."
            )
        config["hash_layer_kwargs"]["gamma"] = float(gamma)
    return config


def load_data(config: dict):
    """``((x_train, y_train), (x_test, y_test))`` of the config's dataset and subsets."""
    (x_train, y_train), (x_test, y_test) = mnist.load(
        config["dataset"], data_dir=config["data_dir"], pixels=config["pixels"]
    )
    if config["train_examples"]:
        x_train, y_train = x_train[: config["train_examples"]], y_train[: config["train_examples"]]
    if config["test_examples"]:
        x_test, y_test = x_test[: config["test_examples"]], y_test[: config["test_examples"]]
    return (x_train, y_train), (x_test, y_test)


def default_workdir(config: dict, smoke: bool = False) -> str:
    """``runs/<config>_<dataset>_<layer>_<K>bits[_smoke]``: the same command resumes."""
    return common.default_workdir(
        config["config_name"],
        config["dataset"],
        config["hash_layer"],
        f"{config['bits']}bits",
        "smoke" if smoke else "",
    )


def compile_options(config: dict, steps_per_epoch: int, replicas: int) -> dict:
    """``steps_per_execution`` (the largest divisor of the epoch's steps <= the config's) and
    ``jit_compile`` (``"auto"``: XLA on a single replica; the cross-replica Bi-half gather is
    left to the regular runtime)."""
    jit = config["jit_compile"]
    if jit == "auto":
        jit = replicas == 1
    return {
        "steps_per_execution": pipelines.steps_per_execution_for(
            steps_per_epoch, config["steps_per_execution"]
        ),
        "jit_compile": bool(jit),
    }


def build_model(config: dict, steps_per_epoch: int, replicas: int = 1):
    """The compiled autoencoder, its optimizer and schedule callbacks (call in a strategy scope)."""
    model = HashingAutoencoder(
        bits=config["bits"],
        hash_layer=config["hash_layer"],
        hidden=config["hidden"],
        input_dim=config["input_shape"][0],
        hash_layer_kwargs=config["hash_layer_kwargs"],
    )
    optimizer_config = config["optimizer"]
    learning_rate, schedule_callbacks = schedules.build_learning_rate(
        config["schedule"], optimizer_config["learning_rate"], steps_per_epoch
    )
    optimizer = build_optimizer(
        optimizer_config["name"],
        learning_rate,
        weight_decay=optimizer_config["weight_decay"],
        momentum=optimizer_config.get("momentum", 0.0),
        dampening=optimizer_config.get("dampening", 0.0),
    )
    model.compile(
        optimizer=optimizer,
        loss=BinaryReconstructionLoss(),
        **compile_options(config, steps_per_epoch, replicas),
    )
    return model, optimizer, schedule_callbacks


def train(
    config: dict,
    workdir_path: str,
    progress: bool = True,
    extra_callbacks: tuple = (),
) -> dict:
    """Trains (or resumes) the run in ``workdir_path``, evaluates the final model and writes
    the run directory. Returns the results dict (also written to ``results.json``).

    ``config`` is a finalized config (``finalize_config``); ``extra_callbacks`` run before the
    checkpoint callback (tests use it to interrupt a run).
    """
    started = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_data(config)
    config = dict(config, input_shape=[int(x_train.shape[1])])
    run = workdir.prepare_workdir(workdir_path, config)
    logging.info("Run directory: %s%s", run.path, " (resuming)" if run.resuming else "")
    keras.utils.set_random_seed(config["seed"])

    distribution = strategy.get_strategy(config["distribution"])
    steps = pipelines.steps_per_epoch(len(x_train), config["batch_size"])
    with distribution.scope():
        model, optimizer, schedule_callbacks = build_model(
            config, steps, distribution.num_replicas_in_sync
        )
    checkpoint = TrainingCheckpoint(run.checkpoint_dir, model, optimizer)
    initial_epoch = min(checkpoint.restore(), config["epochs"])

    training_data = pipelines.epoch_batches(
        x_train,
        config["batch_size"],
        seed=config["seed"],
        epochs=config["epochs"],
        initial_epoch=initial_epoch,
        transform=lambda x: (x, x),
    )
    evaluation_config = config["evaluation"]
    query_data = pipelines.ordered_batches((x_test, y_test), evaluation_config["batch_size"])
    database_data = pipelines.ordered_batches((x_train, y_train), evaluation_config["batch_size"])
    monitor_config = config["monitor"]
    encoder = model.encoder
    callbacks = [
        *schedule_callbacks,
        BitMonitor(
            x_train[: monitor_config["sample_size"]],
            os.path.join(run.tensorboard_dir, "bits"),
            histogram_bits=monitor_config["histogram_bits"],
            every_n_epochs=monitor_config["every_n_epochs"],
            feature_model=model.continuous_encoder,
            code_model=encoder,
        ),
    ]
    if evaluation_config["every_n_epochs"]:
        callbacks.append(
            RetrievalEvaluation(
                query_data,
                database_data,
                os.path.join(run.tensorboard_dir, "retrieval"),
                every_n_epochs=evaluation_config["every_n_epochs"],
                top_k=evaluation_config["top_k"],
                encoder=encoder,
                progress=progress,
            )
        )
    callbacks.extend(extra_callbacks)
    timer = common.EpochTimer()
    losses = []
    if initial_epoch < config["epochs"]:
        history = model.fit(
            training_data,
            epochs=config["epochs"],
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            callbacks=common.standard_callbacks(run, checkpoint, callbacks, timer),
            verbose=1 if progress else 2,
            shuffle=False,  # the pipeline shuffles, per epoch, resumably
        )
        losses = [float(value) for value in history.history.get("loss", [])]
    else:
        logging.info("All %d epochs were already trained; evaluating.", config["epochs"])

    evaluation_start = time.perf_counter()
    query = evaluation.encode_dataset(encoder, query_data, progress, "encoding the queries")
    database = evaluation.encode_dataset(encoder, database_data, progress, "encoding the database")
    scores = evaluation.evaluate_retrieval(
        query,
        database,
        top_k=evaluation_config["top_k"],
        precision_ns=evaluation_config["precision_ns"],
        ties=evaluation_config["ties"],
        radius=evaluation_config["radius"],
    )
    evaluation_time = time.perf_counter() - evaluation_start
    encoder.save(run.encoder_path)
    title = f"{config['hash_layer']} {config['bits']} bits, {config['dataset']}"
    plot_paths = plots.write_plots(scores, run.plots_dir, title=title)
    results = {
        "config": config,
        "metrics": scores,
        "training": {
            "epochs": config["epochs"],
            "resumed_from_epoch": initial_epoch,
            "steps_per_epoch": steps,
            "loss_history_this_process": losses,
            "final_loss": losses[-1] if losses else None,
            **common.throughput(timer, len(x_train)),
        },
        "evaluation_wall_time_s": evaluation_time,
        "total_wall_time_s": time.perf_counter() - started,
        "environment": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "replicas": distribution.num_replicas_in_sync,
        },
        "files": {
            "encoder": os.path.basename(run.encoder_path),
            "plots": [os.path.relpath(path, run.path) for path in plot_paths],
            "tensorboard": os.path.relpath(run.tensorboard_dir, run.path),
        },
    }
    if not losses and os.path.exists(run.results_path):
        # Nothing was trained in this process: keep the training record of the earlier one.
        previous = workdir.read_json(run.results_path).get("training")
        if previous:
            results["training"] = dict(previous, re_evaluated=True)
    run.write_results(results)
    summary = (
        f"mAP@{scores['map_at']} = {scores['map']:.4f} (ties: {scores['ties']}; tie-averaged "
        f"{scores['map_ties_average']:.4f}), precision within radius 2 = "
        f"{scores['precision_within_radius']['precision']:.4f}, mean bit entropy = "
        f"{scores['bits']['mean_entropy']:.4f}"
    )
    logging.info("%s: %s", title, summary)
    results["summary"] = f"{title}: {summary}\nresults: {run.results_path}"
    return results


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"Unexpected arguments: {' '.join(argv[1:])} (flags start with --).")
    config = resolve_config(flags.FLAGS)
    workdir_path = flags.FLAGS.workdir or default_workdir(config, smoke=flags.FLAGS.smoke)
    results = train(config, workdir_path, progress=flags.FLAGS.progress)
    print(results["summary"])  # the result the user asked for
    return 0


if __name__ == "__main__":
    define_flags()
    common.run(main)
