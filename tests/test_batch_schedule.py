"""Batch-size schedules (Smith et al. 2018): each LR milestone grows the batch by 1/gamma
instead, up to a cap, so the SGD noise scale lr / B falls by gamma at every milestone as
under the LR schedule, in fewer optimizer steps."""

import json

import pandas as pd
import pytest

from lbtrain.train.batch_schedule import grow_phases, warmup_phases

# 1000 training samples, milestones at epochs 2 and 4 of 5, batch 32 growing x10 up to 512
SMALL = ("data.num_samples=1250", "trainer.max_epochs=5", "optim.milestones=[2,4]",
         "batch_schedule=grow", "batch_schedule_cap=512", "logger=csv",
         "trainer.log_every_n_steps=1")  # fmt: skip


def test_the_noise_scale_falls_by_gamma_at_every_milestone_past_the_cap_too():
    phases = grow_phases(32, 1024, [15, 25, 28], [0.1, 0.1, 0.5], world_size=1)
    assert [p.batch_size for p in phases] == [32, 320, 1024, 1024]
    for before, after, gamma in zip(phases[:-1], phases[1:], [0.1, 0.1, 0.5], strict=True):
        noise_before = before.lr_factor / before.batch_size
        noise_after = after.lr_factor / after.batch_size
        assert noise_after / noise_before == pytest.approx(gamma)
    assert [p.lr_factor for p in phases] == pytest.approx([1, 1, 0.32, 0.16])


def test_a_grown_batch_takes_fewer_steps_and_keeps_the_lr_until_the_cap(cli_in_process, tmp_path):
    result = cli_in_process(*SMALL, "hydra.run.dir=run")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    rows = summary["plan"]["batch_schedule"]
    assert [(r["batch_size"], r["steps_per_epoch"], r["steps"]) for r in rows] == [
        (32, 32, 64), (320, 4, 8), (512, 2, 2)]  # fmt: skip
    assert summary["global_step"] == summary["plan"]["total_steps"] == 74
    assert summary["samples_seen"] == 5 * 1000  # every epoch still sees every sample once
    log = pd.read_csv(tmp_path / "run" / "csv" / "metrics.csv")
    ends = log.dropna(subset=["train/loss_epoch"])["step"].tolist()
    assert ends == [32, 64, 68, 72, 74]  # the step count at each epoch's end
    lr = log.dropna(subset=["lr-SGD"]).set_index("step")["lr-SGD"]
    assert lr[1] == lr[64] == lr[65] == lr[72] == pytest.approx(0.05)  # grown, not decayed
    assert lr[73] == pytest.approx(0.05 * 0.1 * 512 / 320)  # capped: the rest from the LR


@pytest.mark.xdist_group("ddp")
def test_under_ddp_every_rank_grows_its_share_alike(cli, tmp_path):
    result = cli(*SMALL, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                 "hydra.run.dir=run")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["global_step"] == 74  # the same global batches as on one device
    assert summary["samples_seen"] == 5 * 1000
    assert summary["plan"]["per_device_batch"] == 16


def test_a_warmup_follows_its_points_with_the_lr_rule_and_decays_at_the_milestones():
    phases = warmup_phases(32, [[1, 64], [3, 256]], [2, 4], [0.1, 0.5], lr_power=1.0)
    assert [(p.start_epoch, p.batch_size) for p in phases] == [
        (0, 32), (1, 64), (2, 64), (3, 256), (4, 256)]  # fmt: skip
    assert [p.lr_factor for p in phases] == pytest.approx([1, 2, 0.2, 0.8, 0.4])


def test_a_warmup_run_grows_its_batch_at_the_given_epochs(cli_in_process, tmp_path):
    result = cli_in_process(
        "data.num_samples=1250", "trainer.max_epochs=3", "optim.milestones=[]",
        "batch_schedule=warmup", "batch_schedule_points=[[1,64],[2,256]]", "lr_scaling=linear",
        "logger=csv", "trainer.log_every_n_steps=1", "hydra.run.dir=run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    rows = summary["plan"]["batch_schedule"]
    assert [(r["batch_size"], r["steps"]) for r in rows] == [(32, 32), (64, 16), (256, 4)]
    assert summary["global_step"] == 52 and summary["samples_seen"] == 3 * 1000
    lr = pd.read_csv(tmp_path / "run" / "csv" / "metrics.csv").dropna(subset=["lr-SGD"])
    lr = lr.set_index("step")["lr-SGD"]
    assert (lr[32], lr[33], lr[48], lr[49]) == pytest.approx((0.05, 0.1, 0.1, 0.4))  # linear
