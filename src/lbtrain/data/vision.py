"""The paper's image data sets, read with torchvision's own dataset classes.

MNIST, CIFAR-10 and CIFAR-100 fit in memory (150 MB of uint8 for CIFAR's training set),
so each is read once into one uint8 tensor, moved to the training device, and served by
InMemoryLoader; augmentation and normalisation run there on whole batches (augment.py)
instead of per image in DataLoader workers. ImageNet does not fit (imagenet.py).

As in the paper (Hoffer et al. 2017 report validation accuracy on the held-out set), each
set's standard test split is the validation set: `val/acc` is accuracy on images never
trained on, and no part of the training set is held out.

Missing files are reported as one DataError line naming `data.data_dir`, what is missing
and how to get it, both in prepare_data() and in setup() (which runs on every rank, and
outside a Trainer).
"""

from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor
from torchvision import datasets

from lbtrain.data import register_datamodule
from lbtrain.data.augment import BatchTransform, normalize
from lbtrain.data.in_memory import InMemoryDataModule
from lbtrain.errors import DataError, one_line


class _InMemoryVisionDataModule(InMemoryDataModule):
    """A torchvision data set read whole into uint8 tensors; batches cut on the device."""

    dataset_cls: ClassVar[type]
    title: ClassVar[str]  # the set's name in messages, e.g. "CIFAR-10"
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]
    num_classes: ClassVar[int]
    input_shape: ClassVar[tuple[int, int, int]]

    def __init__(  # the CIFAR classes' own; MNIST's narrows it (and does not augment)
        self,
        data_dir: str,
        batch_size: int,
        eval_batch_size: int = 1000,
        shuffle_seed: int = 0,
        download: bool = False,
        augment: bool = True,
        batch_augment: int = 1,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, shuffle_seed, augment, batch_augment)
        self.data_dir, self.download = Path(data_dir), download
        self.x: Tensor | None = None

    def required_files(self) -> list[str]:
        """Paths under data_dir that torchvision reads, first the folder they share."""
        raise NotImplementedError(f"{type(self).__name__} must list the files it reads")

    def _check_present(self) -> None:
        for rel in self.required_files():
            if not (self.data_dir / rel).exists():
                raise DataError(
                    f"data.data_dir={self.data_dir}: {self.title} not found (missing {rel}); "
                    "set data.download=true to fetch it, or copy it there"
                )

    def check(self) -> None:
        """Before anything is built: the files are there, or data.download will fetch them."""
        if not self.download:
            self._check_present()

    def prepare_data(self) -> None:
        """Runs on one process per node (Lightning's rule), so only it downloads."""
        if self.download and not all((self.data_dir / f).exists() for f in self.required_files()):
            try:  # one split is enough: torchvision fetches the archive holding both
                self.dataset_cls(str(self.data_dir), train=True, download=True)
            except (OSError, RuntimeError) as e:  # URLError is an OSError
                raise DataError(
                    f"data.download=true: fetching {self.title} into {self.data_dir} failed "
                    f"({one_line(e)}); copy it there instead"
                ) from None
        self._check_present()

    def _read(self, train: bool) -> tuple[Tensor, Tensor]:
        try:
            ds = self.dataset_cls(str(self.data_dir), train=train, download=False)
        except RuntimeError as e:  # torchvision's "not found or corrupted" (md5 mismatch)
            folder = self.required_files()[0]
            raise DataError(
                f"data.data_dir={self.data_dir}: {self.title} under {folder} fails torchvision's "
                f"checks ({one_line(e)}); delete it and set data.download=true"
            ) from None
        x = torch.as_tensor(ds.data)  # MNIST: (N, H, W) tensor; CIFAR: (N, H, W, C) array
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        return x.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long)

    def setup(self, stage: str | None = None) -> None:
        if self.x is not None:  # fit, then validate or test: read once
            return
        self._check_present()
        self.x, self.y = self._read(train=True)
        self.x_test, self.y_test = self._read(train=False)

    def transform(self, train: bool) -> BatchTransform:
        """Normalised; training batches cropped and flipped too, with `augment`."""
        return BatchTransform(
            self.mean, self.std, augment=train and self.augment, seed=self.shuffle_seed
        )

    def measurement_set(self, n: int) -> tuple[Tensor, Tensor]:
        """The first n training images in data-set order, normalised, unaugmented."""
        return normalize(self.x[:n], self.mean, self.std), self.y[:n]


@register_datamodule("mnist")
class MNISTDataModule(_InMemoryVisionDataModule):
    """MNIST: 60000 training and 10000 test digits, 28x28 grey; no augmentation, as in
    the paper's MNIST runs. Read from data_dir/MNIST/raw/ (the unpacked IDX files)."""

    dataset_cls = datasets.MNIST
    title = "MNIST"
    mean, std = (0.1307,), (0.3081,)  # the training set's pixel statistics
    num_classes = 10
    input_shape = (1, 28, 28)

    def __init__(
        self,
        data_dir: str,
        batch_size: int,
        eval_batch_size: int = 1000,
        shuffle_seed: int = 0,
        download: bool = False,
    ) -> None:
        # augment=False: no augmentation, as in the paper's MNIST runs
        super().__init__(data_dir, batch_size, eval_batch_size, shuffle_seed, download, False)

    def required_files(self) -> list[str]:
        # torchvision reads the unpacked files: resources lists the .gz it downloads
        raw = [f"MNIST/raw/{name.removesuffix('.gz')}" for name, _ in datasets.MNIST.resources]
        return ["MNIST/raw/", *raw]


class _CIFARDataModule(_InMemoryVisionDataModule):
    """CIFAR: 50000 training and 10000 test images, 32x32 RGB. Training batches get the
    standard augmentation (random 32x32 crop of the 4-pixel zero-padded image, horizontal
    flip with p=0.5) on the device unless augment=False."""

    input_shape = (3, 32, 32)

    def required_files(self) -> list[str]:
        cls = self.dataset_cls
        names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return [f"{cls.base_folder}/", *(f"{cls.base_folder}/{name}" for name in names)]


@register_datamodule("cifar10")
class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10 (10 classes) from data_dir/cifar-10-batches-py/, the unpacked python
    archive; training batches are cropped and flipped on the device unless augment=False."""

    dataset_cls = datasets.CIFAR10
    title = "CIFAR-10"
    # per-channel statistics of the 50000 training images (the often-copied std
    # (0.2023, 0.1994, 0.2010) is not the pixel std)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    num_classes = 10


@register_datamodule("cifar100")
class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100 (100 fine labels) from data_dir/cifar-100-python/, the unpacked python
    archive; training batches are cropped and flipped on the device unless augment=False."""

    dataset_cls = datasets.CIFAR100
    title = "CIFAR-100"
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    num_classes = 100  # the fine labels
