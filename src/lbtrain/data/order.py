"""The training order: one permutation per (seed, epoch), the same on every rank.

The generator seed is mixed from (seed, epoch) by numpy's SeedSequence, so no two pairs
share an order. (Seeding with `seed + epoch`, as torch's DistributedSampler does, makes seed
1's epoch e replay seed 0's epoch e + 1: runs "over three seeds" would be correlated.)
"""

import math

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

_ORDER_STREAM = 1  # spawn key: keeps these seeds apart from other (seed, ...) streams


def order_seed(seed: int, epoch: int) -> int:
    ss = np.random.SeedSequence([seed, epoch], spawn_key=(_ORDER_STREAM,))
    return int(ss.generate_state(1, dtype=np.uint64)[0])


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of `n` training samples in `epoch` of a run with `seed`."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(order_seed(seed, epoch)))


class EpochShuffleSampler(DistributedSampler):
    """DistributedSampler (each rank a stride of one shared order, padded to equal length;
    Lightning calls `set_epoch`) with the order drawn by `epoch_permutation`."""

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)

    def __iter__(self):
        order = epoch_permutation(len(self.dataset), self.seed, self.epoch).tolist()
        order *= math.ceil(self.total_size / len(order))  # pad by repeating, as torch does
        return iter(order[self.rank : self.total_size : self.num_replicas])
