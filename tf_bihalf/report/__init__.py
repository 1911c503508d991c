"""Experiment reports: aggregate run directories over seeds, beside the paper's numbers.

- ``python -m tf_bihalf.report RUN_OR_ROOT... --out DIR``: ``report.md``, ``report.json``,
  comparison plots and TensorBoard images (``tf_bihalf.report.document``).
- ``aggregation``: run directories -> cells of mean ± sd over seeds; refuses to average runs whose
  resolved configs differ in anything but the seed, naming the key.
- ``published``: the paper's published mAP tables as data, with their source.
- ``retrieval_grid``: pictures of retrieval (query + top-10 grid, TensorBoard embedding
  projector) that a training run writes.

See docs/experiments.md.
"""

from tf_bihalf.report.aggregation import Cell, Run, Statistic, aggregate, load_run, load_runs
from tf_bihalf.report.document import write_report

__all__ = ["Cell", "Run", "Statistic", "aggregate", "load_run", "load_runs", "write_report"]
