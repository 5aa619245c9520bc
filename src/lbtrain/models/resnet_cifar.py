"""He et al. 2016's CIFAR ResNets (Sec. 4.2 of "Deep Residual Learning for Image Recognition").

Three stages of n basic blocks at 16/32/64 channels on 32x32/16x16/8x8 maps, depth 6n + 2.
Shortcuts are option A, parameter-free: when a block halves the map and doubles the channels,
the identity is subsampled by 2 and zero-padded with the new channels. That is what keeps the
published sizes; 1x1 projection shortcuts (option B) would add parameters the paper does not
count. Parameters for 10 classes: ResNet-20 269,722 (0.27M), ResNet-44 658,586 (0.66M),
ResNet-56 853,018 (0.85M), ResNet-110 1,727,962 (1.7M).
"""

import torch
import torch.nn.functional as F
from torch import nn

from lbtrain.models.registry import he_init, register_model


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the (option A) shortcut, then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.stride = stride
        self.extra_channels = out_ch - in_ch

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            # F.pad pads the last dims first: (W left, W right, H top, H bottom, C front, C back)
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(
                f"model.depth={depth} is not a CIFAR ResNet depth; use 6n+2 (20, 32, 44, 56, 110)"
            )
        blocks_per_stage = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        in_ch = 16
        for stage, out_ch in enumerate((16, 32, 64)):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(in_ch, out_ch, stride))
                in_ch = out_ch
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        he_init(self)  # He et al. initialise as in their PReLU paper (He init), fan-out mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model
def resnet_cifar(num_classes: int, input_shape: tuple[int, ...], depth: int = 44) -> nn.Module:
    """Any 6n+2 depth, chosen in the config (`model.depth`); ResNet-44 is Table 1's. The one
    builder behind every registered depth."""
    return CifarResNet(depth, num_classes, in_channels=input_shape[0])


@register_model
def resnet20(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return resnet_cifar(num_classes, input_shape, depth=20)


@register_model
def resnet44(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Table 1's ResNet44 (n = 7): 92.83% on CIFAR-10 in He et al."""
    return resnet_cifar(num_classes, input_shape, depth=44)


@register_model
def resnet56(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return resnet_cifar(num_classes, input_shape, depth=56)


@register_model
def resnet110(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return resnet_cifar(num_classes, input_shape, depth=110)
