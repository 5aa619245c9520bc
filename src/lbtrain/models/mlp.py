"""A generic fully connected net with BatchNorm (Keskar et al.'s F1 is in keskar_f1.py)."""

import math
from collections.abc import Sequence

from torch import nn

from lbtrain.models.registry import check_norm, check_widths, register_model


@register_model
def mlp(
    num_classes: int,
    input_shape: tuple[int, ...],
    hidden: Sequence[int] = (256, 256),
    norm: str = "batch",
) -> nn.Module:
    """Flatten -> [Linear + BatchNorm1d + ReLU] per hidden width -> Linear; `norm="none"`
    drops the BatchNorms (Linear layers get a bias), for exact measurements (README)."""
    check_widths("hidden", hidden)
    batch_norm = check_norm(norm)
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers.append(nn.Linear(width, h, bias=not batch_norm))
        layers += [nn.BatchNorm1d(h)] if batch_norm else []
        layers.append(nn.ReLU(inplace=True))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
