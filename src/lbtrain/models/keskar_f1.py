"""Keskar et al.'s F1 for MNIST: 784 -> 5 x (Linear 512 + BN + ReLU) -> 10.

Kept apart from the generic `mlp` so the paper's name is a registry entry of its own.
Parameters for 28x28 inputs and 10 classes: 1,460,234 (see tests/test_models.py).
"""

from torch import nn

from lbtrain.models.mlp import mlp
from lbtrain.models.registry import register_model


@register_model
def f1(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """F1 is the generic BN-MLP with five hidden layers of 512 units."""
    return mlp(num_classes, input_shape, hidden=(512,) * 5)
