"""ResNet-50 for ImageNet (He et al. 2016), as Goyal et al. 2017 trained it at batch 8192.

torchvision's definition is the reference one (bottleneck blocks, stride on the 3x3 conv,
Kaiming-initialised convs), so it is used as is rather than rewritten.
Parameters for 1000 classes: 25,557,032 (the usual 25.6M).
"""

from torch import nn
from torchvision.models import resnet50 as _torchvision_resnet50

from lbtrain.models.registry import register_model


@register_model
def resnet50(
    num_classes: int, input_shape: tuple[int, ...], zero_init_residual: bool = False
) -> nn.Module:
    """Untrained ResNet-50; `zero_init_residual=True` starts each block as the identity,
    the initialisation Goyal et al. use for large batches."""
    if input_shape[0] != 3:
        raise ValueError(f"resnet50 expects RGB inputs (3, H, W), got {input_shape}")
    return _torchvision_resnet50(
        weights=None, num_classes=num_classes, zero_init_residual=zero_init_residual
    )
