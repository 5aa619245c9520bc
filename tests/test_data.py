"""MNIST-1D generation and the in-memory batch loader."""

import numpy as np
import torch

from lbtrain.data.in_memory import InMemoryLoader
from lbtrain.data.mnist1d import MNIST1DDataModule


def test_mnist1d_standard_split_is_cached_deterministic_and_normalised(data_dir):
    dm = MNIST1DDataModule(str(data_dir), batch_size=32)
    dm.prepare_data()
    dm.setup()
    assert dm.x.shape == (4000, 1, 40) and dm.x_test.shape == (1000, 1, 40)
    assert set(dm.y.unique().tolist()) == set(range(10))
    assert abs(dm.x.mean()) < 1e-5 and abs(dm.x.std() - 1) < 1e-4
    first = np.load(dm.path)["x"]
    dm.path.unlink()
    dm.prepare_data()  # regenerated from the same arguments: identical data
    assert np.array_equal(np.load(dm.path)["x"], first)
    other = MNIST1DDataModule(str(data_dir), batch_size=32, generation_seed=7)
    assert other.path != dm.path  # different generation arguments, different cache file


def test_loader_visits_every_sample_once_per_epoch_in_a_new_order():
    x, y = torch.arange(100).float().unsqueeze(1), torch.arange(100)
    epoch = [0]
    loader = InMemoryLoader(x, y, 32, shuffle=True, seed=1, epoch=lambda: epoch[0])
    first = torch.cat([b[1] for b in loader])
    assert len(loader) == 4 and sorted(first.tolist()) == list(range(100))
    assert torch.equal(first, torch.cat([b[1] for b in loader]))  # same epoch, same order
    epoch[0] = 1
    assert not torch.equal(first, torch.cat([b[1] for b in loader]))


def test_ddp_ranks_take_disjoint_equal_shards_of_one_permutation():
    x, y = torch.zeros(103, 1), torch.arange(103)
    shards = [
        torch.cat([b[1] for b in InMemoryLoader(x, y, 8, shuffle=True, rank=r, world_size=2)])
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 51
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    evals = [InMemoryLoader(x, y, 8, shuffle=False, rank=r, world_size=2) for r in range(2)]
    seen = torch.cat([b[1] for loader in evals for b in loader])
    assert sorted(seen.tolist()) == list(range(103))  # evaluation keeps every sample
    assert [len(e) for e in evals] == [7, 7]


def test_no_two_seed_epoch_pairs_share_a_training_order():
    """Seeds 0..9 x epochs 0..99: 1000 distinct orders, so runs over seeds are independent
    (with `seed + epoch`, seed 1's epoch e replayed seed 0's epoch e + 1)."""
    x, y = torch.zeros(64, 1), torch.arange(64)
    epoch = [0]
    orders = set()
    for seed in range(10):
        loader = InMemoryLoader(x, y, 64, shuffle=True, seed=seed, epoch=lambda: epoch[0])
        for epoch[0] in range(100):
            orders.add(tuple(next(iter(loader))[1].tolist()))
    assert len(orders) == 1000


def test_imagenet_order_depends_on_seed_and_epoch_without_aliasing(imagenet_dir):
    """The DataLoader path (ImageNet) draws its order the same way, on one device and per
    DDP rank."""
    from lbtrain.data.imagenet import ImageNetDataModule
    from lbtrain.data.order import EpochShuffleSampler

    dm = ImageNetDataModule(str(imagenet_dir), batch_size=6, num_workers=0)
    dm.setup()

    def order(seed: int, epoch: int) -> tuple[int, ...]:
        dm.shuffle_seed = seed
        sampler = dm.train_dataloader().sampler
        sampler.set_epoch(epoch)  # as Lightning does each epoch
        return tuple(sampler)

    assert sorted(order(0, 0)) == list(range(6))
    assert order(1, 0) != order(0, 1) and order(2, 0) != order(1, 1) != order(0, 2)
    shards = [list(EpochShuffleSampler(dm.train_set, 2, rank, seed=0)) for rank in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(6))
