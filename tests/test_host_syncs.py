"""No training step reads a device value on the host: on a GPU each such read stalls the
step. Counted with torch.profiler over 50 optimizer steps inside an epoch, with no
weight_distance flush and no logging step among them (those are the buffered flushes)."""

import lightning as L
import pytest
from conftest import cifar_images, write_pickle
from torch.profiler import ProfilerActivity, profile

from lbtrain.config.command_line import compose_config
from lbtrain.train.fit import build

# every path by which a tensor's value reaches the host goes through one of these
READS = ("aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::equal")
START, STEPS = 5, 50


class ProfileSteps(L.Callback):
    def __init__(self) -> None:
        self.profiler, self.reads, self.steps = None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == START and self.profiler is None:
            self.profiler = profile(activities=[ProfilerActivity.CPU])
            self.profiler.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.profiler is not None and self.reads is None:
            self.steps += 1
            if self.steps == STEPS:
                self.profiler.__exit__(None, None, None)
                events = self.profiler.events()
                self.reads = {n: sum(e.name == n for e in events) for n in READS}
                trainer.should_stop = True  # the rest of the epoch measures nothing


def host_reads(tmp_path, *overrides: str) -> dict[str, int]:
    cfg = compose_config(
        ["trainer.max_epochs=1", "trainer.log_every_n_steps=1000", "trainer.limit_val_batches=0",
         "callbacks.weight_distance.flush_every_n_steps=1000", *overrides],
        str(tmp_path),
    )  # fmt: skip
    trainer, module, dm = build(cfg, tmp_path)
    probe = ProfileSteps()
    trainer.callbacks.append(probe)
    trainer.fit(module, datamodule=dm)
    assert probe.steps == STEPS, "the window must lie inside one epoch"
    return probe.reads


def test_the_default_training_step_reads_nothing_on_the_host(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    try:  # the default run as `make train` has it: CSV + W&B, every default callback
        reads = host_reads(tmp_path, f"paths.data_dir={data_dir}")
    finally:
        wandb.finish()
    assert reads == dict.fromkeys(READS, 0)


@pytest.fixture
def cifar10_500(tmp_path, skip_cifar_md5):
    """CIFAR-10 files with 500 training images: 62 steps of 8 in one epoch."""
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = __import__("numpy").random.default_rng(0)
    for k in range(1, 6):
        batch = {"labels": [i % 10 for i in range(100)], "data": cifar_images(rng, 100)}
        write_pickle(folder / f"data_batch_{k}", batch)
    write_pickle(folder / "test_batch", {"labels": list(range(10)), "data": cifar_images(rng, 10)})
    write_pickle(folder / "batches.meta", {"label_names": [str(i) for i in range(10)]})
    return folder.parent


def test_the_cifar_training_step_reads_nothing_on_the_host(tmp_path, cifar10_500):
    """ResNet-20 with Ghost BN on CIFAR-shaped data, crop + flip on the device."""
    reads = host_reads(
        tmp_path / "run", "data=cifar10", f"data.data_dir={cifar10_500}", "model=resnet20",
        "batch_size=8", "ghost_batch_size=4", "logger=csv", "trainer.accelerator=cpu",
    )  # fmt: skip
    assert reads == dict.fromkeys(READS, 0)


def test_the_probe_sees_a_host_read(tmp_path, data_dir):
    """The count is real: one `.item()` a step shows up as 50."""

    class ReadTheLoss(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            outputs["loss"].item()

    cfg = compose_config(
        ["trainer.max_epochs=1", "trainer.log_every_n_steps=1000", "logger=csv",
         "callbacks.weight_distance.flush_every_n_steps=1000", f"paths.data_dir={data_dir}"],
        str(tmp_path),
    )  # fmt: skip
    trainer, module, dm = build(cfg, tmp_path)
    probe = ProfileSteps()
    trainer.callbacks.extend([ReadTheLoss(), probe])
    trainer.fit(module, datamodule=dm)
    assert probe.reads["aten::item"] == STEPS


@pytest.mark.parametrize(
    "granularity",
    [("ghost_batch_size=8",), ("trainer.accumulate_grad_batches=2", "batch_size=64")],
    ids=["chunks under GBN", "micro-batches"],
)
def test_measuring_the_noise_scale_at_every_step_reads_nothing_on_the_host(
    tmp_path, data_dir, granularity
):
    """The measurement itself, every step, as well as the steps between: values stay on
    the device until the flush (none falls in the window)."""
    reads = host_reads(
        tmp_path, f"paths.data_dir={data_dir}", "logger=csv", "callbacks=all",
        "callbacks.sharpness=null", "callbacks.noise_scale.every_n_steps=1",
        "callbacks.noise_scale.flush_every_n_steps=1000", *granularity,
    )  # fmt: skip
    assert reads == dict.fromkeys(READS, 0)
