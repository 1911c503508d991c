"""Run a trainer as N workers on this machine: ``MultiWorkerMirroredStrategy`` over local processes.

Usage::

    python -m trainers.launch --workers=2 -- python -m trainers.autoencoder --dataset=digits --smoke

Starts N copies of the command after ``--``, each with ``TF_CONFIG`` naming the N workers on
127.0.0.1 (free ports picked here) and its own index, with ``--strategy=multi_worker`` appended.
Worker 0 is the chief: it keeps the command's ``--workdir`` (or the trainer's default) and its
output is streamed here; it alone writes checkpoints, TensorBoard, ``results.json`` and
``encoder.keras``. The other workers get ``--workdir=<a temporary directory>`` (removed at the
end) and their output goes to a log there, shown if they fail. When one worker fails, the others
are stopped (SIGTERM, then SIGKILL) and the launcher exits with that worker's status; when the
chief has finished, the job has succeeded and the others are stopped too (all they have left is
a copy of the chief's final evaluation); Ctrl-C stops them all. Re-running the same command resumes from the chief's last epoch checkpoint.

``--collective_timeout_s`` sets ``$TF_BIHALF_COLLECTIVE_TIMEOUT_S`` for the workers (how long a
collective waits for a dead or hung peer before the job fails). On a GPU machine,
``--gpus_per_worker=K`` gives worker ``i`` the GPUs ``i*K .. i*K+K-1`` (``CUDA_VISIBLE_DEVICES``).
Several hosts: docs/distributed.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging

import trainers

trainers.import_tensorflow_quietly()

from tf_bihalf.errors import InputError  # noqa: E402

TIMEOUT_ENVIRONMENT_VARIABLE = "TF_BIHALF_COLLECTIVE_TIMEOUT_S"  # distributed.py's
POLL_INTERVAL_S = 0.2
STOP_GRACE_S = 10.0


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that are free on ``host`` right now."""
    sockets = []
    try:
        for _ in range(count):
            handle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            handle.bind((host, 0))
            sockets.append(handle)
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def tf_config(addresses: list[str], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` of the cluster ``addresses`` (JSON)."""
    return json.dumps(
        {"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}}
    )


def worker_commands(command: list[str], workers: int, scratch: str) -> list[list[str]]:
    """The command of each worker: ``--strategy=multi_worker`` appended; non-chief workers also
    get ``--workdir`` in ``scratch`` (the last flag wins, so a ``--workdir`` of the command only
    applies to the chief)."""
    commands = []
    for index in range(workers):
        arguments = [*command, "--strategy=multi_worker"]
        if index > 0:
            arguments.append(f"--workdir={os.path.join(scratch, f'worker-{index}')}")
        commands.append(arguments)
    return commands


def worker_environment(
    addresses: list[str],
    index: int,
    timeout_s: float | None = None,
    gpus_per_worker: int = 0,
    base: dict | None = None,
) -> dict:
    environment = dict(os.environ if base is None else base)
    environment["TF_CONFIG"] = tf_config(addresses, index)
    if timeout_s is not None:
        environment[TIMEOUT_ENVIRONMENT_VARIABLE] = str(timeout_s)
    if gpus_per_worker:
        first = index * gpus_per_worker
        environment["CUDA_VISIBLE_DEVICES"] = ",".join(
            str(gpu) for gpu in range(first, first + gpus_per_worker)
        )
    return environment


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to every running worker (its process group), SIGKILL after a grace period."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in running:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as file:
            return "".join(file.readlines()[-lines:])
    except OSError:
        return ""


def launch(
    command: list[str],
    workers: int,
    timeout_s: float | None = None,
    gpus_per_worker: int = 0,
) -> int:
    """Runs ``command`` as ``workers`` local workers (module docstring); returns the job's exit
    status: 0 when the chief succeeded before any worker failed, else the failing worker's."""
    if workers < 1:
        raise InputError(f"--workers must be >= 1; got {workers}.")
    if not command:
        raise InputError(
            "No command to run: give it after --, e.g. python -m trainers.launch --workers=2 "
            "-- python -m trainers.autoencoder --smoke"
        )
    if timeout_s is not None and not timeout_s > 0:
        raise InputError(f"--collective_timeout_s must be positive; got {timeout_s}.")
    addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    scratch = tempfile.mkdtemp(prefix="tf_bihalf_workers_")
    processes: list[subprocess.Popen] = []
    logs: list[str | None] = []
    status = 0
    try:
        for index, arguments in enumerate(worker_commands(command, workers, scratch)):
            environment = worker_environment(addresses, index, timeout_s, gpus_per_worker)
            log_path = None if index == 0 else os.path.join(scratch, f"worker-{index}.log")
            output = None if log_path is None else open(log_path, "wb")  # noqa: SIM115
            try:
                processes.append(
                    subprocess.Popen(
                        arguments,
                        env=environment,
                        stdout=output,
                        stderr=subprocess.STDOUT if output is not None else None,
                        start_new_session=True,  # its own process group, stopped as one
                    )
                )
            except OSError as error:
                raise InputError(f"Cannot start {arguments[0]!r}: {error}.") from None
            finally:
                if output is not None:
                    output.close()
            logs.append(log_path)
        logging.info("Started %d workers on %s.", workers, ", ".join(addresses))
        while True:
            codes = [process.poll() for process in processes]
            failed = [index for index, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                index = failed[0]
                status = codes[index]
                ended = (
                    f"was killed by signal {-status}"
                    if status < 0
                    else f"exited with status {status}"
                )
                message = (
                    f"Worker {index} {ended}; stopping the others. Fix the cause and re-run the same "
                    "command: the workers resume together from the chief's last epoch checkpoint."
                )
                if logs[index]:
                    message += f" Its last output:\n{_tail(logs[index])}"
                logging.error("%s", message)
                break
            if codes[0] == 0:
                # The chief has written everything; the others only repeat its final evaluation
                # into their scratch directories (every training collective is done).
                break
            time.sleep(POLL_INTERVAL_S)
    except KeyboardInterrupt:
        status = 130
    finally:
        _stop(processes)
        shutil.rmtree(scratch, ignore_errors=True)
    # A negative status is a signal: report it as the shell does.
    return 128 - status if status < 0 else status


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The launcher's flags (defined from ``__main__`` only)."""
    define = {"flag_values": flag_values}
    flags.DEFINE_integer("workers", 2, "Number of worker processes on this machine.", **define)
    flags.DEFINE_float(
        "collective_timeout_s",
        None,
        f"Collective timeout of the workers (default ${TIMEOUT_ENVIRONMENT_VARIABLE}, else 300 s).",
        **define,
    )
    flags.DEFINE_integer(
        "gpus_per_worker", 0, "GPUs per worker (CUDA_VISIBLE_DEVICES); 0 = leave as is.", **define
    )


def main(argv):
    values = flags.FLAGS
    try:
        status = launch(
            argv[1:], values.workers, values.collective_timeout_s, values.gpus_per_worker
        )
    except InputError as error:
        sys.stderr.write(f"error: {error}\n")
        sys.exit(2)
    sys.exit(status)


if __name__ == "__main__":
    define_flags()
    app.run(main)
