"""Batches cut from whole in-memory tensors: one index op per batch, no per-sample collate."""

from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch import Tensor

from lbtrain.data.order import epoch_permutation
from lbtrain.train.batch_schedule import batches_per_epoch


class InMemoryLoader:
    """Iterates (x, y) batches of tensors that already live on the training device.

    Shuffling draws a fresh permutation each epoch from (seed, epoch()), so every rank
    of a DDP job draws the same one and takes its own stride (as DistributedSampler
    does), and a run resumed at an epoch boundary sees the same order as one that never
    stopped. Training drops the `n % world_size` leftover samples so all ranks take the
    same number of steps; evaluation keeps every sample (ranks may differ by one).
    `skip()` batches are left out at the start of an epoch: a run resumed mid-epoch takes
    up exactly where it stopped. `transform(x, epoch, rank, batch)` sees each batch with
    its place in the run, so random augmentation can be seeded by it.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int | Callable[[int], int],  # per device; or a function of the epoch
        *,
        shuffle: bool,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        transform: Callable[[Tensor, int, int, int], Tensor] | None = None,
        skip: Callable[[], int] = lambda: 0,
        copies: int = 1,
    ) -> None:
        self.x, self.y = x, y
        self.copies = copies  # batch augmentation: each sample this many times per batch
        self.batch_size = batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch
        self.rank, self.world_size = rank, world_size
        self.transform = transform
        self.skip = skip

    def _indices(self) -> Tensor:
        n = len(self.x)
        if self.shuffle:
            order = epoch_permutation(n, self.seed, self.epoch())
            order = order[: n - n % self.world_size]
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size].to(self.x.device)

    def _batch_size(self) -> int:
        """This epoch's batch: fixed, or changing under a batch-size schedule."""
        return self.batch_size(self.epoch()) if callable(self.batch_size) else self.batch_size

    def __len__(self) -> int:
        n = len(self.x)
        if self.shuffle:  # training: each rank an equal share, the leftover dropped
            return batches_per_epoch(n, self._batch_size(), self.world_size)
        per_rank = -(-(n - self.rank) // self.world_size)  # evaluation: every sample once
        return -(-per_rank // self._batch_size())

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        batches = self._indices().split(self._batch_size())
        start, epoch = self.skip(), self.epoch()
        for i, idx in enumerate(batches[start:], start=start):
            if self.copies > 1:  # M copies of the batch, one after another, each augmented anew
                idx = idx.repeat(self.copies)
            x = self.x[idx]
            yield (self.transform(x, epoch, self.rank, i) if self.transform else x), self.y[idx]

    @classmethod
    def for_trainer(
        cls, trainer, x: Tensor, y: Tensor, batch_size: int, *, train: bool, seed: int,
        transform: Callable[[Tensor, int, int, int], Tensor] | None = None, copies: int = 1,
    ) -> "InMemoryLoader":  # fmt: skip
        """A trainer's loader: the data on its device, its rank's share, its epoch; for
        training, shuffled and skipping the batches of this epoch already done, with
        `copies` augmented copies of each sample (batch augmentation)."""
        common = dict(shuffle=train, seed=seed, transform=transform, copies=copies if train else 1)
        if trainer is None:  # outside a Trainer: one process on the CPU
            return cls(x, y, batch_size, **common)
        device = trainer.strategy.root_device
        progress = trainer.fit_loop.epoch_loop.batch_progress
        return cls(
            x.to(device), y.to(device), batch_size, epoch=lambda: trainer.current_epoch,
            rank=trainer.global_rank, world_size=trainer.world_size,
            skip=(lambda: progress.current.completed) if train else (lambda: 0), **common,
        )  # fmt: skip


class InMemoryDataModule(L.LightningDataModule):
    """A data set held whole as tensors, `x`, `y` (training) and `x_test`, `y_test` (the
    held-out set), set by `setup`; batches are cut on the training device (InMemoryLoader)
    and transformed there (`transform`). MNIST-1D and the torchvision sets are ones."""

    batch_size_at = None  # per-device batch of an epoch, under a batch-size schedule

    def __init__(
        self, batch_size: int, eval_batch_size: int, shuffle_seed: int, augment: bool,
        batch_augment: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.batch_size = batch_size  # per device (micro-batch)
        self.eval_batch_size, self.shuffle_seed = eval_batch_size, shuffle_seed
        self.augment, self.batch_augment = augment, batch_augment

    def transform(self, train: bool) -> Callable[[Tensor, int, int, int], Tensor] | None:
        """What is done on the device to a training (or validation) batch; None: nothing."""
        return None

    @property
    def num_train_samples(self) -> int:
        """Training samples (after setup): the N of the noise scale and temperature."""
        return len(self.x)

    def train_dataloader(self) -> InMemoryLoader:
        return InMemoryLoader.for_trainer(
            self.trainer, self.x, self.y, self.batch_size_at or self.batch_size, train=True,
            seed=self.shuffle_seed, transform=self.transform(train=True),
            copies=self.batch_augment,
        )  # fmt: skip

    def val_dataloader(self) -> InMemoryLoader:
        return InMemoryLoader.for_trainer(
            self.trainer, self.x_test, self.y_test, self.eval_batch_size, train=False,
            seed=self.shuffle_seed, transform=self.transform(train=False),
        )  # fmt: skip
