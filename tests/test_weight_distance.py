"""`weight_distance` = ||w_t - w_0|| over all trainable parameters, logged at every step t."""

import copy

import lightning as L
import pandas as pd
import pytest
import torch

from lbtrain.config.command_line import compose_config
from lbtrain.train.fit import build


class RecordWeights(L.Callback):
    """An independent record: a copy of every trainable parameter after each step."""

    def __init__(self):
        self.snapshots = {}

    def on_train_start(self, trainer, pl_module):
        self.snapshots[trainer.global_step] = copy.deepcopy(
            [p.detach() for p in pl_module.parameters() if p.requires_grad]
        )

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.on_train_start(trainer, pl_module)


def fit(tmp_path, data_dir, *overrides, extra_callbacks=(), ckpt_path=None):
    cfg = compose_config(
        [
            "logger=csv",
            "trainer.limit_train_batches=5",
            "trainer.log_every_n_steps=1",
            f"paths.data_dir={data_dir}",
            *overrides,
        ],
        str(tmp_path),
    )
    trainer, module, dm = build(cfg, tmp_path)
    trainer.callbacks.extend(extra_callbacks)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer


def logged(run_dir) -> pd.Series:
    df = pd.read_csv(run_dir / "csv" / "metrics.csv")
    return df.dropna(subset=["weight_distance"]).set_index("step")["weight_distance"]


@pytest.mark.parametrize(
    "variant",
    [(), ("ghost_batch_size=8",), ("trainer.precision=bf16-mixed", "ghost_batch_size=8")],
    ids=["plain", "gbn", "bf16-autocast+gbn"],
)
def test_weight_distance_equals_an_independent_computation_at_every_step(
    tmp_path, data_dir, variant
):
    record = RecordWeights()
    overrides = ("trainer.max_epochs=2", "callbacks.weight_distance.flush_every_n_steps=3")
    fit(tmp_path, data_dir, *overrides, *variant, extra_callbacks=[record])
    series = logged(tmp_path)
    assert list(series.index) == list(range(1, 11))  # every optimizer step t = 1..10, once
    w0 = record.snapshots[0]
    for step, value in series.items():
        w = record.snapshots[step]
        expected = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(w, w0, strict=True)))
        assert value == pytest.approx(expected.item(), rel=1e-5)
    assert series.iloc[0] > 0


def test_weight_distance_of_a_channels_last_convnet(tmp_path, cifar10_dir, skip_cifar_md5):
    record = RecordWeights()
    overrides = ("model=resnet20", "data=cifar10", f"data.data_dir={cifar10_dir}",
                 "channels_last=true", "batch_size=8", "trainer.max_epochs=1",
                 "callbacks.weight_distance.flush_every_n_steps=2")  # fmt: skip
    fit(tmp_path, cifar10_dir, *overrides, extra_callbacks=[record])
    series = logged(tmp_path)
    assert list(series.index) == [1, 2, 3, 4, 5]
    w0 = record.snapshots[0]
    for step, value in series.items():
        expected = torch.sqrt(
            sum(((a - b) ** 2).sum() for a, b in zip(record.snapshots[step], w0, strict=True))
        )
        assert value == pytest.approx(expected.item(), rel=1e-5)


def test_gradient_accumulation_counts_optimizer_steps(tmp_path, data_dir):
    fit(tmp_path, data_dir, "trainer.max_epochs=1", "trainer.accumulate_grad_batches=2")
    # 5 micro-batches of 16, accumulated in pairs: optimizer steps 1, 2 and the epoch's last
    assert list(logged(tmp_path).index) == [1, 2, 3]


def test_resumed_run_continues_the_same_curve(tmp_path, data_dir):
    torch.use_deterministic_algorithms(True)
    try:
        fit(tmp_path / "full", data_dir, "trainer.max_epochs=2")
        fit(tmp_path / "first", data_dir, "trainer.max_epochs=1")
        ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
        fit(tmp_path / "resumed", data_dir, "trainer.max_epochs=2", ckpt_path=ckpt)
    finally:
        torch.use_deterministic_algorithms(False)
    full, head, tail = (logged(tmp_path / d) for d in ("full", "first", "resumed"))
    assert list(tail.index) == list(range(6, 11))  # continues at the step it stopped
    pd.testing.assert_series_equal(pd.concat([head, tail]), full, rtol=1e-5)


def test_per_layer_distances_add_up_to_the_total(tmp_path, data_dir):
    fit(tmp_path, data_dir, "trainer.max_epochs=1", "callbacks.weight_distance.per_layer=true")
    df = pd.read_csv(tmp_path / "csv" / "metrics.csv").dropna(subset=["weight_distance"])
    layers = [c for c in df.columns if c.startswith("weight_distance/")]
    assert len(layers) == 7  # cnn1d: 3 convs, 3 BatchNorms, the classifier
    total = (df[layers] ** 2).sum(axis=1) ** 0.5
    assert total.values == pytest.approx(df["weight_distance"].values, rel=1e-5)


def test_ddp_run_logs_one_series_with_one_value_per_optimizer_step(cli, tmp_path):
    result = cli(
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "logger=csv",
        "trainer.max_epochs=2", "trainer.limit_train_batches=4",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "runs").iterdir()
    assert "batch 32 = 2 devices x 16" in (run_dir / "run.log").read_text()
    series = logged(run_dir)
    assert list(series.index) == list(range(1, 9))  # 2 epochs x 4 steps, one value each


@pytest.mark.parametrize("per_layer", ["false", "true"])
def test_deferred_and_per_step_arithmetic_log_the_same_numbers(tmp_path, data_dir, monkeypatch,
                                                               per_layer):  # fmt: skip
    """A small model's series keep a copy of the weights at each step and do the arithmetic
    at the flush; a large model's do it at each step. Both log the same values, bit for bit,
    wherever the flushes fall (here every 3 steps, and at epoch ends)."""
    import lbtrain.measure.weight_distance as wd

    series = {}
    for limit in (wd.DEFER_BYTES, 0):
        monkeypatch.setattr(wd, "DEFER_BYTES", limit)
        run_dir = tmp_path / str(limit)
        trainer = fit(
            run_dir, data_dir, "trainer.max_epochs=2", "ghost_batch_size=8",
            "callbacks.weight_distance.flush_every_n_steps=3",
            f"callbacks.weight_distance.per_layer={per_layer}",
            f"callbacks.angular_distance.per_layer={per_layer}",
        )  # fmt: skip
        measured = [c for c in trainer.callbacks if isinstance(c, wd.FromInitialWeights)]
        assert len(measured) == 2 and all(c.deferred == (limit > 0) for c in measured)
        df = pd.read_csv(run_dir / "csv" / "metrics.csv")
        columns = [c for c in df.columns if c.startswith(("weight_distance", "angular_distance"))]
        series[limit] = df[["step", *columns]].dropna(subset=["weight_distance"])
    deferred, per_step = series.values()
    layers = 7 + 3 if per_layer == "true" else 0  # cnn1d: 7 layers, 3 of them BN-fed convs
    assert len(deferred) == 10 and len(deferred.columns) == 1 + 2 + layers  # step, the totals
    pd.testing.assert_frame_equal(deferred.reset_index(drop=True), per_step.reset_index(drop=True))
