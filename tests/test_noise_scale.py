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

from lbtrain.data.mnist1d import MNIST1DDataModule
from lbtrain.measure.noise_scale_callback import NoiseScale
from lbtrain.models import create_model

NOISE_SCALE = "+callbacks.noise_scale._target_=lbtrain.measure.noise_scale_callback.NoiseScale"


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


MLP = ("model=mlp", "model.norm=none", "model.hidden=[32]", "trainer.max_epochs=2",
       "+callbacks.noise_scale.ema_decay=0.99")  # fmt: skip
# B_simple ~ 300 here: batches of 256 (chunks of 64) and 512 measurements keep the
# estimate's spread well inside the 10%
CNN = ("model=cnn1d", "model.norm=none", "batch_size=256", "trainer.max_epochs=32",
       "+callbacks.noise_scale.ema_decay=0.999")  # fmt: skip


@pytest.mark.parametrize(
    ("model", "granularity", "steps"),
    [
        (MLP, ("callbacks.noise_scale.chunks=4",), 250),
        (MLP, ("trainer.accumulate_grad_batches=4",), 250),
        (CNN, ("callbacks.noise_scale.chunks=4",), 512),
    ],  # fmt: skip
    ids=["mlp, chunks", "mlp, accumulation", "cnn1d, chunks"],
)
def test_b_simple_with_frozen_weights_converges_to_the_exact_value(
    tmp_path, data_dir, model, granularity, steps
):
    trainer = fit(
        tmp_path, data_dir, *model, "optim.lr=0", "optim.weight_decay=0",
        "trainer.limit_train_batches=1.0", "trainer.limit_val_batches=0", NOISE_SCALE,
        "+callbacks.noise_scale.every_n_steps=1",
        *(f"+{o}" if o.startswith("callbacks") else o for o in granularity),
    )  # fmt: skip
    dm, module = trainer.datamodule, trainer.lightning_module
    exact = exact_noise_scale(module.model, dm.x, dm.y)
    log = pd.read_csv(tmp_path / "csv" / "metrics.csv").dropna(subset=["noise_scale/b_simple"])
    assert len(log) == steps  # every step
    logged = log["noise_scale/b_simple"].iloc[-1]
    print(f"B_simple logged {logged:.1f}, exact {exact:.1f}")  # the README's numbers (pytest -s)
    assert logged == pytest.approx(exact, rel=0.1)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["noise_scale/b_simple"] == log["noise_scale/b_simple"].iloc[-1]
    mode = "accumulation" if "accumulate" in granularity[0] else "chunks"
    assert summary["noise_scale/granularity"] == mode


class RecordGradientAndChunks(L.Callback):
    """An independent record of each step's training gradient |g|^2 (before clipping and the
    update), beside what the noise scale's chunk pass computed for the same step."""

    def __init__(self, noise_scale: NoiseScale) -> None:
        self.training, self.chunks = [], []
        update = noise_scale.update

        def record(sq_small, sq_big, small, big) -> None:
            self.chunks.append((float(sq_big), small, big))
            update(sq_small, sq_big, small, big)

        noise_scale.update = record

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


@pytest.mark.xdist_group("ddp")  # two processes: kept apart from the other DDP tests' pairs
def test_under_ddp_the_devices_give_the_two_batch_sizes_and_b_simple_is_exact(
    cli, tmp_path, data_dir
):
    """Real DDP over gloo, 2 processes: b = the per-device batch 16, B = the global 32."""
    result = cli(
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "logger=csv",
        "model=mlp", "model.norm=none", "model.hidden=[32]", "optim.lr=0",
        "optim.weight_decay=0", "trainer.max_epochs=2", "trainer.limit_val_batches=0",
        "callbacks=all", "callbacks.sharpness=null", "callbacks.noise_scale.every_n_steps=1",
        "callbacks.noise_scale.ema_decay=0.99", "hydra.run.dir=run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["noise_scale/granularity"] == "devices"
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    model = create_model("mlp", 10, (1, 40), hidden=[32], norm="none")
    weights = state["state_dict"].items()
    model.load_state_dict({k.removeprefix("model."): v for k, v in weights if k[:6] == "model."})
    dm = MNIST1DDataModule(str(data_dir), batch_size=32)
    dm.setup()
    assert summary["noise_scale/b_simple"] == pytest.approx(
        exact_noise_scale(model, dm.x, dm.y), rel=0.1
    )


def test_devices_mode_refuses_a_strategy_that_already_has_a_communication_hook(tmp_path):
    """torch's DDP takes one communication hook, and the devices mode measures through its
    own: with the user's already set, the run is refused before training (torch would raise
    at the first step), naming the hook and what to use instead."""
    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    from lbtrain.config.command_line import compose_config
    from lbtrain.measure.noise_scale_callback import NoiseScale
    from lbtrain.train.plan import make_plan

    plan = make_plan(compose_config(["trainer.devices=2"], str(tmp_path)), world_size=2)
    for hook in (None, allreduce_hook):
        trainer = L.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(ddp_comm_hook=hook),
                            logger=False, default_root_dir=tmp_path)  # fmt: skip
        if hook is None:
            NoiseScale().check_plan(plan, trainer)  # measures through its own hook
            continue
        with pytest.raises(ValueError, match=r"granularity=devices: the DDP strategy already "
                           r"has a communication hook \(allreduce_hook\)"):  # fmt: skip
            NoiseScale().check_plan(plan, trainer)


def test_the_pooled_estimates_bootstrap_interval_covers_the_exact_value(tmp_path, data_dir):
    """Frozen weights, the default EMA decay (0.8), chunks of 8 (b = 4, B = 32): each single
    measurement is noisy (its |G|^2 rests on one batch of 32, while B_simple ~ 190), so the
    last EMA value, resting on its last few measurements, can miss by a quarter; the pooled
    estimate over 500 measurements has an interval that holds the exact value."""
    trainer = fit(
        tmp_path, data_dir, "model=mlp", "model.norm=none", "optim.lr=0", "optim.weight_decay=0",
        "trainer.max_epochs=4", "trainer.limit_train_batches=1.0", "trainer.limit_val_batches=0",
        NOISE_SCALE, "+callbacks.noise_scale.every_n_steps=1", "+callbacks.noise_scale.chunks=8",
        "+callbacks.noise_scale.ema_decay=0.8", "+callbacks.noise_scale.pool_last=1.0",
    )  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    dm = trainer.datamodule
    exact = exact_noise_scale(trainer.lightning_module.model, dm.x, dm.y)
    pooled, last = summary["noise_scale/pooled_b_simple"], summary["noise_scale/b_simple"]
    low, high = summary["noise_scale/pooled_low"], summary["noise_scale/pooled_high"]
    print(f"exact {exact:.1f}, pooled {pooled:.1f} [{low:.1f}, {high:.1f}], last EMA {last:.1f}")
    assert summary["noise_scale/pooled_measurements"] == 500
    assert low < exact < high and high - low < 0.4 * exact
    log = pd.read_csv(tmp_path / "csv" / "metrics.csv").dropna(subset=["noise_scale/b_simple"])
    singles = log[["noise_scale/grad_sq_single", "noise_scale/trace_sigma_single"]].dropna()
    assert len(singles) == 500  # every measurement's own estimate reaches the loggers
    grad_sq, trace = singles.mean()  # the ratio of the means, not the mean of the ratios
    assert pooled == pytest.approx(trace / grad_sq, rel=1e-6)
