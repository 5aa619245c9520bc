"""Models are found by name (timm-style): each family module registers its constructors."""

from collections.abc import Callable

from torch import nn

from lbtrain.errors import ConfigError

ModelFn = Callable[..., nn.Module]
_MODELS: dict[str, ModelFn] = {}


def register_model(fn: ModelFn) -> ModelFn:
    """Register `fn(num_classes, input_shape, **kwargs) -> nn.Module` under its own name.

    `input_shape` is one sample's shape without the batch dimension, e.g. (1, 40) for
    MNIST-1D or (3, 32, 32) for CIFAR."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    if name not in _MODELS:
        raise ConfigError(
            f"model.name={name!r} is not a registered model; choose one of: "
            + ", ".join(list_models())
        )
    return _MODELS[name](num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)


def check_widths(key: str, widths) -> None:
    """Layer widths from the config (`model.hidden`, `model.channels`): positive ints."""
    if not all(isinstance(w, int) and w > 0 for w in widths):
        raise ConfigError(f"model.{key}={list(widths)}: widths must be positive integers")


NORMS = ("batch", "none")


def check_norm(norm: str) -> bool:
    """`model.norm`: "batch" (BatchNorm, which Ghost BN converts) or "none"; True for batch."""
    if norm not in NORMS:
        raise ConfigError(f"model.norm={norm}: use {', '.join(NORMS)}")
    return norm == "batch"
