"""Data modules by name; each exposes `num_classes` and `input_shape` after construction."""

from lbtrain.data.mnist1d import MNIST1DDataModule

DATAMODULES = {"mnist1d": MNIST1DDataModule}
