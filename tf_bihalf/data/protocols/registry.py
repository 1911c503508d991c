"""The dataset registry: each protocol family registers its loader under a name.

A loader is ``loader(name, data_dir, protocol, seed, options) -> ProtocolSplits``; ``name`` is
the registered name for a plain entry (``"cifar10"``) and the text after the colon for a prefix
entry (``register("folder:")`` receives ``"<dir>"`` of ``"folder:<dir>"``). ``options`` is a
dict the loader validates with ``take_options``.

Example (a new dataset, e.g. in ``tf_bihalf/data/video/``):

>>> @register("ucf101")                                           # doctest: +SKIP
... def load_ucf101(name, data_dir, protocol, seed, options): ...
>>> load_protocol("ucf101", data_dir="/data/ucf101")              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

from tf_bihalf.data.protocols.types import ProtocolSplits
from tf_bihalf.errors import InputError

Loader = Callable[[str, "str | None", "str | None", int, dict], ProtocolSplits]

_LOADERS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    """Decorator registering a loader under ``name`` (a name ending in ":" is a prefix)."""
    if not name or not isinstance(name, str):
        raise ValueError(f"A dataset name must be a non-empty string; got {name!r}.")

    def decorate(loader: Loader) -> Loader:
        if name in _LOADERS and _LOADERS[name] is not loader:
            raise ValueError(f"Dataset {name!r} is already registered by {_LOADERS[name]}.")
        _LOADERS[name] = loader
        return loader

    return decorate


def registered_names() -> list[str]:
    """The registered dataset names; prefixes are shown as ``"folder:<...>"``."""
    return sorted(name + "<...>" if name.endswith(":") else name for name in _LOADERS)


def load_protocol(
    dataset: str,
    data_dir: str | None = None,
    protocol: str | None = None,
    seed: int = 0,
    **options,
) -> ProtocolSplits:
    """Loads ``dataset`` and splits it by ``protocol`` (``tf_bihalf.data.protocols`` lists the
    datasets and their rules; ``docs/paper.md``, "Dataset protocols", the paper's).

    Args:
        dataset: a registered name ("cifar10", "fashion_mnist_rgb", "flickr25k", "nus_wide",
            "mscoco") or "folder:<dir>" / "list:<file>".
        data_dir: where the data lives (see each dataset); also the base for relative
            folder / list paths.
        protocol: "I" or "II" for cifar10 and nus_wide (default "I"); others have one protocol.
        seed: the protocol seed (0 in the paper).
        **options: per-dataset options, plus for file-based datasets the file checks
            (``verify``, ``on_missing``, ``max_pixels``, ``max_file_bytes``,
            ``max_excluded_fraction``, ``check_cache_dir``).

    Returns:
        ``ProtocolSplits``.

    Raises:
        ValueError: unknown dataset (the message lists the registered ones), protocol or
            option, or a dataset too small for the protocol.
        FileNotFoundError: the data is not where it should be.
    """
    if not isinstance(dataset, str) or not dataset:
        raise InputError(f"dataset must be a non-empty string; got {dataset!r}.")
    seed = int(seed)
    if dataset in _LOADERS and not dataset.endswith(":"):
        return _LOADERS[dataset](dataset, data_dir, protocol, seed, options)
    prefix, colon, argument = dataset.partition(":")
    if colon and prefix + ":" in _LOADERS:
        return _LOADERS[prefix + ":"](argument, data_dir, protocol, seed, options)
    raise ValueError(f"Unknown dataset {dataset!r}; registered: {', '.join(registered_names())}.")


def take_options(options: dict, defaults: dict, dataset: str) -> dict:
    """``defaults`` updated by ``options``; an option not in ``defaults`` is a ValueError."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise InputError(
            f"Unknown option(s) {unknown} for dataset {dataset!r}; accepted: {sorted(defaults)}."
        )
    return {**defaults, **options}


def check_protocol(dataset: str, protocol: str | None, accepted: tuple[str, ...]) -> str:
    """``protocol`` (default: the first accepted one) if accepted, else a ValueError."""
    protocol = accepted[0] if protocol is None else str(protocol)
    if protocol not in accepted:
        raise InputError(f"Dataset {dataset!r} has protocols {accepted}; got {protocol!r}.")
    return protocol
