"""A small 1-D convnet with BatchNorm for MNIST-1D (after Greydanus's MNIST-1D baseline CNN)."""

from collections.abc import Sequence

from torch import nn

from lbtrain.models.registry import check_norm, check_widths, register_model


@register_model
def cnn1d(
    num_classes: int,
    input_shape: tuple[int, ...],
    channels: Sequence[int] = (32, 32, 32),
    norm: str = "batch",
) -> nn.Module:
    """Three stride-2 Conv1d + BatchNorm1d + ReLU blocks, then a linear classifier;
    `norm="none"` drops the BatchNorms (the convs get biases), for measurements that need
    per-sample gradients to be well defined (exact noise scale, sharpness).

    A 40-sample MNIST-1D signal shrinks 40 -> 20 -> 10 -> 5 along time.
    """
    check_widths("channels", channels)
    batch_norm = check_norm(norm)
    in_ch, length = input_shape
    layers: list[nn.Module] = []
    for i, ch in enumerate(channels):
        kernel = 5 if i == 0 else 3
        layers += [
            nn.Conv1d(in_ch, ch, kernel, stride=2, padding=kernel // 2, bias=not batch_norm),
            *([nn.BatchNorm1d(ch)] if batch_norm else []),
            nn.ReLU(inplace=True),
        ]
        in_ch, length = ch, (length - 1) // 2 + 1
    layers += [nn.Flatten(), nn.Linear(in_ch * length, num_classes)]
    return nn.Sequential(*layers)
