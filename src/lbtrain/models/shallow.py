"""Keskar et al.'s shallow convnets C1 (CIFAR-10) and C3 (CIFAR-100) from Hoffer et al.'s Table 1.

Keskar et al. 2017 ("On large-batch training ... sharp minima") describe C1 and C3 as the same
network: conv5x5(64) + maxpool + BN, twice, then FC 384 -> FC 192 with BN and dropout 0.5,
then the classifier. Choices where that description is silent (they set the parameter count):
  - ReLU after each BN, i.e. conv -> maxpool -> BN -> ReLU, the order the description gives
    (pooling first also means BN normalises about 4x fewer values).
  - 'same' padding 2 for the 5x5 convs and 3x3/stride-2 max pooling without padding, as in the
    cuda-convnet nets these come from: 32 -> 15 -> 7, so the first FC sees 64 * 7 * 7 = 3136.
  - No bias on convs/FCs followed by BN (BN's shift makes it redundant); dropout after each
    hidden FC's ReLU.
Parameters: 1,388,490 for 10 classes (C1), 1,405,860 for 100 classes (C3).
"""

from torch import nn

from lbtrain.models.registry import he_init, register_model


def _pooled(size: int) -> int:
    """Spatial size after a padded 5x5 conv (unchanged) and a 3x3/stride-2 max pool."""
    return (size - 3) // 2 + 1


def shallow_convnet(
    num_classes: int, input_shape: tuple[int, ...], dropout: float = 0.5
) -> nn.Module:
    """Build C1/C3 for any (channels, height, width) input; the classes come from the data."""
    in_ch, height, width = input_shape
    layers: list[nn.Module] = []
    for ch_in, ch_out in ((in_ch, 64), (64, 64)):
        layers += [
            nn.Conv2d(ch_in, ch_out, 5, padding=2, bias=False),
            nn.MaxPool2d(3, stride=2),
            nn.BatchNorm2d(ch_out),
            nn.ReLU(inplace=True),
        ]
        height, width = _pooled(height), _pooled(width)
    layers.append(nn.Flatten())
    width_in = 64 * height * width
    for hidden in (384, 192):
        layers += [
            nn.Linear(width_in, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        ]
        width_in = hidden
    layers.append(nn.Linear(width_in, num_classes))
    return he_init(nn.Sequential(*layers))


@register_model
def c1(num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """Keskar et al.'s C1 (CIFAR-10); see the module docstring for the layer choices."""
    return shallow_convnet(num_classes, input_shape, **kwargs)


@register_model
def c3(num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """Keskar et al.'s C3: C1's network on CIFAR-100 (only the classifier width differs)."""
    return shallow_convnet(num_classes, input_shape, **kwargs)
