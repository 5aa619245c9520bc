"""MNIST-1D (Greydanus 2020), generated offline and cached: the embedded default data set.

The standard split is 4000 training and 1000 held-out signals of length 40. As in the
paper (which reports validation accuracy on the held-out set), the held-out 1000 serve as
the validation set: `val/acc` is accuracy on data never trained on.
"""

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from lbtrain.data import register_datamodule
from lbtrain.data.augment import SignalAugment
from lbtrain.data.in_memory import InMemoryDataModule
from lbtrain.errors import DataError, one_line

log = logging.getLogger(__name__)


def _generation_args(num_samples: int, train_split: float, seed: int) -> dict:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.update(num_samples=num_samples, train_split=train_split, seed=seed)
    args.pop("url")  # only used by mnist1d's downloader, which lbtrain never calls
    return args


def cache_path(data_dir: str | Path, args: dict) -> Path:
    """The cache file is named after the generation arguments, so changing any of them
    generates a new data set instead of silently reusing an old one."""
    digest = hashlib.sha1(json.dumps(args, sort_keys=True).encode()).hexdigest()[:10]
    name = f"mnist1d_n{args['num_samples']}_seed{args['seed']}_{digest}.npz"
    return Path(data_dir) / "mnist1d" / name


def generate(path: Path, args: dict) -> None:
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    data = make_dataset(ObjectView(dict(args)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # atomic: concurrent jobs may race
    np.savez(tmp, x=data["x"], y=data["y"], x_test=data["x_test"], y_test=data["y_test"])
    tmp.replace(path)
    log.info("generated MNIST-1D (%d samples) into %s", args["num_samples"], path)


@register_datamodule("mnist1d")
class MNIST1DDataModule(InMemoryDataModule):
    num_classes = 10

    def __init__(
        self,
        data_dir: str,
        batch_size: int,
        eval_batch_size: int = 1000,
        num_samples: int = 5000,
        train_split: float = 0.8,
        generation_seed: int = 42,
        shuffle_seed: int = 0,
        augment: bool = False,
        batch_augment: int = 1,
    ) -> None:
        if not 0 < train_split < 1:
            raise ValueError(f"data.train_split={train_split}: must be in (0, 1)")
        if not int(num_samples * train_split) >= batch_size:
            raise ValueError(
                f"data.num_samples={num_samples}: gives {int(num_samples * train_split)} "
                f"training samples, fewer than one per-device batch ({batch_size})"
            )
        super().__init__(batch_size, eval_batch_size, shuffle_seed, augment, batch_augment)
        self.args = _generation_args(num_samples, train_split, generation_seed)
        self.path = cache_path(data_dir, self.args)
        self.input_shape = (1, self.args["final_seq_length"])
        self._arrays: dict[str, np.ndarray] | None = None  # read by check(), kept for setup()

    def check(self) -> None:
        """Before anything is built: a cached data set must be readable (generated if absent);
        what was read is kept for setup()."""
        if self.path.exists():
            self._arrays = self._load()

    def _load(self) -> dict[str, np.ndarray]:
        if self._arrays is not None:
            return self._arrays
        try:
            with np.load(self.path) as d:
                return {k: d[k] for k in ("x", "y", "x_test", "y_test")}
        except Exception as e:  # truncated or foreign file: zipfile, pickle or key errors
            raise DataError(
                f"data.data_dir={self.path.parent.parent}: the MNIST-1D cache {self.path.name} "
                f"is unreadable ({type(e).__name__}: {one_line(e)}); delete it, and "
                "the next run generates it again"
            ) from None

    def prepare_data(self) -> None:
        if not self.path.exists():
            generate(self.path, self.args)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # generate if absent: setup() may run without it, outside a Trainer
        d = self._load()
        x, x_test = (torch.from_numpy(d[k]).float().unsqueeze(1) for k in ("x", "x_test"))
        # normalise with training-set statistics only
        mean, std = x.mean(), x.std()
        self.x, self.x_test = (x - mean) / std, (x_test - mean) / std
        self.y, self.y_test = torch.from_numpy(d["y"]).long(), torch.from_numpy(d["y_test"]).long()

    def measurement_set(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n training samples in data-set order, as training sees them (for
        measurements on a fixed set, e.g. sharpness)."""
        return self.x[:n], self.y[:n]

    def transform(self, train: bool) -> SignalAugment | None:
        return SignalAugment(self.shuffle_seed) if train and self.augment else None
