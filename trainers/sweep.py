"""Seeded sweeps: a grid of (config x hash layer x bits x seed) runs through the trainers' own
entry point, one run directory per cell.

Usage::

    python -m trainers.sweep --config=autoencoder --hash_layer=bihalf,sign,signreg \\
        --bits=16,32,64 --seeds=0,1,2
    python -m trainers.sweep --config=fashion_mnist_rgb --hash_layer=bihalf,sign \\
        --bits=16,32,64 --seeds=0,1,2 --root=runs/sweeps/fmnist_rgb --parallel=2
    python -m trainers.sweep ... --dry_run          # list the cells and their state, run nothing
    python -m trainers.sweep ... -- --epochs=30     # flags after "--" go to every trainer

Each cell runs as a subprocess::

    python -m trainers.<task> --config=<c> --hash_layer=<h> --bits=<b> --seed=<s> \\
        --workdir=<root>/<c>_<h>_<b>bits_seed<s> [extra flags]

where ``<task>`` is ``get_config()["task"]`` of ``configs/<c>.py``. A cell is done when its
``results.json`` exists (the run directory contract, docs/experiments.md), so re-running a killed
sweep skips the finished cells, and an unfinished cell resumes from its own checkpoints (its
work directory is the same). The trainer's output goes to ``<root>/<cell>/sweep.log`` (appended
to, one header per attempt); the command of every cell is kept in ``<root>/<cell>/sweep.json`` and
a later sweep that would run a different command in the same directory is refused (use another
``--root``). Cells run one at a time by default; ``--parallel=N`` runs N at once, and
``--devices=0,1`` gives each running cell one GPU (``CUDA_VISIBLE_DEVICES``). A summary table
is logged at the end; the exit status is non-zero when any cell failed (the others still ran).
Aggregate the finished grid with ``python -m tf_bihalf.report <root> --out <root>/report``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
import json
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from absl import app, flags, logging

RESULTS_FILE = "results.json"
LOG_FILE = "sweep.log"
COMMAND_FILE = "sweep.json"

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command-line flags; defined only when run as a program, so that importing this module
    (tests, other programs) never clashes with the trainers' flags of the same names."""
    flags.DEFINE_list("config", None, "Config names (configs/<name>.py), comma-separated.")
    flags.DEFINE_list(
        "hash_layer", None, "Hash layers, comma-separated (e.g. bihalf,sign,signreg)."
    )
    flags.DEFINE_list("bits", None, "Code lengths, comma-separated (e.g. 16,32,64).")
    flags.DEFINE_list("seeds", ["0"], "Seeds, comma-separated (e.g. 0,1,2).")
    flags.DEFINE_string(
        "root", None, "Directory of the cells' run directories; default runs/sweeps/<configs>."
    )
    flags.DEFINE_integer("parallel", None, "Cells run at once; default 1, or one per --devices.")
    flags.DEFINE_list(
        "devices", [], "GPU ids; each running cell gets one as CUDA_VISIBLE_DEVICES (e.g. 0,1)."
    )
    flags.DEFINE_bool("dry_run", False, "Log the cells, their state and commands; run nothing.")
    flags.DEFINE_string(
        "trainer_module",
        None,
        "Module run for every cell instead of trainers.<task> (for tests and custom trainers).",
    )


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the grid: what it is, where it lives, the command that runs it."""

    config: str
    hash_layer: str
    bits: int
    seed: int
    module: str
    workdir: str
    extra_args: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return cell_name(self.config, self.hash_layer, self.bits, self.seed)

    def command(self, python: str = sys.executable) -> list[str]:
        return [
            python,
            "-m",
            self.module,
            f"--config={self.config}",
            f"--hash_layer={self.hash_layer}",
            f"--bits={self.bits}",
            f"--seed={self.seed}",
            f"--workdir={self.workdir}",
            *self.extra_args,
        ]

    def is_done(self) -> bool:
        return os.path.isfile(os.path.join(self.workdir, RESULTS_FILE))

    def state(self) -> str:
        """``done`` (results.json exists), ``resume`` (work directory exists) or ``new``."""
        if self.is_done():
            return "done"
        return "resume" if os.path.isdir(self.workdir) else "new"


@dataclasses.dataclass
class CellOutcome:
    cell: Cell
    status: str  # "skipped" (was done), "ok", "failed", "dry_run"
    returncode: int | None = None
    wall_time_s: float | None = None
    message: str = ""


def cell_name(config: str, hash_layer: str, bits: int, seed: int) -> str:
    """``<config>_<hash_layer>_<bits>bits_seed<seed>``, the cell's directory name."""
    return f"{config}_{hash_layer}_{bits}bits_seed{seed}"


def _integers(values: Sequence[str | int], name: str) -> list[int]:
    try:
        numbers = [int(value) for value in values]
    except (TypeError, ValueError):
        raise ValueError(
            f"--{name} must be comma-separated integers; got {list(values)}."
        ) from None
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"--{name} lists a value twice: {numbers}.")
    return numbers


def _names(values: Sequence[str], name: str) -> list[str]:
    values = [value.strip() for value in values or [] if value.strip()]
    if not values:
        raise ValueError(f"--{name} is required (comma-separated, e.g. --{name}=a,b).")
    if len(set(values)) != len(values):
        raise ValueError(f"--{name} lists a value twice: {values}.")
    return values


def task_of(config: str) -> str:
    """The trainer task (``autoencoder``, ``image``, ``video``) of ``configs/<config>.py``."""
    if not config.isidentifier():
        raise ValueError(f"Config name {config!r} is not a module name.")
    try:
        module = importlib.import_module(f"configs.{config}")
    except ModuleNotFoundError as error:
        if error.name in (f"configs.{config}", "configs"):
            raise ValueError(f"Unknown config {config!r}: no configs/{config}.py.") from None
        raise
    task = module.get_config().get("task")
    if not isinstance(task, str) or not task:
        raise ValueError(
            f"configs/{config}.py's get_config() has no 'task' key naming its trainer "
            "(autoencoder, image or video)."
        )
    return task


def expand_grid(
    configs: Sequence[str],
    hash_layers: Sequence[str],
    bits: Sequence[int],
    seeds: Sequence[int],
    root: str,
    extra_args: Sequence[str] = (),
    trainer_module: str | None = None,
    resolve_task: Callable[[str], str] = task_of,
) -> list[Cell]:
    """The cells of the grid, config-major then hash layer, bits and seed (all seeds of a setting
    are adjacent, so a partly run sweep already has complete settings)."""
    cells = []
    for config in configs:
        module = trainer_module or f"trainers.{resolve_task(config)}"
        for hash_layer in hash_layers:
            for length in bits:
                for seed in seeds:
                    name = cell_name(config, hash_layer, length, seed)
                    cells.append(
                        Cell(
                            config=config,
                            hash_layer=hash_layer,
                            bits=int(length),
                            seed=int(seed),
                            module=module,
                            workdir=os.path.join(root, name),
                            extra_args=tuple(extra_args),
                        )
                    )
    return cells


def _recorded_command(cell: Cell) -> list[str] | None:
    path = os.path.join(cell.workdir, COMMAND_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        return json.load(file)["arguments"]


def check_commands(cells: Sequence[Cell]) -> None:
    """Refuses cells whose directory was made by a sweep with a different command (other extra
    flags, another trainer module): resuming or skipping them would mix settings silently."""
    for cell in cells:
        recorded = _recorded_command(cell)
        wanted = cell.command()[1:]  # Without the interpreter's path.
        if recorded is not None and recorded != wanted:
            raise ValueError(
                f"{cell.workdir} was run by a sweep with the command {shlex.join(recorded)!r}, "
                f"not {shlex.join(wanted)!r}; use another --root for different settings."
            )


def _run_cell(cell: Cell, python: str, devices: queue.Queue | None) -> CellOutcome:
    state = cell.state()
    os.makedirs(cell.workdir, exist_ok=True)
    command = cell.command(python)
    with open(os.path.join(cell.workdir, COMMAND_FILE), "w") as file:
        json.dump({"arguments": command[1:]}, file, indent=1)
    environment = dict(os.environ)
    device = devices.get() if devices is not None else None
    if device is not None:
        environment["CUDA_VISIBLE_DEVICES"] = str(device)
    start = time.monotonic()
    try:
        with open(os.path.join(cell.workdir, LOG_FILE), "a") as log:
            log.write(
                f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {state}"
                f"{f' device {device}' if device is not None else ''}: {shlex.join(command)}\n"
            )
            log.flush()
            returncode = subprocess.call(
                command, stdout=log, stderr=subprocess.STDOUT, env=environment
            )
    except OSError as error:
        return CellOutcome(cell, "failed", None, time.monotonic() - start, str(error))
    finally:
        if device is not None:
            devices.put(device)
    wall_time = time.monotonic() - start
    if returncode != 0:
        return CellOutcome(
            cell, "failed", returncode, wall_time, f"exit status {returncode}; see {LOG_FILE}"
        )
    if not cell.is_done():
        return CellOutcome(
            cell, "failed", returncode, wall_time, f"exited 0 but wrote no {RESULTS_FILE}"
        )
    return CellOutcome(cell, "ok", returncode, wall_time)


def run_sweep(
    cells: Sequence[Cell],
    parallel: int = 1,
    devices: Sequence[str] = (),
    dry_run: bool = False,
    python: str = sys.executable,
) -> list[CellOutcome]:
    """Runs the cells not yet done, ``parallel`` at a time; returns one outcome per cell, in
    grid order. A failing cell does not stop the others."""
    if parallel < 1:
        raise ValueError(f"--parallel must be at least 1; got {parallel}.")
    check_commands(cells)
    outcomes: dict[Cell, CellOutcome] = {}
    pending = []
    for cell in cells:
        if cell.is_done():
            outcomes[cell] = CellOutcome(cell, "skipped", message="results.json exists")
        elif dry_run:
            outcomes[cell] = CellOutcome(cell, "dry_run", message=cell.state())
            logging.info("%s (%s): %s", cell.name, cell.state(), shlex.join(cell.command(python)))
        else:
            pending.append(cell)
    logging.info(
        "Sweep: %d cells, %d done, %d to run, %d at a time.",
        len(cells),
        sum(outcome.status == "skipped" for outcome in outcomes.values()),
        len(pending) if not dry_run else len(cells) - len(outcomes),
        parallel,
    )
    device_queue = None
    if devices:
        device_queue = queue.Queue()
        for device in devices:
            device_queue.put(device)
    lock = threading.Lock()
    finished = [0]

    def work(cell: Cell) -> CellOutcome:
        logging.info("Starting %s (%s).", cell.name, cell.state())
        outcome = _run_cell(cell, python, device_queue)
        with lock:
            finished[0] += 1
            logging.log(
                logging.INFO if outcome.status == "ok" else logging.ERROR,
                "[%d/%d] %s: %s after %.0f s%s",
                finished[0],
                len(pending),
                cell.name,
                outcome.status,
                outcome.wall_time_s or 0.0,
                f" ({outcome.message})" if outcome.message else "",
            )
        return outcome

    if pending:
        with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as executor:
            for cell, outcome in zip(pending, executor.map(work, pending), strict=True):
                outcomes[cell] = outcome
    return [outcomes[cell] for cell in cells]


def _metric(cell: Cell) -> str:
    try:
        with open(os.path.join(cell.workdir, RESULTS_FILE)) as file:
            metrics = json.load(file)["metrics"]
        return f"{metrics['map']:.4f} @{metrics.get('map_at', '?')}"
    except (OSError, ValueError, KeyError, TypeError):
        return "-"


def summary_table(outcomes: Sequence[CellOutcome]) -> str:
    """A fixed-width table: cell, status, this sweep's wall time, mAP from results.json."""
    rows = [("cell", "status", "wall time", "mAP")]
    for outcome in outcomes:
        status = outcome.status
        if outcome.status == "failed":
            status = f"FAILED ({outcome.message})"
        elif outcome.status == "dry_run":
            status = f"would run ({outcome.message})"
        wall = f"{outcome.wall_time_s:.0f} s" if outcome.wall_time_s is not None else "-"
        rows.append((outcome.cell.name, status, wall, _metric(outcome.cell)))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def main(argv: Sequence[str]) -> int:
    extra_args = list(argv[1:])
    configs = _names(FLAGS.config, "config")
    hash_layers = _names(FLAGS.hash_layer, "hash_layer")
    bits = _integers(_names(FLAGS.bits, "bits"), "bits")
    seeds = _integers(_names(FLAGS.seeds, "seeds"), "seeds")
    # Normalised, so that "runs/x" and "./runs/x/" name the same cells (their commands match).
    root = os.path.normpath(FLAGS.root or os.path.join("runs", "sweeps", "+".join(configs)))
    parallel = FLAGS.parallel or max(1, len(FLAGS.devices))
    cells = expand_grid(
        configs, hash_layers, bits, seeds, root, extra_args, trainer_module=FLAGS.trainer_module
    )
    start = time.monotonic()
    outcomes = run_sweep(cells, parallel, FLAGS.devices, FLAGS.dry_run)
    logging.info(
        "Sweep %s (%.0f s wall time in this process):\n%s",
        root,
        time.monotonic() - start,
        summary_table(outcomes),
    )
    failed = [outcome.cell.name for outcome in outcomes if outcome.status == "failed"]
    if failed:
        logging.error("%d of %d cells failed: %s", len(failed), len(cells), ", ".join(failed))
        return 1
    if not FLAGS.dry_run:
        logging.info(
            "All cells done. Report: python -m tf_bihalf.report %s --out %s",
            root,
            os.path.join(root, "report"),
        )
    return 0


def _main(argv: Sequence[str]) -> None:
    try:
        sys.exit(main(argv))
    except (ValueError, FileNotFoundError) as error:
        logging.error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    define_flags()
    app.run(_main)
