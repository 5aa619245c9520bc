"""Fully connected nets with BatchNorm: a generic MLP and Keskar et al.'s F1."""

import math
from collections.abc import Sequence

from torch import nn

from lbtrain.models.registry import check_widths, register_model


@register_model
def mlp(
    num_classes: int, input_shape: tuple[int, ...], hidden: Sequence[int] = (256, 256)
) -> nn.Module:
    """Flatten -> [Linear + BatchNorm1d + ReLU] per hidden width -> Linear."""
    check_widths("hidden", hidden)
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
