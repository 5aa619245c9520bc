"""The data module registry (`data.name`). A data module exposes `num_classes` and
`input_shape` after construction, is built with `batch_size` (per device), `shuffle_seed`
and its config's keys, and may offer `check()`: a look at its files before any model is
built."""

from lbtrain.config.registry import Registry

DATAMODULES = Registry("data.name")
register_datamodule = DATAMODULES.register  # @register_datamodule("blobs"): data.name=blobs

# each registers its data modules (mnist1d; mnist, cifar10, cifar100; imagenet)
from lbtrain.data import imagenet, mnist1d, vision  # noqa: E402, F401
