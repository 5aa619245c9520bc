"""Batch augmentation (Hoffer et al. 2020): M independently augmented copies of each sample
in the same batch; the steps per epoch stay, the samples per step grow M-fold."""

import json

import torch

from lbtrain.data.mnist1d import MNIST1DDataModule
from lbtrain.data.order import epoch_permutation


def best_fit_residual(copy: torch.Tensor, original: torch.Tensor, max_shift: int = 4) -> float:
    """How far `copy` is from the best circular shift (within max_shift) and rescaling of
    `original`, relative to the original's norm."""
    best = float("inf")
    for shift in range(-max_shift, max_shift + 1):
        rolled = original.roll(shift)
        scale = (copy @ rolled) / (rolled @ rolled)
        best = min(best, float((copy - scale * rolled).norm() / original.norm()))
    return best


def test_each_sample_appears_m_times_each_copy_augmented_on_its_own(data_dir):
    dm = MNIST1DDataModule(str(data_dir), batch_size=32, augment=True, batch_augment=4)
    dm.setup()
    loader = dm.train_dataloader()
    assert len(loader) == 125  # 4000 / 32: as many steps as without copies
    x, y = next(iter(loader))
    assert x.shape == (128, 1, 40) and y.shape == (128,)
    copies = x.view(4, 32, 40)
    originals = dm.x[epoch_permutation(4000, 0, 0)[:32]].view(32, 40)  # epoch 0's first batch
    assert (y.view(4, 32) == dm.y[epoch_permutation(4000, 0, 0)[:32]]).all()
    for i in range(32):
        # each copy is its sample shifted, rescaled and noised (noise std 0.05: ~5% of the norm)
        assert max(best_fit_residual(copies[k, i], originals[i]) for k in range(4)) < 0.15
        # and the four copies differ from one another: each drew its own augmentation
        distinct = {tuple(copies[k, i].round(decimals=4).tolist()) for k in range(4)}
        assert len(distinct) == 4


def test_the_run_keeps_its_steps_and_processes_m_times_the_samples(cli_in_process, tmp_path):
    runs = {}
    for m in (1, 4):
        result = cli_in_process(
            "batch_size=256", f"batch_augment={m}", "data.augment=true", "trainer.max_epochs=1",
            "logger=csv", f"hydra.run.dir=run{m}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        runs[m] = json.loads((tmp_path / f"run{m}" / "summary.json").read_text())
    assert runs[1]["global_step"] == runs[4]["global_step"] == 16  # ceil(4000 / 256)
    assert (runs[1]["samples_seen"], runs[4]["samples_seen"]) == (4000, 16000)
    assert runs[4]["plan"]["samples_per_step"] == 1024
