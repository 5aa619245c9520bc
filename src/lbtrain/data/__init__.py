"""Data modules by name; each exposes `num_classes` and `input_shape` after construction,
is built with `batch_size` (per device), `shuffle_seed` and its config's keys, and may
offer `check()`: a look at its files before any model is built."""

from lbtrain.data.imagenet import ImageNetDataModule
from lbtrain.data.mnist1d import MNIST1DDataModule
from lbtrain.data.vision import CIFAR10DataModule, CIFAR100DataModule, MNISTDataModule

DATAMODULES = {
    "mnist1d": MNIST1DDataModule,
    "mnist": MNISTDataModule,
    "cifar10": CIFAR10DataModule,
    "cifar100": CIFAR100DataModule,
    "imagenet": ImageNetDataModule,
}


def register_datamodule(name: str):
    """Class decorator: `data=<your config>` with `name: <name>` builds this data module."""

    def register(cls):
        if name in DATAMODULES:
            raise ValueError(f"data module {name!r} is registered twice")
        DATAMODULES[name] = cls
        return cls

    return register
