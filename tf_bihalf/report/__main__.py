"""``python -m tf_bihalf.report RUN_OR_ROOT... --out DIR``: the experiment report.

Reads every finished run directory (one with ``results.json``) under the given paths, averages
runs that differ only in the seed, and writes ``DIR/report.md``, ``DIR/report.json``,
``DIR/plots/*.png`` and ``DIR/tensorboard/``. Refuses (exit status 2, one line naming the config
key) to average runs whose resolved configs differ otherwise; ``--split_on=KEY,...`` makes one row
per value of those dotted keys instead. See docs/experiments.md.

Example::

    python -m tf_bihalf.report runs/sweeps/autoencoder --out runs/sweeps/autoencoder/report
"""

from __future__ import annotations

import shlex
import sys

from absl import app, flags, logging

from tf_bihalf.report.document import write_report

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined only when run as a program (importing this module defines no flags)."""
    flags.DEFINE_string("out", None, "Directory the report is written to.")
    flags.DEFINE_list(
        "split_on",
        [],
        "Dotted config keys whose values make separate rows instead of a refusal "
        "(e.g. epochs,optimizer.learning_rate).",
    )
    flags.DEFINE_bool("tensorboard", True, "Also write the plots as TensorBoard images.")


def main(argv: list[str]) -> None:
    paths = argv[1:]
    try:
        if not paths:
            raise ValueError("Name at least one run directory or sweep root.")
        if not FLAGS.out:
            raise ValueError("--out is required (the directory the report is written to).")
        command = shlex.join(["python", "-m", "tf_bihalf.report", *sys.argv[1:]])
        write_report(paths, FLAGS.out, FLAGS.split_on, FLAGS.tensorboard, command)
    except (ValueError, FileNotFoundError) as error:
        logging.error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
