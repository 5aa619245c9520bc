"""One step convention for every logged series: the value at step t is after t optimizer
updates; the LR at t is the one that made update t, the loss at t that of update t's batch."""

import lightning as L
import pandas as pd
import pytest
import wandb
from helpers import wandb_records

from lbtrain.config.command_line import compose_config
from lbtrain.train.fit import build


class RecordUpdates(L.Callback):
    """What happened at each update, recorded independently of any logger."""

    def __init__(self):
        self.lr, self.loss, self.val_at, self.epoch_end_at = {}, {}, [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lr[trainer.global_step + 1] = optimizer.param_groups[0]["lr"]  # makes update t

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.loss[trainer.global_step] = outputs["loss"].item()  # update t's batch

    def on_validation_epoch_end(self, trainer, pl_module):
        self.val_at.append(trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module):
        self.epoch_end_at.append(trainer.global_step)


def test_every_logged_series_follows_the_step_convention(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # a warmup over the first epoch: the LR differs at every one of its steps
    cfg = compose_config(
        ["logger=default", "trainer.max_epochs=2", "trainer.limit_train_batches=4",
         "trainer.log_every_n_steps=1", "optim.warmup=1", "batch_size=64", "lr_scaling=linear",
         f"paths.data_dir={data_dir}"],
        str(tmp_path),
    )  # fmt: skip
    trainer, module, dm = build(cfg, tmp_path)
    record = RecordUpdates()
    trainer.callbacks.append(record)
    try:
        trainer.fit(module, datamodule=dm)
    finally:
        wandb.finish()
    log = pd.read_csv(tmp_path / "csv" / "metrics.csv")

    def series(column: str) -> dict[int, float]:
        rows = log.dropna(subset=[column])
        assert rows["step"].is_unique, column
        return dict(zip(rows["step"].astype(int), rows[column], strict=True))

    assert len(set(record.lr.values())) == 5  # 4 warmup steps, then the scaled LR
    assert series("lr-SGD") == pytest.approx(record.lr)
    assert series("train/loss_step") == pytest.approx(record.loss)
    assert list(series("weight_distance")) == list(range(1, 9))
    assert list(series("val/acc")) == record.val_at == [4, 8]
    assert list(series("train/loss_epoch")) == record.epoch_end_at == [4, 8]
    assert list(log.dropna(subset=["val/acc"])["epoch"]) == [0, 1]  # the epoch each closes

    # W&B gets every value at the same step ("trainer/global_step", its x-axis)
    (wandb_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    _, history = wandb_records(wandb_file)
    for column in ("lr-SGD", "train/loss_step", "weight_distance", "val/acc", "train/acc"):
        logged = {row["trainer/global_step"]: row[column] for row in history if column in row}
        assert logged == pytest.approx(series(column)), column
