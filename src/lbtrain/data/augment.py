"""Batched augmentation on the training device: a whole batch in a handful of tensor ops.

torchvision's `RandomCrop(32, padding=4)` + `RandomHorizontalFlip()` run once per image in a
DataLoader worker; here one call crops and flips a whole (N, C, H, W) batch where it already
lives, with each image drawing its own offsets and flip, so the statistics are the same:
offsets uniform on {0, ..., 2 * padding} in each axis, flips Bernoulli(0.5).
"""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop_flip(
    x: Tensor, padding: int = 4, generator: torch.Generator | None = None
) -> Tensor:
    """Zero-pad each image by `padding`, take a random window of the original size, and
    mirror it left-right with probability 0.5; dtype and device are kept.

    The batch is padded once; every output pixel is then one `gather` from the flattened
    padded image at (row offset + i) * padded width + (column offset + j), with the column
    order reversed for flipped images, so crop and flip cost a single indexing pass.
    `generator`, if given, must live on `x.device`.
    """
    n, c, h, w = x.shape
    padded_w = w + 2 * padding
    padded = F.pad(x, (padding, padding, padding, padding))
    # row and column offset of each image's window, like RandomCrop's `i, j`
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=x.device)
    flip = torch.rand(n, generator=generator, device=x.device) < 0.5
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    index = rows[:, :, None] * padded_w + cols[:, None, :]  # (n, h, w) into the flat image
    index = index.view(n, 1, h * w).expand(n, c, h * w)
    return padded.view(n, c, -1).gather(2, index).view(n, c, h, w)


def shift_scale_noise(
    x: Tensor,
    max_shift: int = 4,
    scale: float = 0.1,
    noise: float = 0.05,
    generator: torch.Generator | None = None,
) -> Tensor:
    """MNIST-1D-style augmentation of a batch of 1-D signals (N, C, L), in the spirit of how
    MNIST-1D is generated (translation, scaling, noise): each signal is shifted circularly
    by its own integer in [-max_shift, max_shift], multiplied by its own factor uniform in
    [1 - scale, 1 + scale], and given iid Gaussian noise of std `noise` (signals are
    normalised to std 1). One gather, one multiply, one add."""
    n, c, length = x.shape
    shift = torch.randint(-max_shift, max_shift + 1, (n, 1, 1), generator=generator,
                          device=x.device)  # fmt: skip
    index = (torch.arange(length, device=x.device) - shift) % length
    factor = 1 + scale * (2 * torch.rand(n, 1, 1, generator=generator, device=x.device) - 1)
    jitter = noise * torch.randn(x.shape, generator=generator, device=x.device)
    return x.gather(2, index.expand(n, c, length)) * factor + jitter


class _SeededPerBatch:
    """The generator a batch augmentation draws from, on the batch's device and seeded per
    (seed, epoch, rank, batch): what SignalAugment and BatchTransform share."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.generator: torch.Generator | None = None

    def _seeded(self, x: Tensor, epoch: int, rank: int, batch: int) -> torch.Generator:
        """The generator (made anew only for another device) seeded for this batch."""
        if self.generator is None or self.generator.device != x.device:
            self.generator = torch.Generator(device=x.device)
        return self.generator.manual_seed(augment_seed(self.seed, epoch, rank, batch))


class SignalAugment(_SeededPerBatch):
    """`shift_scale_noise` on each training batch, seeded per (seed, epoch, rank, batch) as
    BatchTransform seeds its crops: resumable, and independent across DDP ranks."""

    def __call__(self, x: Tensor, epoch: int = 0, rank: int = 0, batch: int = 0) -> Tensor:
        return shift_scale_noise(x, generator=self._seeded(x, epoch, rank, batch))


def normalize(x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """uint8 images (N, C, H, W) in [0, 255] to float32 `(x / 255 - mean) / std` per channel,
    as `ToTensor()` + `Normalize(mean, std)` would give each image.

    `mean` and `std` may be tensors already on `x.device` (BatchTransform keeps them there),
    so that normalising a batch copies nothing from the host.
    """
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return x.float().div(255).sub_(mean_t).div_(std_t)  # div() makes a copy: x is never changed


def augment_seed(seed: int, epoch: int, rank: int, batch: int = 0) -> int:
    """A generator seed per (seed, epoch, rank, batch), mixed by numpy's SeedSequence so
    that neighbouring tuples give unrelated streams."""
    return int(np.random.SeedSequence([seed, epoch, rank, batch]).generate_state(1)[0])


class BatchTransform(_SeededPerBatch):
    """Optional random_crop_flip, then normalize: what InMemoryLoader applies to each batch.

    Augmentation draws from its own generator on the batch's device, seeded for each batch
    from `augment_seed(seed, epoch, rank, batch)`. Seeding by rank matters under DDP: every
    rank starts from the same global seed, so drawing from the global RNG would give sample
    i of every rank's batch the same crop and flip. Seeding by epoch and batch index makes a
    run resumed anywhere, mid-epoch included, see the same augmentations as one that never
    stopped, as InMemoryLoader does for the order.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        augment: bool = False,
        padding: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self.augment, self.padding = augment, padding

    def __call__(self, x: Tensor, epoch: int = 0, rank: int = 0, batch: int = 0) -> Tensor:
        """Transform batch number `batch` of `epoch` on `rank`."""
        if self.mean.device != x.device:  # once: the statistics follow the data
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        if self.augment:
            x = random_crop_flip(x, self.padding, self._seeded(x, epoch, rank, batch))
        return normalize(x, self.mean, self.std)
