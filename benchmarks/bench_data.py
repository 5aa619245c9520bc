"""CIFAR input pipeline speed on CPU: torchvision per-image transforms in a DataLoader vs
lbtrain's whole-batch path (InMemoryLoader + random_crop_flip + normalize).

Both produce the same thing: shuffled float32 batches of 128 x 3 x 32 x 32, randomly
cropped from the 4-pixel zero-padded image, flipped with p=0.5 and normalised per channel.
- torchvision: a Dataset over 50000 random 32x32x3 uint8 images that, as
  torchvision.datasets.CIFAR10 does, makes a PIL image per sample and applies
  RandomCrop(32, padding=4) + RandomHorizontalFlip() + ToTensor() + Normalize(); a
  DataLoader collates them, with 0 and with 2 worker processes;
- in-memory: the same images as one (50000, 3, 32, 32) uint8 tensor; InMemoryLoader cuts
  each batch with one index op and BatchTransform crops, flips and normalises it.
Each timing covers `--batches` batches after the first one (worker start-up is not
counted, which flatters the DataLoader). Paths are interleaved over `--repeats` rounds so
that load on a shared machine hits them alike; the median rate is reported, with the range.
The in-memory path runs with 1 and with 2 intra-op threads; the DataLoader's own workers
use one thread each.

    python benchmarks/bench_data.py            # about 1 min on 2 CPU cores
    python benchmarks/bench_data.py --quick    # one short round, a smoke test

Results are in the README (Benchmarks). On a loaded machine the 2-thread rows collapse:
OpenMP's two threads wait on each other at every op when another process holds a core.
"""

import argparse
import os
import platform
import statistics
import time
from collections.abc import Iterable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from lbtrain.data.augment import BatchTransform
from lbtrain.data.in_memory import InMemoryLoader
from lbtrain.data.vision import CIFAR10DataModule

N, BATCH = 50000, 128
MEAN, STD = CIFAR10DataModule.mean, CIFAR10DataModule.std


class PerImageCIFAR(Dataset):
    """What torchvision.datasets.CIFAR10 does per sample: HWC uint8 -> PIL -> transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def images_per_second(loader: Iterable, batches: int) -> float:
    """Rate over `batches` batches after the first one."""
    it = iter(loader)
    next(it)
    seen, start = 0, time.perf_counter()
    for _ in range(batches):
        x, _ = next(it)
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
        seen += len(x)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=200, help="timed batches per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round of 20 batches")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.repeats = 20, 1

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, N)
    per_image = PerImageCIFAR(images, labels)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels)

    def in_memory() -> InMemoryLoader:
        transform = BatchTransform(MEAN, STD, augment=True)
        return InMemoryLoader(x, y, BATCH, shuffle=True, transform=transform)

    def torchvision_rate(workers: int) -> float:
        loader = DataLoader(per_image, BATCH, shuffle=True, num_workers=workers)
        return images_per_second(loader, args.batches)

    def in_memory_rate() -> float:
        return images_per_second(in_memory(), args.batches)

    paths = {  # name -> (intra-op threads of this process, timed run)
        "torchvision DataLoader, 0 workers": (1, lambda: torchvision_rate(0)),
        "torchvision DataLoader, 2 workers": (1, lambda: torchvision_rate(2)),
        "InMemoryLoader + random_crop_flip + normalize, 1 thread": (1, in_memory_rate),
        "InMemoryLoader + random_crop_flip + normalize, 2 threads": (2, in_memory_rate),
    }
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, (threads, run) in paths.items():
            torch.set_num_threads(threads)
            rates[name].append(run())

    cpu = platform.processor() or platform.machine()
    print(f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, load average ", end="")
    print(f"{os.getloadavg()[0]:.1f}, {args.repeats} rounds, batch {BATCH}\n")
    print("| path | images/s (median) | range | in-memory (1 thread) speed-up |")
    print("|---|---|---|---|")
    fast = statistics.median(rates["InMemoryLoader + random_crop_flip + normalize, 1 thread"])
    for name, r in rates.items():
        median = statistics.median(r)
        print(f"| {name} | {median:,.0f} | {min(r):,.0f}-{max(r):,.0f} | {fast / median:.1f}x |")


if __name__ == "__main__":
    main()
