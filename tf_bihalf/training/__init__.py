"""Training infrastructure shared by the trainers (library level: no trainer/config imports).

Modules: ``optimizers`` (PyTorch-rule SGD/Adam with coupled L2), ``schedules`` (epoch
milestones per step, plateau), ``pipelines`` (resumable per-epoch shuffled batches),
``checkpoint`` (epoch checkpoints and resume), ``workdir`` (the run directory), ``strategy``
(MirroredStrategy and the others), ``distributed`` (multi-worker strategy and its exact step
loop), ``loop`` (the one training loop), ``task`` (the Task interface), ``record`` (the run
record), ``pictures`` (retrieval pictures), ``submodels`` (how a model exposes U and its codes), ``evaluation``
(encode + retrieval metrics), ``plots`` (PNG plots). Import the submodules directly, e.g.
``from tf_bihalf.training.optimizers import build_optimizer``.
"""
