"""What every trainer shares: the same flags, configs by name, the run directory, error reporting.

A trainer is a config plus a task (``tf_bihalf.tasks``); the loop is the library's
``tf_bihalf.training.loop.train_and_evaluate``. Every trainer accepts the common flags below
with the same meaning, and adds its task's own (``task_flags``). Flags left unset keep the
config's values; the resolved config is written to ``RUN/config.json``.

- ``load_config(name, smoke)``: ``configs/<name>.py``'s ``get_config(smoke=...)``.
- ``apply_overrides(config, {"optimizer.learning_rate": 0.01, "bits": None, ...})``: dotted keys;
  ``None`` means "flag not given"; unknown keys are errors.
- ``resolve_config(flag_values, default_config, task_overrides)``: the config the run uses;
  ``resolve_for(trainer_module, flag_values)`` with a trainer's own defaults.
- ``default_workdir(config, smoke)``: ``runs/<config>_<dataset>_<layer>_<K>bits[_seedS][_smoke]``,
  deterministic, so re-running the same command resumes the same run.
- ``run(main)``: ``absl.app.run`` that reports user errors (``tf_bihalf.errors.InputError``,
  ``FileNotFoundError``) as one line with exit status 2; anything else keeps its traceback.
"""

from __future__ import annotations

import copy
import importlib
import os
import pkgutil
import re
import sys
from typing import Any

from absl import app, flags

import trainers

trainers.import_tensorflow_quietly()

import configs  # noqa: E402
from tf_bihalf import tasks  # noqa: E402
from tf_bihalf.errors import InputError  # noqa: E402
from tf_bihalf.training import schedules  # noqa: E402
from tf_bihalf.training.loop import train_and_evaluate  # noqa: E402
from trainers import quiet_native_stderr  # noqa: E402

RUNS_DIRECTORY = "runs"
#: An override value that sets a key to None (``None`` itself means "flag not given").
SET_NONE = object()
HASH_LAYERS = ["bihalf", "sign", "signreg", "tanh", "relaxed", "median"]
STRATEGIES = ["auto", "one_device", "mirrored", "multi_worker", "default"]


def available_configs() -> list[str]:
    """Names of the config modules in ``configs/``."""
    return sorted(
        module.name
        for module in pkgutil.iter_modules(configs.__path__)
        if not module.name.startswith("_")  # shared defaults, not configs
    )


def load_config(name: str, smoke: bool = False) -> dict:
    """``configs/<name>.py``'s ``get_config(smoke=smoke)``, as a fresh dict.

    Raises:
        InputError: no such config (the message lists the available ones).
    """
    if not isinstance(name, str) or not name.isidentifier() or name not in available_configs():
        raise InputError(f"Unknown config {name!r}; available: {', '.join(available_configs())}.")
    module = importlib.import_module(f"configs.{name}")
    return copy.deepcopy(module.get_config(smoke=smoke))


def apply_overrides(config: dict, overrides: dict[str, Any]) -> dict:
    """Sets dotted keys of ``config`` in place (skipping ``None``); returns ``config``.

    >>> apply_overrides({"a": 1, "b": {"c": 2}}, {"b.c": 3, "a": None})
    {'a': 1, 'b': {'c': 3}}
    """
    for dotted, value in overrides.items():
        if value is None:
            continue
        *parents, key = dotted.split(".")
        node = config
        for parent in parents:
            if parent not in node or not isinstance(node[parent], dict):
                raise InputError(f"The config has no section {parent!r} (override {dotted!r}).")
            node = node[parent]
        if key not in node:
            raise InputError(f"The config has no key {dotted!r}; keys there: {sorted(node)}.")
        node[key] = None if value is SET_NONE else value
    return config


def define_common_flags(
    default_config: str | None, flag_values: flags.FlagValues = flags.FLAGS
) -> None:
    """The flags every trainer has (defined from ``__main__`` only, so importing a trainer
    defines no global flags)."""
    define = {"flag_values": flag_values}
    flags.DEFINE_string(
        "config",
        None,
        f"configs/<name>.py (default: the dataset's, else {default_config}).",
        **define,
    )
    flags.DEFINE_string("dataset", None, "Dataset (default: the config's).", **define)
    flags.DEFINE_integer("bits", None, "Code length K.", **define)
    flags.DEFINE_enum("hash_layer", None, HASH_LAYERS, "Hash layer.", **define)
    flags.DEFINE_float(
        "gamma", None, "Gamma numerator of the hash layer (bihalf/sign/signreg).", **define
    )
    flags.DEFINE_integer(
        "seed", None, "Seed of the split, the initialisation and the data order.", **define
    )
    flags.DEFINE_integer(
        "epochs", None, "Epochs; a multistep schedule is stretched to match.", **define
    )
    flags.DEFINE_integer("batch_size", None, "Global batch size.", **define)
    flags.DEFINE_float("learning_rate", None, "Initial learning rate.", **define)
    flags.DEFINE_string(
        "workdir",
        None,
        "Run directory (default runs/<config>_<dataset>_<layer>_<K>bits...; an existing one resumes).",
        **define,
    )
    flags.DEFINE_boolean(
        "smoke", False, "The config's tiny end-to-end variant (minutes on a CPU).", **define
    )
    flags.DEFINE_string(
        "data_dir", None, "Where the dataset lives (default: the config's).", **define
    )
    flags.DEFINE_enum("strategy", None, STRATEGIES, "Distribution strategy.", **define)
    flags.DEFINE_integer(
        "eval_every", None, "mAP to TensorBoard every N epochs (0 = off).", **define
    )
    flags.DEFINE_boolean(
        "progress",
        None,
        "Progress bars (default: when output is a terminal; else one line per epoch).",
        **define,
    )


def define_backbone_flags(
    backbones: str, weights: str, flag_values: flags.FlagValues = flags.FLAGS
) -> None:
    """The flags of the frozen-backbone tasks (image, video): ``--backbone``, ``--weights``,
    ``--feature_cache``, ``--cache_dir``; ``backbones`` / ``weights`` describe the choices."""
    define = {"flag_values": flag_values}
    flags.DEFINE_string("backbone", None, backbones, **define)
    flags.DEFINE_string("weights", None, f"Backbone weights: {weights} | none.", **define)
    flags.DEFINE_boolean("feature_cache", None, "Train on cached frozen features.", **define)
    flags.DEFINE_string("cache_dir", None, "Feature cache root.", **define)


def backbone_overrides(values: flags.FlagValues) -> dict:
    """The config overrides of ``define_backbone_flags``'s flags (``--weights=none`` -> None)."""
    weights = values.weights
    return {
        "backbone": values.backbone,
        "weights": SET_NONE if weights and weights.lower() == "none" else weights,
        "feature_cache": values.feature_cache,
        "cache_dir": values.cache_dir,
    }


def _select_by_protocol(value: Any, protocol: str | None, key: str) -> Any:
    if isinstance(value, dict) and set(value) == {"by_protocol"}:
        table = value["by_protocol"]
        if protocol not in table:
            raise InputError(
                f"{key}: protocol {protocol!r} is not one of {sorted(table)} for this config."
            )
        return copy.deepcopy(table[protocol])
    return value


def config_name_for(
    config: str | None, dataset: str | None, default_config: str | None, custom_config: str | None
) -> str:
    """``--config``; else the dataset's own config (``--dataset=nus_wide`` ->
    ``configs/nus_wide.py``); else ``custom_config`` for users' ``folder:`` / ``list:``
    collections; else ``default_config``."""
    if config:
        return config
    if dataset and dataset in available_configs():
        return dataset
    if dataset and custom_config and re.match(r"^(folder|list):", dataset):
        return custom_config
    if default_config is None:
        raise InputError(
            "--dataset (or --config) is required, e.g. --dataset=cifar10 or "
            "--dataset=folder:/data/photos; configs: " + ", ".join(available_configs()) + "."
        )
    return default_config


def resolve_config(
    flag_values: flags.FlagValues,
    default_config: str | None,
    task_overrides: dict[str, Any],
    custom_config: str | None = None,
) -> dict:
    """The config for the flags (``config_name_for``), the common flags, then
    ``task_overrides`` (dotted keys, None = not given)."""
    values = flag_values
    dataset = values.dataset
    name = config_name_for(values.config, dataset, default_config, custom_config)
    config = load_config(name, smoke=values.smoke)
    if dataset and dataset != config["dataset"] and "protocol_options" in config:
        # Another collection with this config's settings: its protocol options do not apply.
        config.update(protocol=None, protocol_options={})
    configured_epochs = config["epochs"]
    apply_overrides(
        config,
        {
            "dataset": dataset,
            "bits": values.bits,
            "hash_layer": values.hash_layer,
            "seed": values.seed,
            "epochs": values.epochs,
            "batch_size": values.batch_size,
            "optimizer.learning_rate": values.learning_rate,
            "data_dir": values.data_dir,
            "strategy": values.strategy,
            "evaluation.every_n_epochs": values.eval_every,
            **task_overrides,
        },
    )
    if values.epochs is not None and config["schedule"]["name"] == "multistep":
        config["schedule"]["milestones"] = schedules.scale_milestones(
            config["schedule"]["milestones"], config["epochs"], configured_epochs
        )
    for key in ("protocol_options",):
        if key in config:
            config[key] = _select_by_protocol(config[key], config["protocol"], key)
    evaluation = config["evaluation"]
    evaluation["top_k"] = _select_by_protocol(evaluation["top_k"], config["protocol"], "top_k")
    return finalize_config(config, gamma=values.gamma)


def finalize_config(config: dict, gamma: float | None = None) -> dict:
    """Checks the common keys and replaces ``hash_layer_options`` by the chosen layer's
    ``hash_layer_kwargs`` (``gamma`` overriding the layer's gamma when given)."""
    for name in ("bits", "epochs", "batch_size"):
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer; got {value!r}.")
    if config["task"] not in tasks.names():
        raise InputError(f"Config task {config['task']!r} is not one of {tasks.names()}.")
    options = config.pop("hash_layer_options")
    if config["hash_layer"] not in options:
        raise InputError(
            f"Unknown hash layer {config['hash_layer']!r}; choose one of {sorted(options)}."
        )
    config["hash_layer_kwargs"] = dict(options[config["hash_layer"]])
    if gamma is not None:
        if config["hash_layer"] not in ("bihalf", "sign", "signreg"):
            raise InputError(
                f"--gamma applies to bihalf, sign and signreg; {config['hash_layer']} has none."
            )
        config["hash_layer_kwargs"]["gamma"] = float(gamma)
    return config


def default_workdir(config: dict, smoke: bool = False) -> str:
    """``runs/<config>_<dataset>[_<protocol>]_<layer>_<K>bits[_seedS][_smoke]`` (the seed only
    when it is not 0): the same command resumes the same run."""
    dataset = re.sub(r"[^A-Za-z0-9._-]+", "-", str(config["dataset"])).strip("-")
    parts = [config["config_name"]]
    if dataset != config["config_name"]:
        parts.append(dataset)
    if config["protocol"]:
        parts.append(str(config["protocol"]))
    parts += [config["hash_layer"], f"{config['bits']}bits"]
    if config["seed"]:
        parts.append(f"seed{config['seed']}")
    if smoke:
        parts.append("smoke")
    return os.path.join(RUNS_DIRECTORY, "_".join(parts))


def train(config: dict, flag_values: flags.FlagValues) -> dict:
    """Builds the config's task and runs the one loop in ``--workdir`` (or the default)."""
    workdir = flag_values.workdir or default_workdir(config, smoke=flag_values.smoke)
    task = tasks.get(config["task"])(config)
    return train_and_evaluate(task, config, workdir, progress=flag_values.progress)


def resolve_for(trainer, flag_values: flags.FlagValues = flags.FLAGS) -> dict:
    """The config a trainer module resolves for ``flag_values``: its ``DEFAULT_CONFIG``,
    ``CUSTOM_DATASET_CONFIG`` and ``task_overrides(flag_values)``."""
    return resolve_config(
        flag_values,
        trainer.DEFAULT_CONFIG,
        trainer.task_overrides(flag_values),
        trainer.CUSTOM_DATASET_CONFIG,
    )


def main_for(trainer):
    """The ``absl`` main of a trainer module: resolve the config, train, print the summary."""

    def main(argv):
        if len(argv) > 1:
            raise InputError(f"Unexpected arguments: {' '.join(argv[1:])} (flags start with --).")
        results = train(resolve_for(trainer, flags.FLAGS), flags.FLAGS)
        sys.stdout.write(results["summary"] + "\n")
        return 0

    return main


def run(main) -> None:
    """``absl.app.run(main)``, with user errors reported as one line and exit status 2."""

    import tensorflow as tf  # noqa: PLC0415

    with quiet_native_stderr():
        tf.config.list_logical_devices()  # device start-up (e.g. cuInit on a CPU machine)

    def guarded(argv):
        try:
            return main(argv)
        except (InputError, FileNotFoundError) as error:
            sys.stderr.write(f"error: {error}\n")
            sys.exit(2)

    app.run(guarded)
