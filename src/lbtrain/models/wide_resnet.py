"""Wide ResNets (Zagoruyko & Komodakis 2016, "Wide Residual Networks") for CIFAR.

WRN-d-k: three stages of n = (d - 4) / 6 pre-activation basic blocks, widths 16k/32k/64k after
a 16-channel stem conv, then BN-ReLU, global average pool and a linear classifier. Each block
is BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3; a 1x1 conv shortcut takes over where the width or
the stride changes, fed by the block's pre-activation as in the authors' code. Dropout is off
by default (Table 1's WResNet16-4 is the plain net).
Parameters for WRN-16-4: 2,748,890 (10 classes), 2,772,020 (100 classes) - the paper's 2.7M.
"""

import torch
import torch.nn.functional as F
from torch import nn

from lbtrain.models.registry import he_init, register_model


class PreActBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        same_shape = in_ch == out_ch and stride == 1
        self.projection = None if same_shape else nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(pre)))))
        return out + (x if self.projection is None else self.projection(pre))


class WideResNet(nn.Module):
    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(
                f"model.depth={depth} is not a WRN depth; use 6n+4 (10, 16, 22, 28, 40)"
            )
        blocks_per_stage = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        in_ch = 16
        for stage, base in enumerate((16, 32, 64)):
            out_ch = base * widen_factor
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(PreActBlock(in_ch, out_ch, stride, dropout))
                in_ch = out_ch
        self.stages = nn.Sequential(*layers)
        # blocks end on a conv, so the head normalises and activates once more
        self.head = nn.Sequential(
            nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.fc = nn.Linear(in_ch, num_classes)
        he_init(self)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.stages(self.stem(x))))


@register_model
def wide_resnet(
    num_classes: int,
    input_shape: tuple[int, ...],
    depth: int = 16,
    widen_factor: int = 4,
    dropout: float = 0.0,
) -> nn.Module:
    """WRN-depth-widen_factor, e.g. `model.depth=28 model.widen_factor=10` for WRN-28-10."""
    return WideResNet(depth, widen_factor, num_classes, input_shape[0], dropout)


@register_model
def wrn16_4(num_classes: int, input_shape: tuple[int, ...], dropout: float = 0.0) -> nn.Module:
    """Table 1's WResNet16-4 (CIFAR-100): about 95% / 76% on CIFAR-10 / -100 in the WRN paper."""
    return wide_resnet(num_classes, input_shape, depth=16, widen_factor=4, dropout=dropout)
