"""The checks behind ``benchmarks/gpu_check.sh``: one table, exit status 1 if a check fails.

Each check runs in its own subprocess with a time limit, so that one hang or crash cannot take
the others with it. On a machine without a GPU the GPU-only rows say ``SKIP`` and why, and the
rest run on the CPU (that is how the script itself is tested). See docs/BENCHMARKS.md,
"GPU check".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MIRRORED_SNIPPET = r"""
import json, numpy as np, tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
if len(gpus) == 1:  # two logical GPUs on one chip: still two replicas and a real all-gather
    tf.config.set_logical_device_configuration(
        gpus[0], [tf.config.LogicalDeviceConfiguration(memory_limit=4096)] * 2)
elif not gpus:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tf_bihalf.layers import BiHalf
kind = "GPU" if gpus else "CPU"
devices = [d.name for d in tf.config.list_logical_devices(kind)]
strategy = tf.distribute.MirroredStrategy(devices)
rng = np.random.default_rng(0)
u = rng.normal(size=(256, 64)).astype("float32")
w = rng.normal(size=(256, 64)).astype("float32")
def reference(u):
    codes = -np.ones_like(u)
    for j in range(u.shape[1]):
        codes[np.argsort(-u[:, j], kind="stable")[: len(u) // 2], j] = 1.0
    return codes
per = len(u) // strategy.num_replicas_in_sync
with strategy.scope():
    layer = BiHalf(gamma=6.0)
def chunk(a):
    return strategy.experimental_distribute_values_from_function(
        lambda c: tf.constant(a[c.replica_id_in_sync_group * per:(c.replica_id_in_sync_group + 1) * per]))
results = {}
# Graph mode only: the trainers leave the cross-replica gather to the regular runtime
# (jit_compile "auto" = XLA on a single replica); XLA is checked on one device below.
for jit in (False,):
    @tf.function(jit_compile=jit)
    def step(x, up):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * up)
            codes = layer(x, training=True)
        return codes, tape.gradient(loss, x)
    codes, grads = strategy.run(step, args=(chunk(u), chunk(w)))
    codes = np.concatenate([t.numpy() for t in strategy.experimental_local_results(codes)])
    grads = np.concatenate([t.numpy() for t in strategy.experimental_local_results(grads)])
    ref = reference(u)
    expected = w + 6.0 / u.size * (u - ref)
    results["xla" if jit else "graph"] = bool(
        np.array_equal(codes, ref) and np.allclose(grads, expected, atol=1e-6))
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "devices": devices, **results}))
"""


def run(command, timeout, env=None):
    start = time.perf_counter()
    try:
        result = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, **(env or {})}, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s", time.perf_counter() - start
    output = result.stdout + result.stderr
    return result.returncode, output, time.perf_counter() - start


def last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][-150:] if lines else ""


def json_line(output: str):
    """The last line of ``output`` that is JSON (TensorFlow logs to stderr after it)."""
    for line in reversed(output.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise ValueError(f"no JSON line in: {output[-500:]}")


def read_results(workdir: str) -> dict:
    with open(os.path.join(workdir, "results.json")) as file:
        return json.load(file)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where runs go (default: a temp dir)")
    parser.add_argument("--epochs", type=int, default=10, help="autoencoder epochs on a GPU")
    parser.add_argument("--map_tolerance", type=float, default=0.02)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    workdir = args.workdir or tempfile.mkdtemp(prefix="gpu_check_")
    python = sys.executable
    rows = []  # (check, status, figure, note)

    code, output, _ = run(
        [python, "-c", "import json, tensorflow as tf; "
         "print(json.dumps([d.name for d in tf.config.list_physical_devices('GPU')]))"],
        120,
    )  # fmt: skip
    gpus = json_line(output) if code == 0 else []
    has_gpu = bool(gpus)
    rows.append(("devices", "PASS" if code == 0 else "FAIL", f"{len(gpus)} GPU(s)",
                 ", ".join(gpus) or "no GPU visible: GPU-only rows are skipped"))  # fmt: skip

    # 1. The layer tests on this machine's default device (the GPU when there is one).
    code, output, seconds = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 "tests/test_layers.py"], 300)  # fmt: skip
    summary = re.findall(r"\d+ (?:passed|failed|skipped|error)", output)
    rows.append(("pytest tests/test_layers.py", "PASS" if code == 0 else "FAIL",
                 ", ".join(summary) or "-", f"{seconds:.0f} s" + ("" if code == 0 else
                 ": " + last_line(output))))  # fmt: skip

    # 2. The autoencoder main job: GPU and CPU side by side (same seed, same schedule).
    mnist_code, mnist_output, _ = run(
        [python, "-c", "from tf_bihalf.data import mnist; mnist.load('mnist', download=False)"],
        120,
    )  # fmt: skip
    if mnist_code != 0:
        rows.append(("autoencoder (MNIST)", "FAIL", "-", "MNIST not found offline: put "
                     "mnist.npz in $TF_BIHALF_DATA (python -m tf_bihalf.data.fetch)"))  # fmt: skip
    else:
        epochs = ["--epochs", str(args.epochs)] if has_gpu else ["--smoke"]
        runs = {"gpu": {}, "cpu": {"CUDA_VISIBLE_DEVICES": "-1"}} if has_gpu else {"cpu": {}}
        procs = {}
        for device, env in runs.items():  # in parallel: the CPU run uses the host's cores
            run_dir = os.path.join(workdir, f"autoencoder_{device}")
            procs[device] = (run_dir, subprocess.Popen(
                [python, "-m", "trainers.autoencoder", *epochs, "--workdir", run_dir,
                 "--progress=false"], cwd=ROOT, env={**os.environ, **env},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))  # fmt: skip
        maps = {}
        for device, (run_dir, proc) in procs.items():
            try:
                output, _ = proc.communicate(timeout=360)
            except subprocess.TimeoutExpired:
                proc.kill()
                output = "timed out after 360 s"
            if proc.returncode != 0:
                rows.append((f"autoencoder on {device}", "FAIL", "-", last_line(output)))
                continue
            results = read_results(run_dir)
            training = results["training"]
            steps = training["steps_per_epoch"] * training["epochs"]
            maps[device] = results["metrics"]["map"]
            rows.append((
                f"autoencoder on {device} ({' '.join(epochs)})", "PASS",
                f"mAP {maps[device]:.4f}, {training['samples_per_second']:.0f} samples/s",
                f"{steps / training['wall_time_s']:.0f} steps/s incl. evaluation" + (
                    f"; after epoch 1 {steady:.0f} samples/s"  # epoch 1 holds the compile
                    if (steady := training.get("samples_per_second_after_first_epoch")) else ""),
            ))  # fmt: skip
        if has_gpu and len(maps) == 2:
            gap = abs(maps["gpu"] - maps["cpu"])
            rows.append(("autoencoder mAP GPU vs CPU", "PASS" if gap <= args.map_tolerance
                         else "FAIL", f"|diff| {gap:.4f}", f"tolerance {args.map_tolerance}"))  # fmt: skip
        elif not has_gpu:
            rows.append(("autoencoder mAP GPU vs CPU", "SKIP", "-", "no GPU"))

    # 3. The image head on cached features, on a folder generated here.
    folder = os.path.join(workdir, "folder")
    code, output, _ = run([python, os.path.join(ROOT, "benchmarks", "gpu_check_images.py"),
                           folder], 120)  # fmt: skip
    if code == 0:
        code, output, seconds = run(
            [python, "-m", "trainers.image", f"--dataset=folder:{folder}", "--smoke",
             "--feature_cache", "--workdir", os.path.join(workdir, "image"), "--progress=false"], 300,
        )  # fmt: skip
    figure = "-"
    if code == 0:
        results = read_results(os.path.join(workdir, "image"))
        figure = f"mAP {results['metrics']['map']:.4f}"
    rows.append(("image head, folder: --smoke", "PASS" if code == 0 else "FAIL", figure,
                 "cached features" if code == 0 else last_line(output)))  # fmt: skip

    # 4. Bi-half under MirroredStrategy, two replicas (two logical GPUs on one chip).
    code, output, seconds = run([python, "-c", MIRRORED_SNIPPET], 300)
    if code == 0:
        result = json_line(output)
        ok = result["graph"]
        rows.append((f"BiHalf, MirroredStrategy x{result['replicas']}", "PASS" if ok else "FAIL",
                     f"codes, grads {'=' if result['graph'] else '!='} eq. 8-9 reference",
                     ("" if has_gpu else "logical CPUs (no GPU): ") + ", ".join(result["devices"])))  # fmt: skip
    else:
        rows.append(("BiHalf, MirroredStrategy", "FAIL", "-", last_line(output)))

    # 5. XLA on/off: the training step of the 784-256-64 autoencoder, Bi-half and sign.
    code, output, seconds = run([python, "benchmarks/layer_overhead.py", "--jit", "--steps",
                                 "100", "--rounds", "3"], 300)  # fmt: skip
    if code == 0:
        for line in output.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 6 and cells[0] in (
                "bihalf",
                "sign",
                "bihalf:top_k",
                "bihalf:bitwise",
                "bihalf:search",
            ):
                rows.append((f"step {cells[0]}, XLA {cells[1]}", "PASS", f"{cells[2]} ms",
                             f"ratio to sign {cells[4]} (paired {cells[5]})"))  # fmt: skip
    else:
        rows.append(("XLA on/off step times", "FAIL", "-", last_line(output)))

    print(f"\nGPU check ({'GPU: ' + ', '.join(gpus) if has_gpu else 'no GPU: CPU only'}); "
          f"runs in {workdir}\n")  # fmt: skip
    print("| check | status | figure | note |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(cell).replace("|", "/") for cell in row) + " |")
    failed = [row[0] for row in rows if row[1] == "FAIL"]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
