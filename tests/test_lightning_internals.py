"""Each private Lightning attribute lbtrain relies on (lbtrain/lightning_internals.py) is there
in the installed Lightning, with the meaning lbtrain relies on; and a missing one raises,
naming itself, instead of lbtrain carrying on without it."""

import ast
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.strategies.launchers import subprocess_script

from lbtrain import lightning_internals
from lbtrain.launch import distributed
from lbtrain.lightning_internals import LightningChanged
from lbtrain.train.loggers import ResumableCSVLogger, WandbLogger

SRC = Path(lightning_internals.__file__).parent


class Probe(L.LightningModule):
    """Records what the internals say at each training step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.seen = []

    def training_step(self, batch, batch_idx):
        trainer = self.trainer
        gate, updates = (
            lightning_internals.logs_this_step(trainer),
            lightning_internals.updates_logged(trainer),
        )
        self.seen.append((trainer.global_step, updates, gate))
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(6, 2)))


def test_the_trainer_internals_mean_what_lbtrain_reads(tmp_path):
    probe = Probe()
    trainer = L.Trainer(max_steps=6, log_every_n_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(probe)
    steps, updates, gates = zip(*probe.seen, strict=True)
    assert updates == steps == tuple(range(6))  # the updates done before this step
    # Lightning logs the update whose number (updates done + 1) log_every_n_steps divides
    assert gates == (False, True, False, True, False, True)
    lightning_internals.set_updates_logged(trainer, 42)
    assert lightning_internals.updates_logged(trainer) == 42


def test_the_lr_monitor_reads_the_optimizers_lrs(tmp_path):
    monitor = LearningRateMonitor()
    trainer = L.Trainer(max_steps=1, logger=CSVLogger(tmp_path), callbacks=[monitor],
                        enable_progress_bar=False, enable_checkpointing=False,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(Probe())
    assert lightning_internals.monitored_lrs(monitor, trainer, "any") == {"lr-SGD": 0.1}


def test_the_csv_writer_keeps_an_existing_metrics_file(tmp_path):
    logger = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")
    logger.log_metrics({"a": 1.0}, step=1)
    logger.save()
    again = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")
    again.log_metrics({"a": 2.0}, step=2)
    again.save()
    assert (tmp_path / "csv" / "metrics.csv").read_text().split() == ["a,step", "1.0,1", "2.0,2"]
    assert hasattr(ExperimentWriter, lightning_internals.CHECK_LOG_DIR[1])


def test_the_wandb_logger_passes_no_unset_anonymous_argument(tmp_path):
    ours = WandbLogger(save_dir=tmp_path, mode="disabled")
    lightnings = L.pytorch.loggers.WandbLogger(save_dir=tmp_path, mode="disabled")
    wandb_init = lightning_internals.WANDB_INIT
    assert getattr(lightnings, wandb_init)["anonymous"] is None  # what wandb warns about
    assert "anonymous" not in getattr(ours, wandb_init)


def test_a_renamed_rank_command_raises_instead_of_running_the_sweep_in_every_rank(monkeypatch):
    assert hasattr(subprocess_script, "_hydra_subprocess_cmd")
    monkeypatch.delattr(subprocess_script, "_hydra_subprocess_cmd")
    with pytest.raises(LightningChanged, match="subprocess_script._hydra_subprocess_cmd is gone"):
        distributed.install()
    assert not hasattr(subprocess_script, "_hydra_subprocess_cmd")  # nothing set in its place


def test_every_missing_internal_raises_naming_itself(monkeypatch, tmp_path):
    trainer = L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    monkeypatch.delattr(type(trainer.fit_loop.epoch_loop), "_batches_that_stepped",
                        raising=False)  # fmt: skip
    vars(trainer.fit_loop.epoch_loop).pop("_batches_that_stepped", None)
    with pytest.raises(LightningChanged, match="_batches_that_stepped"):
        lightning_internals.updates_logged(trainer)
    monkeypatch.delattr(LearningRateMonitor, "_extract_stats")
    with pytest.raises(LightningChanged, match="LearningRateMonitor._extract_stats"):
        lightning_internals.monitored_lrs(LearningRateMonitor(), trainer, "any")
    owner = next(c for c in ExperimentWriter.__mro__ if "_check_log_dir_exists" in vars(c))
    monkeypatch.delattr(owner, "_check_log_dir_exists")
    with pytest.raises(LightningChanged, match="_check_log_dir_exists"):
        ResumableCSVLogger(save_dir=tmp_path).experiment  # noqa: B018


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def privates_of_others(tree: ast.AST) -> set[str]:
    """The private attributes (a leading underscore, not a dunder) a module reads or writes on
    any object but `self` or `cls`, getattr/setattr/hasattr/delattr strings included."""

    def of_others(owner: ast.AST) -> bool:
        return not (isinstance(owner, ast.Name) and owner.id in ("self", "cls"))

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr) and of_others(node.value):
            found.add(node.attr)
        probe = ("getattr", "setattr", "hasattr", "delattr")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in probe:
            owner, name = (node.args + [None, None])[:2]
            named = isinstance(name, ast.Constant) and isinstance(name.value, str)
            if named and private(name.value) and of_others(owner):
                found.add(name.value)
    return found


def test_no_module_but_the_fence_touches_another_objects_private_attribute():
    """The fence is lightning_internals.py: every other module of src/ reads and writes no
    private attribute of Lightning's, torch's or anyone's object (its own, on self, it may).
    A scan of the code, not of a list of known names, so a new `trainer._x` fails here."""
    assert privates_of_others(ast.parse("trainer._x; getattr(m, '_orig_mod'); self._ok")) == {
        "_x",
        "_orig_mod",
    }  # the scan sees both forms
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "lightning_internals.py":
            continue
        found = privates_of_others(ast.parse(path.read_text()))
        assert not found, f"{path.relative_to(SRC)} touches {sorted(found)}"


def test_last_ckpt_holds_each_epoch_and_lightning_adds_no_checkpoint(tmp_path, data_dir):
    """What lbtrain's checkpointing relies on in Lightning (a Lightning upgrade once stopped
    `ModelCheckpoint(save_last=True, save_top_k=0)` writing last.ckpt until the end, and no
    test saw it): `trainer.save_checkpoint` before a batch, with `enable_checkpointing=false`
    adding no checkpoint callback of Lightning's own; last.ckpt then holds each finished epoch
    at the next one's first step, and the final state at the end, and is the only file."""
    from lightning.pytorch.callbacks import Checkpoint

    from lbtrain.config.command_line import compose_config
    from lbtrain.train.fit import build

    seen = []

    class AtFirstBatch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 0 and trainer.current_epoch > 0:
                ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
                seen.append(ckpt["global_step"])

    overrides = ["logger=csv", "trainer.max_epochs=3", "trainer.limit_train_batches=4",
                 f"paths.data_dir={data_dir}"]  # fmt: skip
    trainer, module, dm = build(compose_config(overrides, str(tmp_path)), tmp_path)
    trainer.callbacks.append(AtFirstBatch())
    assert not [c for c in trainer.callbacks if isinstance(c, Checkpoint)]
    trainer.fit(module, datamodule=dm)
    assert seen == [4, 8]  # epochs 1 and 2 start from epochs 0 and 1, saved
    final = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == 12
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]
