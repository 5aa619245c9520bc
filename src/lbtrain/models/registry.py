"""The model registry (`model.name`): each family module registers its constructors,
`fn(num_classes, input_shape, **options) -> nn.Module`, under their own names.
`input_shape` is one sample's shape without the batch dimension, e.g. (1, 40) for MNIST-1D
or (3, 32, 32) for CIFAR."""

from torch import nn

from lbtrain.config.registry import Registry

MODELS = Registry("model.name")
register_model = MODELS.register


def list_models() -> list[str]:
    return sorted(MODELS)


def create_model(name: str, num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    return MODELS[name](num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)


def check_widths(key: str, widths) -> None:
    """Layer widths from the config (`model.hidden`, `model.channels`): positive ints."""
    if not all(isinstance(w, int) and w > 0 for w in widths):
        raise ValueError(f"model.{key}={list(widths)}: widths must be positive integers")


NORMS = ("batch", "none")


def check_norm(norm: str) -> bool:
    """`model.norm`: "batch" (BatchNorm, which Ghost BN converts) or "none"; True for batch."""
    if norm not in NORMS:
        raise ValueError(f"model.norm={norm}: use {', '.join(NORMS)}")
    return norm == "batch"


def he_init(model: nn.Module) -> nn.Module:
    """He (Kaiming) normal initialisation, fan-out mode, of every Conv2d in `model` (the
    convnets' shared init), in module order, which fixes the random draws each conv gets.
    Returns `model`."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
