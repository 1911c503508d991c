"""The one training loop: ``train_and_evaluate(task, config, workdir)``.

Every trainer is a config plus a ``tf_bihalf.training.task.Task``; this loop owns the rest:

1. the run directory (``tf_bihalf.training.workdir``): ``config.json``, a lock against a second
   trainer, refusal to resume a run with another config;
2. the seed (``keras.utils.set_random_seed(config["seed"])``), the task's data check, the
   distribution strategy (``config["strategy"]``), the task's models and data;
3. the optimizer (``config["optimizer"]``, coupled L2 as PyTorch) and learning-rate schedule
   (``config["schedule"]``), compile options (``config["jit_compile"]``: ``"auto"`` = XLA on a
   single replica; ``config["steps_per_execution"]``: the largest divisor of the epoch's steps
   up to that value, so an epoch never reads another epoch's batches);
4. resume from the newest intact epoch checkpoint (tied to the config's hash), ``fit`` with
   TensorBoard (loss, learning rate), the bit monitor (per-bit U histograms, balance, entropy,
   correlation), periodic retrieval mAP (``config["evaluation"]["every_n_epochs"]``, monitoring
   only: reported numbers are the final model's), progress bars on a terminal and one line per
   epoch otherwise, an epoch checkpoint last;
5. the final evaluation (the ranking computed once, every metric derived from it), plots,
   ``RUN/encoder.keras``, ``RUN/run.json`` (the typed record export reads) and
   ``RUN/results.json``.

The config keys the loop reads are the common keys every config defines (``configs/_common.py``):
``task``, ``config_name``, ``dataset``, ``protocol``, ``bits``, ``hash_layer``,
``hash_layer_kwargs``, ``seed``, ``epochs``, ``batch_size``, ``optimizer``, ``schedule``,
``strategy``, ``jit_compile``, ``steps_per_execution``, ``evaluation`` and ``monitor``.
"""

from __future__ import annotations

import os
import sys
import time

import keras
import tensorflow as tf
from absl import logging

from tf_bihalf.callbacks import (
    BestValidationEpoch,
    BitMonitor,
    RetrievalEvaluation,
    TrainingTensorBoard,
)
from tf_bihalf.errors import InputError
from tf_bihalf.training import (
    distributed,
    evaluation,
    pictures,
    pipelines,
    plots,
    schedules,
    strategy,
)
from tf_bihalf.training.checkpoint import TrainingCheckpoint
from tf_bihalf.training.optimizers import build_optimizer
from tf_bihalf.training.record import RunRecord, config_sha256
from tf_bihalf.training.task import Task, TaskData, TaskModels
from tf_bihalf.training.workdir import Workdir, _to_json, prepare_workdir, read_json


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch run in this process (``self.durations``, seconds)."""

    def __init__(self):
        super().__init__()
        self.durations: list[float] = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.durations.append(time.perf_counter() - self._start)


def throughput(timer: EpochTimer, examples_per_epoch: int) -> dict:
    """Training speed of this process: all epochs, and excluding the first (graph tracing)."""
    durations = timer.durations
    total = float(sum(durations))
    result = {
        "epochs_this_process": len(durations),
        "wall_time_s": total,
        "samples_per_second": examples_per_epoch * len(durations) / total if total else None,
    }
    if len(durations) > 1:
        steady = float(sum(durations[1:]))
        result["samples_per_second_after_first_epoch"] = (
            examples_per_epoch * (len(durations) - 1) / steady
        )
    return result


def compile_options(config: dict, steps_per_epoch: int, replicas: int) -> dict:
    """``steps_per_execution`` (the largest divisor of the epoch's steps up to the config's) and
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


def default_progress() -> bool:
    """Progress bars when standard output is a terminal; one line per epoch otherwise."""
    return sys.stdout.isatty()


def _compile(models: TaskModels, config: dict, data: TaskData, replicas: int):
    optimizer_config = dict(config["optimizer"])
    learning_rate, schedule_callbacks = schedules.build_learning_rate(
        config["schedule"], optimizer_config.pop("learning_rate"), data.steps_per_epoch
    )
    optimizer = build_optimizer(learning_rate=learning_rate, **optimizer_config)
    arguments = {"loss": models.loss} if models.loss is not None else {}
    models.train_model.compile(
        optimizer=optimizer,
        **arguments,
        **compile_options(config, data.steps_per_epoch, replicas),
    )
    return optimizer, schedule_callbacks


def _first_batch_inputs(dataset: tf.data.Dataset):
    batch = next(iter(dataset))
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _callbacks(run, config, models, data, checkpoint, schedule_callbacks, progress, timer, extra):
    monitor = config["monitor"]
    settings = config["evaluation"]
    callbacks = [
        TrainingTensorBoard(
            log_dir=run.tensorboard_dir, update_freq="epoch", write_graph=False, profile_batch=0
        ),
        *schedule_callbacks,
        BitMonitor(
            data.monitor_inputs,
            os.path.join(run.tensorboard_dir, "bits"),
            histogram_bits=monitor["histogram_bits"],
            every_n_epochs=monitor["every_n_epochs"],
            feature_model=models.continuous_encoder,
            code_model=models.encoder,
        ),
    ]
    if settings["every_n_epochs"]:
        callbacks.append(
            RetrievalEvaluation(
                data.query,
                data.database,
                os.path.join(run.tensorboard_dir, "retrieval"),
                every_n_epochs=settings["every_n_epochs"],
                top_k=settings["top_k"],
                encoder=models.encoder,
                progress=progress,
            )
        )
    if data.validation is not None:
        validation = RetrievalEvaluation(
            *data.validation,
            os.path.join(run.tensorboard_dir, "validation"),
            every_n_epochs=settings["every_n_epochs"] or 1,
            top_k=settings["top_k"],
            encoder=models.encoder,
            progress=progress,
        )
        callbacks.append(validation)
        if settings["select_epoch"] == "best_validation":
            callbacks.append(BestValidationEpoch(validation, _best_path(run)))
    # The checkpoint last: it saves the state after every other callback ran (e.g. a
    # ReduceLROnPlateau that just changed the rate).
    return [*callbacks, *extra, timer, checkpoint.callback()]


def _best_path(run: Workdir) -> str:
    return os.path.join(run.checkpoint_dir, "best_validation.npz")


def _check_selection(config: dict) -> None:
    settings = config["evaluation"]
    if settings["select_epoch"] not in ("final", "best_validation"):
        raise InputError(
            f"evaluation.select_epoch must be 'final' or 'best_validation'; got "
            f"{settings['select_epoch']!r}."
        )
    if settings["select_epoch"] == "best_validation" and not settings["validation_fraction"]:
        raise InputError(
            "evaluation.select_epoch='best_validation' needs evaluation.validation_fraction > 0: "
            "an epoch is never selected on the query set."
        )


def _fit(
    models: TaskModels,
    data: TaskData,
    distribution: tf.distribute.Strategy,
    config: dict,
    initial_epoch: int,
    callbacks: list,
    progress: bool,
) -> list[float]:
    """Trains epochs ``initial_epoch .. epochs - 1``; returns each epoch's mean loss.

    Under ``MultiWorkerMirroredStrategy`` the exact multi-worker step loop of
    ``tf_bihalf.training.distributed.fit`` replaces ``model.fit`` (which fails across workers
    and weights an uneven last batch wrongly): the chief's state and epoch are broadcast first,
    each worker trains on its rows of every global batch, only the chief runs the callbacks
    that write files.
    """

    def train_data(epoch: int) -> tf.data.Dataset:  # iterated for the whole run
        return pipelines.for_whole_run(data.train(epoch))

    if distributed.is_multi_worker(distribution):
        return distributed.fit(
            models.train_model,
            models.loss,
            train_data,
            distribution,
            epochs=config["epochs"],
            initial_epoch=initial_epoch,
            steps_per_epoch=data.steps_per_epoch,
            callbacks=callbacks,
            verbose=1 if progress else 2,
        )
    history = models.train_model.fit(
        train_data(initial_epoch),
        epochs=config["epochs"],
        initial_epoch=initial_epoch,
        steps_per_epoch=data.steps_per_epoch,
        callbacks=callbacks,
        verbose=1 if progress else 2,
        shuffle=False,  # the task's pipeline shuffles, per epoch and resumably
    )
    return [float(value) for value in history.history["loss"]]


def evaluate(models: TaskModels, data: TaskData, config: dict, progress: bool):
    """Encodes the query set and the database with the final model; returns every metric of
    ``config["evaluation"]`` (``tf_bihalf.training.evaluation.evaluate_retrieval``) and the
    ``(codes, labels)`` of both."""
    settings = config["evaluation"]
    query = evaluation.encode_dataset(models.encoder, data.query, progress, "encoding the queries")
    database = evaluation.encode_dataset(
        models.encoder, data.database, progress, "encoding the database"
    )
    scores = evaluation.evaluate_retrieval(
        query,
        database,
        top_k=settings["top_k"],
        extra_top_k=settings["extra_top_k"],
        precision_ns=settings["precision_at"],
        ties=settings["ties"],
        radius=settings["radius"],
    )
    return scores, query, database


def train_and_evaluate(
    task: Task,
    config: dict,
    workdir: str,
    progress: bool | None = None,
    extra_callbacks: tuple = (),
) -> dict:
    """Trains (or resumes) ``task`` in ``workdir``, evaluates the final model and writes the run
    directory (see the module docstring). Returns the ``results.json`` dict, plus ``"summary"``
    (one human-readable line, not written to the file).

    Args:
        task: the model family's ``Task``, built from ``config``.
        config: the resolved config (its common keys: see the module docstring).
        workdir: the run directory; an existing one with the same config resumes.
        progress: progress bars (True), one line per epoch (False), or by terminal (None).
        extra_callbacks: Keras callbacks run before the checkpoint (tests use it to stop a run).
    """
    if task.name != config["task"]:
        raise InputError(f"Config task {config['task']!r} given to the {task.name!r} task.")
    _check_selection(config)
    progress = default_progress() if progress is None else bool(progress)
    started = time.perf_counter()
    run = prepare_workdir(workdir, config)
    run.lock()
    try:
        results = _train_and_evaluate(task, config, run, progress, extra_callbacks, started)
    finally:
        run.unlock()
    return results


def _train_and_evaluate(task, config, run: Workdir, progress, extra_callbacks, started) -> dict:
    logging.info("Run directory: %s%s", run.path, " (resuming)" if run.resuming else "")
    config_hash = config_sha256(_to_json(config))
    keras.utils.set_random_seed(int(config["seed"]))
    task.prepare(run)
    distribution = strategy.get_strategy(config["strategy"])
    replicas = distribution.num_replicas_in_sync
    with distribution.scope():
        models = task.build_models()
    data = task.build_data(models, run)
    with distribution.scope():
        optimizer, schedule_callbacks = _compile(models, config, data, replicas)
        if not models.train_model.built:
            models.train_model(_first_batch_inputs(data.train(0)))
    checkpoint = TrainingCheckpoint(
        run.checkpoint_dir, models.train_model, optimizer, config_sha256=config_hash
    )
    initial_epoch = min(checkpoint.restore(), config["epochs"])

    timer = EpochTimer()
    losses: list[float] = []
    multi_worker = distributed.is_multi_worker(distribution)
    # Under multi_worker every worker enters the step loop (its start-up broadcast from the
    # chief must meet all of them), even when the chief has nothing left to train.
    if initial_epoch < config["epochs"] or multi_worker:
        callbacks = _callbacks(
            run,
            config,
            models,
            data,
            checkpoint,
            schedule_callbacks,
            progress,
            timer,
            list(extra_callbacks),
        )
        losses = _fit(
            models, data, distribution, config, initial_epoch, callbacks, progress=progress
        )
    else:
        logging.info("All %d epochs were already trained; evaluating.", config["epochs"])
    if multi_worker and not distributed.is_chief(distribution):
        # The chief evaluates and writes the run; the other workers only trained with it.
        return {"summary": "worker finished (the chief writes the results)", "training": {}}
    selected_epoch = config["epochs"]
    if config["evaluation"]["select_epoch"] == "best_validation":
        best = BestValidationEpoch(None, _best_path(run)).restore(models.train_model)
        if best is None:
            raise InputError(
                "No validation evaluation ran, so no epoch can be selected: set "
                "evaluation.every_n_epochs >= 1."
            )
        selected_epoch = best[0]
        logging.info("Selected epoch %d (validation mAP %.4f).", best[0], best[1])

    evaluation_start = time.perf_counter()
    scores, query, database = evaluate(models, data, config, progress)
    evaluation_time = time.perf_counter() - evaluation_start
    models.export_model.save(run.encoder_path)
    fields = task.record_fields(models)
    record = RunRecord(
        task=task.name,
        config_name=config["config_name"],
        dataset=config["dataset"],
        protocol=config["protocol"],
        seed=int(config["seed"]),
        bits=int(config["bits"]),
        hash_layer=config["hash_layer"],
        hash_layer_kwargs=dict(config["hash_layer_kwargs"]),
        input=fields.input,
        preprocessing=dict(fields.preprocessing),
        backbone=fields.backbone,
        config_sha256=config_hash,
    )
    record.write(run.path)
    title = task.title()
    plot_paths = plots.write_plots(scores, run.plots_dir, title=title)
    plot_paths += pictures.write_retrieval_pictures(
        task, run, query, database, seed=int(config["seed"])
    )
    training = {
        "epochs": config["epochs"],
        "resumed_from_epoch": initial_epoch,
        "steps_per_epoch": data.steps_per_epoch,
        "loss_history_this_process": losses,
        "final_loss": losses[-1] if losses else None,
        **throughput(timer, data.examples_per_epoch),
    }
    selection = {
        "select_epoch": config["evaluation"]["select_epoch"],
        "selected_epoch": selected_epoch,
    }
    if not losses and os.path.exists(run.results_path):
        # Nothing was trained in this process: keep the training record of the earlier one.
        previous = read_json(run.results_path)["training"]
        training = dict(previous, re_evaluated=True)
    training.update(selection)
    results = {
        "record": record.to_dict(),
        "config": _to_json(config),
        "metrics": scores,
        "training": training,
        "data_report": data.report,
        "evaluation_wall_time_s": evaluation_time,
        "total_wall_time_s": time.perf_counter() - started,
        "environment": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "replicas": replicas,
        },
        "files": {
            "encoder": os.path.basename(run.encoder_path),
            "record": os.path.basename(run.record_path),
            "plots": [os.path.relpath(path, run.path) for path in plot_paths],
            "tensorboard": os.path.relpath(run.tensorboard_dir, run.path),
        },
    }
    run.write_results(results)
    averaged = scores.get("map_ties_average")  # absent when the ties rule is "average"
    summary = (
        f"mAP@{scores['map_at']} = {scores['map']:.4f} (ties: {scores['ties']}"
        + (f"; tie-averaged {averaged:.4f}" if averaged is not None else "")
        + "), precision within radius "
        f"{scores['precision_within_radius']['radius']} = "
        f"{scores['precision_within_radius']['precision']:.4f}, mean bit entropy = "
        f"{scores['bits']['mean_entropy']:.4f}"
    )
    logging.info("%s: %s", title, summary)
    results["summary"] = f"{title}: {summary}\nresults: {run.results_path}"
    return results
