"""VGG-16 with BatchNorm for CIFAR (Simonyan & Zisserman 2015, configuration D; BN added).

Hoffer et al.'s code has no VGG, so this is the common CIFAR adaptation: the thirteen 3x3
conv layers of VGG-16, each conv -> BN -> ReLU, with five 2x2 max pools that take a 32x32
image to 1x1x512. The ImageNet head (two 4096-wide FC layers on 7x7x512) is replaced by a
single Linear 512 -> classes, the usual CIFAR head: on a 1x1 map a two-layer head would add
0.27M (512-512) to 19M (4096-4096) parameters for features that are already pooled to 512.
Convs carry no bias (BN's shift makes it redundant).
Parameters for 10 classes: 14,724,042 (14.7M).
"""

import torch
from torch import nn

from lbtrain.models.registry import he_init, register_model

# Channels per conv layer; "M" is a 2x2 max pool. VGG-16 = configuration D.
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    def __init__(
        self, config: tuple[int | str, ...], num_classes: int, input_shape: tuple[int, ...]
    ) -> None:
        super().__init__()
        in_ch, height, width = input_shape
        layers: list[nn.Module] = []
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            else:
                layers += [
                    nn.Conv2d(in_ch, int(item), 3, padding=1, bias=False),
                    nn.BatchNorm2d(int(item)),
                    nn.ReLU(inplace=True),
                ]
                in_ch = int(item)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_ch * height * width, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register_model
def vgg16_bn(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """VGG-16-BN for 32x32 inputs (any size divisible by 32 works; the head widens with it)."""
    if min(input_shape[1:]) < 32:
        raise ValueError(f"vgg16_bn needs inputs of at least 32x32, got {input_shape}")
    return VGG(VGG16, num_classes, input_shape)
