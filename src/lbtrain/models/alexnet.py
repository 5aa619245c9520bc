"""AlexNet, "one weird trick" variant (Krizhevsky 2014), with BatchNorm, for 224x224 ImageNet.

The single-tower net of arXiv 1404.5997 has conv widths 64-192-384-256-256 (torchvision's
`alexnet` uses the same); Hoffer et al. add BN after every conv and hidden FC layer. Layout,
written out for a 224x224 input:
  conv11x11/4 (64)  -> maxpool 3/2 -> BN -> ReLU   224 -> 55 -> 27
  conv5x5 (192)     -> maxpool 3/2 -> BN -> ReLU    27 -> 13
  conv3x3 (384)     -> BN -> ReLU
  conv3x3 (256)     -> BN -> ReLU
  conv3x3 (256)     -> maxpool 3/2 -> BN -> ReLU    13 -> 6
  FC 9216 -> 4096 -> BN -> ReLU -> dropout 0.5, FC 4096 -> 4096 (same), FC 4096 -> classes
Pooling sits before BN as in the authors' BN AlexNet, so BN normalises the smaller map.
Layers followed by BN carry no bias. Parameters for 1000 classes: 61,110,184.
"""

import torch
from torch import nn

from lbtrain.models.registry import he_init, register_model


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, pool: bool) -> list[nn.Module]:
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False)
    pooling = [nn.MaxPool2d(3, stride=2)] if pool else []
    return [conv, *pooling, nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


class AlexNetBN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(in_channels, 64, 11, 4, pool=True),
            *_conv_bn(64, 192, 5, 1, pool=True),
            *_conv_bn(192, 384, 3, 1, pool=False),
            *_conv_bn(384, 256, 3, 1, pool=False),
            *_conv_bn(256, 256, 3, 1, pool=True),
        )
        # identity at 224x224; lets other input sizes reach the same 6x6 classifier input
        self.pool = nn.AdaptiveAvgPool2d(6)
        self.classifier = nn.Sequential(
            nn.Linear(256 * 6 * 6, 4096, bias=False),
            nn.BatchNorm1d(4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096, bias=False),
            nn.BatchNorm1d(4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model
def alexnet_bn(num_classes: int, input_shape: tuple[int, ...], dropout: float = 0.5) -> nn.Module:
    """Table 2's AlexNet (ImageNet top-1 57.1% at batch 128 in Hoffer et al.)."""
    return AlexNetBN(num_classes, in_channels=input_shape[0], dropout=dropout)
