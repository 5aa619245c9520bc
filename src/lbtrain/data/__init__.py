"""Data modules by name; each exposes `num_classes` and `input_shape` after construction."""

from lbtrain.data.mnist1d import MNIST1DDataModule
from lbtrain.data.vision import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    ImageNetDataModule,
    MNISTDataModule,
)

DATAMODULES = {
    "mnist1d": MNIST1DDataModule,
    "mnist": MNISTDataModule,
    "cifar10": CIFAR10DataModule,
    "cifar100": CIFAR100DataModule,
    "imagenet": ImageNetDataModule,
}
