#!/usr/bin/env bash
# The prepared GPU check (docs/BENCHMARKS.md, "GPU check"): on a machine with an NVIDIA GPU,
#
#     pip install -e ".[gpu]" && bash benchmarks/gpu_check.sh [--workdir DIR] [--epochs 10]
#
# runs in under 8 minutes and prints ONE table: the layer tests on the GPU, the autoencoder
# main job on GPU and CPU side by side (steps/s, mAP equal within --map_tolerance), the image
# head on cached features of a generated folder, Bi-half under MirroredStrategy (two replicas,
# graph mode), and the step times with XLA on and off. Exit status 1 if a check fails.
# Without a GPU the GPU-only rows are skipped (with a note) and the rest run on the CPU.
# MNIST must be available offline: $TF_BIHALF_DATA/mnist.npz (python -m tf_bihalf.data.fetch).
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout "${GPU_CHECK_TIMEOUT:-480}" python benchmarks/gpu_check.py "$@"
