"""The gradient noise scale: the logged B_simple converges to tr(Sigma) / |G|^2 computed
exactly from per-sample gradients, and measuring it leaves training untouched."""

import json

import lightning as L
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from test_weight_distance import fit
from torch.func import functional_call, grad, vmap

from lbtrain.callbacks.noise_scale import NoiseScale

NOISE_SCALE = "+callbacks.noise_scale._target_=lbtrain.callbacks.noise_scale.NoiseScale"


def exact_noise_scale(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """tr(Sigma) / |G|^2 over the whole training set, from every sample's own gradient."""
    params = {k: p.detach() for k, p in model.named_parameters()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    total, sq = 0.0, 0.0
    for xb, yb in zip(x.split(500), y.split(500), strict=True):
        g = torch.cat([v.reshape(len(xb), -1) for v in per_sample(params, xb, yb).values()], 1)
        total, sq = total + g.sum(0), sq + g.square().sum()
    mean_sq = (total / len(x)).square().sum()  # |G|^2
    return float((sq / len(x) - mean_sq) / mean_sq)  # tr(Sigma) = E|g_i|^2 - |G|^2


@pytest.mark.parametrize(
    "granularity",
    [("callbacks.noise_scale.chunks=4",), ("trainer.accumulate_grad_batches=4",)],
    ids=["chunks", "accumulation"],
)
def test_b_simple_with_frozen_weights_converges_to_the_exact_value(
    tmp_path, data_dir, granularity
):
    trainer = fit(
        tmp_path, data_dir, "model=mlp", "model.norm=none", "model.hidden=[32]",
        "optim.lr=0", "optim.weight_decay=0", "trainer.max_epochs=2",
        "trainer.limit_train_batches=1.0", "trainer.limit_val_batches=0", NOISE_SCALE,
        "+callbacks.noise_scale.every_n_steps=1", "+callbacks.noise_scale.ema_decay=0.99",
        *(f"+{o}" if o.startswith("callbacks") else o for o in granularity),
    )  # fmt: skip
    dm, module = trainer.datamodule, trainer.lightning_module
    exact = exact_noise_scale(module.model, dm.x, dm.y)
    log = pd.read_csv(tmp_path / "csv" / "metrics.csv").dropna(subset=["noise_scale/b_simple"])
    assert len(log) == 250  # every step of 2 epochs of 125
    assert log["noise_scale/b_simple"].iloc[-1] == pytest.approx(exact, rel=0.1)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["noise_scale/b_simple"] == log["noise_scale/b_simple"].iloc[-1]
    mode = "accumulation" if "accumulate" in granularity[0] else "chunks"
    assert summary["noise_scale/granularity"] == mode


class RecordGradientAndChunks(L.Callback):
    """An independent record of each step's training gradient |g|^2 (before clipping and the
    update), beside what the noise scale's chunk pass computed for the same step."""

    def __init__(self, noise_scale: NoiseScale) -> None:
        self.training, self.chunks = [], []
        update = noise_scale._update

        def record(sq_small, sq_big, small, big) -> None:
            self.chunks.append((float(sq_big), small, big))
            update(sq_small, sq_big, small, big)

        noise_scale._update = record

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad.reshape(-1) for p in pl_module.parameters() if p.grad is not None]
        self.training.append(float(torch.cat(grads).square().sum()))


def test_under_ghost_bn_the_chunks_are_the_ghost_batches_and_average_to_the_training_gradient(
    tmp_path, data_dir
):
    noise_scale = NoiseScale(every_n_steps=1)
    record = RecordGradientAndChunks(noise_scale)
    fit(tmp_path, data_dir, "ghost_batch_size=16", "trainer.max_epochs=1",
        extra_callbacks=[noise_scale, record])  # fmt: skip
    assert [(small, big) for _, small, big in record.chunks] == [(16, 32)] * 5
    assert [sq for sq, _, _ in record.chunks] == pytest.approx(record.training, rel=1e-5)


def test_measuring_leaves_training_bit_for_bit_unchanged(tmp_path, data_dir):
    """The chunk pass runs BatchNorm in training mode and takes gradients: neither the
    running statistics, nor .grad, nor the weights, nor the random streams may change."""
    runs = {}
    for name, extra in (("with", (NOISE_SCALE, "+callbacks.noise_scale.every_n_steps=1")),
                        ("without", ())):  # fmt: skip
        trainer = fit(tmp_path / name, data_dir, "trainer.max_epochs=2", *extra)
        runs[name] = trainer.lightning_module.state_dict()
    a, b = runs["with"], runs["without"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = pd.read_csv(tmp_path / "with" / "csv" / "metrics.csv")
    # Smith & Le's temperature lr N / (B (1 - momentum)): 0.05 * 4000 / (32 * 0.1)
    temperature = log["noise_scale/temperature"].dropna()
    assert list(temperature) == pytest.approx([62.5] * 10)
