"""Multi-worker training: ``MultiWorkerMirroredStrategy`` from ``TF_CONFIG`` and an exact step loop.

Why not ``model.fit``: across worker processes Keras 3.15's ``fit`` fails when it reduces the
batch (``Attempt to convert a value (PerReplica...)``, then ``Invalid reduction dimension 0`` on
scalar logs; keras-team/keras#20585, tensorflow/tensorflow#72388), and even patched it weights an
uneven last batch wrongly (each replica's local mean divided by the replica count). This module
runs the training loop itself, so that R replicas on W workers train exactly like one process:

- every worker builds the same global batch (the task's pipeline is a function of
  ``(seed, epoch)`` only) and replica ``r`` keeps the rows ``row_range(M, R, r)``: contiguous
  slices in replica order, so the gathered global batch is the single-process batch, row for row
  (tf.data's DATA sharding policy, by rows of each batch). The Bi-half layer all-gathers U across
  replicas and so ranks over exactly that batch (docs/paper.md, "The Bi-half layer");
- the loss of replica ``r`` is ``sum(per-row loss of its rows) / M`` with ``M`` the all-reduced
  global row count, plus each layer loss (``model.losses``, e.g. SignReg's balance term) weighted
  by the replica's share of the rows ``m_r / M``; the optimizer's ``apply`` all-reduces (sums) the
  gradients, so an uneven last batch (4 + 3 rows) gets the gradient of the 7-row mean;
- the step is one ``tf.function`` without XLA (XLA does not compile the ring collectives on CPU);
- the Keras callbacks run as under ``fit`` (``on_train_begin``, ``on_epoch_begin``,
  ``on_train_batch_begin/end``, ``on_epoch_end`` with ``logs={"loss": ...}``, ``on_train_end``);
  the epoch loss is the batch-size-weighted mean of the steps' global losses, as ``fit`` logs it.
  Only the chief runs the callbacks that write (TensorBoard, bit monitor, retrieval evaluation,
  epoch checkpoints); every worker runs the others (schedules, timers, stop requests);
- at the start the chief's state is broadcast: every model and optimizer variable and the epoch
  to resume from, so workers resume together from the chief's checkpoint whatever their own
  disks hold;
- a collective that fails (a dead peer, noticed by TensorFlow's coordination service from its
  missing heartbeats; or no step completing within the collective timeout, always set, see
  ``collective_timeout_s``) ends the worker with ``WorkerFailure``: one line that says which
  worker, what failed, and to restart all workers.

``TF_CONFIG`` (read by ``cluster_from_environment``) is TensorFlow's::

    {"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}

Worker 0 (or the task of type ``"chief"`` when the cluster has one) is the chief. See
docs/distributed.md for the launcher (``python -m trainers.launch``) and several hosts.

Example:

>>> row_range(7, 2, 0), row_range(7, 2, 1)  # an uneven last batch: 4 + 3 rows
((0, 4), (4, 7))
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_bihalf.callbacks.summary import SummaryCallback
from tf_bihalf.errors import InputError
from tf_bihalf.training.checkpoint import TrainingCheckpoint

#: Environment variable with the collective timeout in seconds (a positive number).
TIMEOUT_ENVIRONMENT_VARIABLE = "TF_BIHALF_COLLECTIVE_TIMEOUT_S"
#: Collective timeout when the variable is not set: long enough for a slow first step (graph
#: tracing, a checkpoint write on the chief), short enough that a dead peer ends the job.
DEFAULT_COLLECTIVE_TIMEOUT_S = 300.0

# The errors a collective raises when a peer dies, is unreachable, or times out.
_COLLECTIVE_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
    tf.errors.InternalError,
    tf.errors.UnknownError,
    tf.errors.FailedPreconditionError,
)


class WorkerFailure(InputError):
    """A collective with the other workers failed: a worker died, hung or is unreachable.

    An ``InputError`` so that the trainers report it as one line (exit status 2): the fix is
    to restart every worker, which resume from the chief's last checkpoint.
    """


def collective_timeout_s(value: float | str | None = None) -> float:
    """The collective timeout: ``value``, else ``$TF_BIHALF_COLLECTIVE_TIMEOUT_S``, else 300 s.

    >>> collective_timeout_s(20)
    20.0
    """
    source = "the collective timeout"
    if value is None:
        value = os.environ.get(TIMEOUT_ENVIRONMENT_VARIABLE)
        source = f"${TIMEOUT_ENVIRONMENT_VARIABLE}"
        if value is None or not str(value).strip():
            return DEFAULT_COLLECTIVE_TIMEOUT_S
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{source} must be a number of seconds; got {value!r}.") from None
    if not np.isfinite(seconds) or seconds <= 0:
        raise InputError(f"{source} must be a positive number of seconds; got {value!r}.")
    return seconds


def cluster_from_environment(environ=None) -> dict:
    """``TF_CONFIG`` parsed and checked: ``{"cluster": {...}, "task": {"type", "index"}}``.

    Raises:
        InputError: ``TF_CONFIG`` is missing, not JSON, or does not name this task in its
            cluster (the message says what is wrong and what it should look like).
    """
    environ = os.environ if environ is None else environ
    example = (
        'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\' (python -m trainers.launch sets it)'
    )
    text = environ.get("TF_CONFIG")
    if text is None or not text.strip():
        raise InputError(
            f"--strategy=multi_worker needs the TF_CONFIG environment variable; {example}."
        )
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"TF_CONFIG is not valid JSON ({error}); {example}.") from None
    if not isinstance(tf_config, dict):
        raise InputError(f"TF_CONFIG must be a JSON object; {example}.")
    cluster, task = tf_config.get("cluster"), tf_config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise InputError(f'TF_CONFIG has no "cluster" object; {example}.')
    for job, addresses in cluster.items():
        if job not in ("chief", "worker"):
            raise InputError(
                f'TF_CONFIG cluster job {job!r}: only "chief" and "worker" jobs train '
                "with MultiWorkerMirroredStrategy."
            )
        if (
            not isinstance(addresses, list)
            or not addresses
            or not all(isinstance(a, str) and ":" in a for a in addresses)
        ):
            raise InputError(
                f'TF_CONFIG cluster job {job!r} must list "host:port" addresses; got {addresses!r}.'
            )
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise InputError(f'TF_CONFIG has no "task" with "type" and "index"; {example}.')
    task_type, index = task["type"], task["index"]
    if task_type not in cluster:
        raise InputError(
            f"TF_CONFIG task type {task_type!r} is not a job of the cluster {sorted(cluster)}."
        )
    if (
        not isinstance(index, int)
        or isinstance(index, bool)
        or not 0 <= index < len(cluster[task_type])
    ):
        raise InputError(
            f"TF_CONFIG task index {index!r} is out of range for the {len(cluster[task_type])} "
            f"{task_type!r} address(es)."
        )
    if "chief" in cluster and len(cluster["chief"]) != 1:
        raise InputError('TF_CONFIG cluster may have only one "chief".')
    return {"cluster": cluster, "task": {"type": task_type, "index": index}}


def is_chief_task(tf_config: dict) -> bool:
    """The chief: the ``"chief"`` task, or worker 0 when the cluster has no chief."""
    task = tf_config["task"]
    if "chief" in tf_config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def worker_name(tf_config: dict) -> str:
    return f"{tf_config['task']['type']} {tf_config['task']['index']}"


def _fresh_eager_context() -> None:
    """Collective ops can only be configured before TensorFlow's eager context starts, and the
    trainers start it early (device discovery, seeding, the data check). When it has started,
    it is replaced by a fresh one, keeping the global seed; nothing built before (there is no
    model yet when the loop asks for its strategy) may be used afterwards."""
    from tensorflow.python.eager import context  # noqa: PLC0415 (TensorFlow-internal)

    current = context.context()
    if current._context_handle is None:  # noqa: SLF001
        return
    seed = current._seed  # noqa: SLF001
    context._reset_context()  # noqa: SLF001
    if seed is not None:
        tf.random.set_seed(seed)


class CollectiveWatchdog:
    """One thread that aborts this worker's collectives when a guarded block (a training step,
    the start-up broadcast) runs longer than ``timeout_s``: a peer that hangs without dying
    (its heartbeats go on) then fails the job instead of blocking it forever.

    Use as ``with CollectiveWatchdog(300) as watchdog: ... with watchdog.guard(): step()``.
    """

    def __init__(self, timeout_s: float):
        self.timeout_s = float(timeout_s)
        self.fired = False
        self._deadline: float | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="tf_bihalf-collective-watchdog", daemon=True
        )

    def __enter__(self) -> CollectiveWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exception) -> None:
        self._stopped.set()
        self._thread.join()

    @contextlib.contextmanager
    def guard(self):
        with self._lock:
            self._deadline = time.monotonic() + self.timeout_s
        try:
            yield
        finally:
            with self._lock:
                self._deadline = None

    def _watch(self) -> None:
        from tensorflow.python.eager import context  # noqa: PLC0415 (TensorFlow-internal)

        while not self._stopped.wait(min(1.0, self.timeout_s / 10)):
            with self._lock:
                deadline = self._deadline
            if deadline is not None and time.monotonic() > deadline:
                self.fired = True
                context.context().abort_collective_ops(
                    tf.errors.DEADLINE_EXCEEDED,
                    f"no training step completed within the collective timeout "
                    f"({self.timeout_s:.0f} s): a worker hangs",
                )
                return


def multi_worker_strategy(timeout_s: float | None = None) -> tf.distribute.Strategy:
    """``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``: NCCL on GPUs, RING otherwise, with
    the collective timeout ``collective_timeout_s(timeout_s)``."""
    tf_config = cluster_from_environment()
    timeout = collective_timeout_s(timeout_s)
    gpus = tf.config.list_logical_devices("GPU")
    implementation = (
        tf.distribute.experimental.CommunicationImplementation.NCCL
        if gpus
        else tf.distribute.experimental.CommunicationImplementation.RING
    )
    # No ``timeout_seconds`` here: TensorFlow enforces it with one new sleeping thread per
    # collective op (Env::SchedClosureAfter), ~14 per training step, alive for the whole timeout:
    # 13,000 threads after two MNIST epochs, then "Resource temporarily unavailable". The loop's
    # watchdog (one thread) aborts the collectives instead when a step overruns the timeout.
    options = tf.distribute.experimental.CommunicationOptions(implementation=implementation)
    _fresh_eager_context()
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    strategy.collective_timeout_s = timeout  # read by ``fit``'s watchdog
    logging.info(
        "MultiWorkerMirroredStrategy: %s of %s, %d replicas in sync, %s collectives, "
        "timeout %.0f s.",
        worker_name(tf_config),
        json.dumps(tf_config["cluster"]),
        strategy.num_replicas_in_sync,
        "NCCL" if gpus else "RING",
        timeout,
    )
    return strategy


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints, summaries and results (``should_checkpoint``)."""
    return bool(strategy.extended.should_checkpoint)


def row_range(rows, replicas, replica):
    """The rows ``[start, stop)`` of a global batch of ``rows`` that ``replica`` trains on.

    Contiguous slices in replica order; the first ``rows % replicas`` replicas get one row more
    (``numpy.array_split``). Works on Python ints and on scalar tensors.
    """
    base = rows // replicas
    extra = rows - base * replicas
    if isinstance(replica, int):
        start = replica * base + min(replica, extra)
        return start, start + base + (1 if replica < extra else 0)
    start = replica * base + tf.minimum(replica, extra)
    return start, start + base + tf.cast(replica < extra, start.dtype)


def _row_losses(loss, targets, predictions):
    """Per-row values of ``loss`` (its mean over every non-batch axis), shape ``(rows,)``.

    ``sum(per_row) / M`` equals Keras' ``"sum_over_batch_size"`` reduction of the batch.
    """
    call = loss.call if isinstance(loss, keras.losses.Loss) else loss
    values = tf.convert_to_tensor(call(targets, predictions))
    values = tf.cast(values, tf.float32)
    if values.shape.rank == 0:
        raise InputError(
            "The task's loss returns a scalar, not one value per row: multi-worker training "
            "needs a per-example loss to weight uneven batches exactly."
        )
    axes = list(range(1, values.shape.rank))
    return tf.reduce_mean(values, axis=axes) if axes else values


def check_loss(loss) -> None:
    """Multi-worker training needs a per-example loss with Keras' mean reduction."""
    if loss is None:
        raise InputError(
            "--strategy=multi_worker needs a task whose loss is a per-example keras Loss (the "
            "autoencoder's); this task's model computes its own batch loss (e.g. the image "
            "task's pairwise cosine loss), which row-sharded workers cannot reproduce exactly."
        )
    reduction = getattr(loss, "reduction", "sum_over_batch_size")
    if reduction != "sum_over_batch_size":
        raise InputError(
            f"--strategy=multi_worker needs the loss reduction 'sum_over_batch_size' (a mean "
            f"over the rows); {type(loss).__name__} has {reduction!r}."
        )


def _writes_files(callback) -> bool:
    """Callbacks that write into the run directory: the chief's alone."""
    if isinstance(callback, (keras.callbacks.TensorBoard, SummaryCallback)):
        return True
    return isinstance(getattr(callback, "checkpoint", None), TrainingCheckpoint)


def _wire_type(dtype: np.dtype):
    """The dtype a variable travels in (exact): float64 for floats, int64 for the rest."""
    return np.float64 if np.issubdtype(dtype, np.floating) else np.int64


def broadcast_from_chief(strategy: tf.distribute.Strategy, arrays: list) -> list[np.ndarray]:
    """The chief's values of ``arrays`` (numpy), on every worker: an all-reduce (sum) in which
    every replica but replica 0 contributes zeros. Floats travel as float64 and integers as
    int64, so the values arrive bit for bit."""
    arrays = [np.asarray(array) for array in arrays]
    groups: dict = {}  # one all-reduce per wire dtype (a collective packs one dtype)
    for index, array in enumerate(arrays):
        groups.setdefault(_wire_type(array.dtype), []).append(index)

    def replica_fn(*values):
        context = tf.distribute.get_replica_context()
        first = tf.equal(context.replica_id_in_sync_group, 0)
        kept = [tf.where(first, value, tf.zeros_like(value)) for value in values]
        return context.all_reduce(tf.distribute.ReduceOp.SUM, kept)

    results: list = [None] * len(arrays)
    for wire_type, indices in sorted(groups.items(), key=lambda item: item[0].__name__):
        # The values are per worker (not mirrored): each worker passes its own.
        tensors = tuple(tf.constant(np.asarray(arrays[i], dtype=wire_type)) for i in indices)
        reduced = strategy.run(tf.function(replica_fn), args=tensors)
        local = strategy.experimental_local_results(reduced)[0]
        for index, value in zip(indices, local, strict=True):
            array = arrays[index]
            results[index] = np.asarray(value.numpy()).astype(array.dtype).reshape(array.shape)
    return results


def _state_variables(model: keras.Model) -> list:
    return list(model.variables) + list(model.optimizer.variables)


def synchronize_state(
    strategy: tf.distribute.Strategy, model: keras.Model, initial_epoch: int
) -> int:
    """Every model and optimizer variable, and the epoch to resume from, set to the chief's;
    returns that epoch."""
    variables = _state_variables(model)
    values = broadcast_from_chief(
        strategy,
        [np.asarray(int(initial_epoch), np.int64)]
        + [keras.ops.convert_to_numpy(variable) for variable in variables],
    )
    chief_epoch = int(values[0])
    for variable, value in zip(variables, values[1:], strict=True):
        variable.assign(value)
    if chief_epoch != int(initial_epoch):
        logging.info(
            "This worker's own checkpoints say epoch %d; resuming with the chief at epoch %d.",
            initial_epoch,
            chief_epoch,
        )
    return chief_epoch


def _make_train_step(strategy, model: keras.Model, loss, element_spec):
    optimizer = model.optimizer

    def replica_step(batch):
        context = tf.distribute.get_replica_context()
        inputs, targets = batch
        rows = tf.shape(tf.nest.flatten(inputs)[0])[0]
        start, stop = row_range(
            rows,
            context.num_replicas_in_sync,
            tf.cast(context.replica_id_in_sync_group, rows.dtype),
        )
        inputs, targets = tf.nest.map_structure(
            lambda tensor: tensor[start:stop], (inputs, targets)
        )
        local_rows = tf.cast(stop - start, tf.float32)
        global_rows = context.all_reduce(tf.distribute.ReduceOp.SUM, local_rows)
        with tf.GradientTape() as tape:
            predictions = model(inputs, training=True)
            total = tf.reduce_sum(_row_losses(loss, targets, predictions)) / global_rows
            if model.losses:
                layer_losses = tf.add_n(
                    [tf.cast(tf.reduce_sum(value), tf.float32) for value in model.losses]
                )
                total = total + layer_losses * (local_rows / global_rows)
        variables = model.trainable_variables
        gradients = tape.gradient(total, variables)
        # Keras' optimizer sums the gradients over the replicas before it updates (in replica
        # context), which makes the sum of the replicas' losses the one being minimised.
        optimizer.apply(gradients, variables)
        return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(total))

    @tf.function(input_signature=(element_spec,), jit_compile=False)
    def train_step(batch):
        result = strategy.run(replica_step, args=(batch,))
        return strategy.experimental_local_results(result)[0]

    return train_step


def _batch_rows(batch) -> int:
    return int(tf.shape(tf.nest.flatten(batch)[0])[0])


def fit(
    model: keras.Model,
    loss,
    dataset_for_epoch,
    strategy: tf.distribute.Strategy,
    epochs: int,
    initial_epoch: int,
    steps_per_epoch: int,
    callbacks: list,
    verbose: int = 2,
) -> list[float]:
    """Trains epochs ``initial_epoch .. epochs - 1`` across the workers (module docstring);
    returns each epoch's loss (identical on every worker).

    Args:
        model: the compiled train model (its ``optimizer`` updates it).
        loss: a per-example ``keras.losses.Loss`` with the ``"sum_over_batch_size"`` reduction.
        dataset_for_epoch: ``initial_epoch -> tf.data.Dataset`` of ``(inputs, targets)`` GLOBAL
            batches of epochs ``initial_epoch .. epochs - 1`` (the same on every worker).
        strategy: a ``MultiWorkerMirroredStrategy``.
        epochs, initial_epoch, steps_per_epoch: as ``keras.Model.fit``.
        callbacks: Keras callbacks (the ones that write files run on the chief only).
        verbose: 0 silent, 1 progress bar, 2 one line per epoch (the chief's; others are silent).

    Raises:
        WorkerFailure: a collective failed (a worker died or timed out): restart every worker.
    """
    check_loss(loss)
    tf_config = cluster_from_environment()
    name = worker_name(tf_config)
    chief = is_chief(strategy)
    timeout = getattr(strategy, "collective_timeout_s", None) or collective_timeout_s()
    try:
        with strategy.scope():
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
        with CollectiveWatchdog(timeout) as watchdog:
            with watchdog.guard():
                initial_epoch = min(synchronize_state(strategy, model, initial_epoch), epochs)
            if not chief:
                callbacks = [callback for callback in callbacks if not _writes_files(callback)]
                verbose = 0
            return _run_epochs(
                model,
                loss,
                dataset_for_epoch(initial_epoch),
                strategy,
                epochs,
                initial_epoch,
                steps_per_epoch,
                callbacks,
                verbose,
                watchdog,
            )
    except _COLLECTIVE_ERRORS as error:
        summary = _error_summary(error)
        raise WorkerFailure(
            f"multi-worker training failed on {name}: a collective with the other workers "
            f"failed ({type(error).__name__}: {summary}). A worker died, hung past the "
            f"collective timeout ({timeout:.0f} s, ${TIMEOUT_ENVIRONMENT_VARIABLE})"
            " or is unreachable: stop every worker and restart all of them; they resume "
            "together from the chief's last epoch checkpoint."
        ) from None


def _error_summary(error: Exception, limit: int = 300) -> str:
    """The informative part of a TensorFlow runtime error: its first lines that are not the
    generic "Graph execution error", node names or Python frames, without status payloads."""
    lines = []
    for line in str(getattr(error, "message", error)).splitlines():
        line = re.sub(r"\s*\[type\.googleapis\.com/[^\]]*\]", "", line).strip()
        if not line or line.startswith(("Graph execution error", "Detected at node", "File ")):
            continue
        if line.startswith("[[") or line.startswith("The error could be from"):
            continue
        lines.append(line)
        if len(lines) == 2:
            break
    return " ".join(lines)[:limit] or "no message"


def _run_epochs(
    model,
    loss,
    dataset,
    strategy,
    epochs,
    initial_epoch,
    steps_per_epoch,
    callbacks,
    verbose,
    watchdog: CollectiveWatchdog,
) -> list[float]:
    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
    )
    train_step = _make_train_step(strategy, model, loss, dataset.element_spec)
    iterator = iter(dataset)
    model.stop_training = False
    losses: list[float] = []
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        weighted, rows = 0.0, 0
        started = time.perf_counter()
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            batch = next(iterator)
            batch_rows = _batch_rows(batch)
            with watchdog.guard():
                value = float(train_step(batch))
            weighted += value * batch_rows
            rows += batch_rows
            callback_list.on_train_batch_end(step, {"loss": weighted / rows})
        epoch_loss = weighted / rows
        losses.append(epoch_loss)
        logging.debug("Epoch %d: %.1f s.", epoch + 1, time.perf_counter() - started)
        callback_list.on_epoch_end(epoch, {"loss": epoch_loss})
        if model.stop_training:
            break
    callback_list.on_train_end({"loss": losses[-1]} if losses else None)
    return losses
