"""The +LR rule and the +RA regime stretch, and the one-line statement of a run's arithmetic."""

import dataclasses
import logging
import math
import re

import pytest
import torch

from lbtrain.config.command_line import compose_config
from lbtrain.config.validate import validate
from lbtrain.train.fit import build
from lbtrain.train.plan import (
    BatchPlan,
    describe,
    make_plan,
    make_scheduler,
    regime_factor,
    scaled_lr,
)


def plan(**overrides) -> BatchPlan:
    kw = dict(
        batch_size=4096, world_size=2, accumulate=1, ghost_batch_size=128, base_batch_size=128,
        base_lr=0.1, lr_scaling="sqrt", base_epochs=10, base_milestones=(5.0, 8.0),
        base_warmup=0.0, stretch=1.0, base_max_steps=-1, unit="epoch", optimizer="sgd",
        adaptive=False, batch_augment=1, base_betas=(0.9, 0.999), base_eps=1e-8, gammas=(),
        phases=(), adam_rule=None, base_weight_decay=5e-4, fixed_timescale=False,
        decoupled_decay=False,
    )  # fmt: skip
    kw["gammas"] = (0.1,) * len(overrides.get("base_milestones", kw["base_milestones"]))
    return BatchPlan(**{**kw, **overrides})


def test_lr_rules_scale_with_the_batch_ratio():
    assert scaled_lr(0.1, 4096, 128, "none") == 0.1
    assert scaled_lr(0.1, 4096, 128, "linear") == pytest.approx(3.2)
    assert scaled_lr(0.1, 4096, 128, "sqrt") == pytest.approx(0.1 * math.sqrt(32))


def test_adapted_regime_stretches_by_the_batch_ratio_times_the_multiplier():
    assert regime_factor("fixed", 1.0, 4096, 128) == 1.0
    assert regime_factor("fixed", 2.0, 4096, 128) == 2.0
    assert regime_factor("adapted", 1.0, 4096, 128) == 32.0
    assert regime_factor("adapted", 0.5, 4096, 128) == 16.0
    p = plan(stretch=2.5, base_epochs=3, base_warmup=1.0)
    assert p.epochs == 8  # 7.5 rounds up: never less training than asked
    assert p.milestones == (12.5, 20.0) and p.warmup == 2.5


def numbers(text: str) -> list[float]:
    return [float(n) for n in re.findall(r"\d+(?:\.\d+)?", text)]


def test_the_log_line_states_the_arithmetic():
    """Each clause's numbers add up (whatever its wording), and they are the plan's."""
    p = plan()
    batch, ghost, lr, regime = describe(p).split("; ")
    total, devices, per_device = numbers(batch)
    assert total == devices * per_device == p.batch_size and per_device == p.per_device_batch
    size, ghosts = numbers(ghost)
    assert size == p.ghost_batch_size and ghosts == per_device / size
    base, big, small, scaled = numbers(lr)
    assert "sqrt" in lr and scaled == pytest.approx(base * math.sqrt(big / small), abs=1e-4)
    assert scaled == pytest.approx(p.lr, abs=1e-4) and (big, small) == (4096, 128)
    stretch, epochs, *milestones = numbers(regime)
    assert (stretch, epochs, milestones) == (1, p.epochs, list(p.milestones))
    p = plan(accumulate=4, lr_scaling="linear", base_warmup=5, stretch=32)
    batch, ghost, lr, warmup, regime = describe(p).split("; ")
    total, devices, per_device, micro, micro_size = numbers(batch)
    assert total == devices * per_device and per_device == micro * micro_size == 4 * p.micro_batch
    assert numbers(ghost) == [p.ghost_batch_size, p.micro_batch / p.ghost_batch_size]
    base, big, small, scaled = numbers(lr)
    assert scaled == pytest.approx(base * big / small) == pytest.approx(p.lr)
    assert numbers(warmup) == [p.warmup, p.base_lr] and p.warmup == 5 * 32
    assert numbers(regime) == [32, p.epochs, *p.milestones]


def lrs_over_run(p: BatchPlan, steps_per_epoch: int, gamma: float | list = 0.1) -> list[float]:
    """Walk the scheduler through a whole run without training."""
    gammas = [gamma] * len(p.base_milestones) if isinstance(gamma, float) else gamma
    p = dataclasses.replace(p, gammas=tuple(gammas))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=p.lr)
    scheduler = make_scheduler(optimizer, p, steps_per_epoch)
    lrs = []
    for _ in range(p.epochs * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("stretch", [1.0, 32.0, 2.5])
def test_lr_at_every_step_follows_the_stretched_schedule(stretch):
    p, spe = plan(stretch=stretch, base_warmup=1.0), 7
    warmup = round(1.0 * stretch * spe)
    decays = [round(5.0 * stretch * spe), round(8.0 * stretch * spe)]
    for step, lr in enumerate(lrs_over_run(p, spe)):
        expected = p.lr * 0.1 ** sum(step >= d for d in decays)
        if step < warmup:  # linear from the base lr to the scaled lr
            start = p.base_lr / p.lr
            expected *= start + (1 - start) * step / warmup
        assert lr == pytest.approx(expected, rel=1e-6), step


def optimizer_steps_of_a_run(tmp_path, data_dir, *overrides: str) -> int:
    """Train for real (no validation, no callbacks) and count the optimizer steps taken."""
    from lbtrain.config.command_line import compose_config
    from lbtrain.train.fit import build

    cfg = compose_config(
        ["experiment=mnist1d_table1", "trainer.max_epochs=1", "logger=none", "callbacks=none",
         "trainer.limit_val_batches=0", f"paths.data_dir={data_dir}", *overrides],
        str(tmp_path),
    )  # fmt: skip
    trainer, module, dm = build(cfg, tmp_path)
    trainer.fit(module, datamodule=dm)
    return trainer.global_step


@pytest.mark.parametrize("num_samples", [5120, 5000], ids=["4096 train", "4000 train"])
def test_adapted_large_batch_takes_as_many_steps_as_the_small_batch(
    tmp_path, data_dir, num_samples
):
    """SB (32) against +RA (1024, 32x the epochs): equal when the batches divide the training
    set; otherwise each epoch's short last batch adds less than one step per epoch (4000
    samples at 1024: 4 steps an epoch where 3.9 is exact)."""
    data = f"data.num_samples={num_samples}"
    small = optimizer_steps_of_a_run(tmp_path / "sb", data_dir, data, "recipe=sb")
    large = optimizer_steps_of_a_run(tmp_path / "ra", data_dir, data, "recipe=lb_lr_gbn_ra")
    train = int(num_samples * 0.8)
    assert small == math.ceil(train / 32)  # one base epoch
    if train % 1024 == 0:
        assert large == small
    else:
        assert small < large < small + 32  # 32 epochs, at most one extra step each


def cfg(*overrides: str):
    """The real config (conf/), as a run composes it, at batch 4096."""
    return compose_config(["batch_size=4096", *overrides], "/nonexistent/run")


def test_global_batch_is_split_over_devices_and_accumulation():
    p = make_plan(cfg("trainer.accumulate_grad_batches=2"), world_size=8)
    assert (p.per_device_batch, p.micro_batch) == (512, 256)
    with pytest.raises(ValueError, match=r"batch_size=4096 is not divisible by the 3 devices"):
        make_plan(cfg(), world_size=3)
    with pytest.raises(ValueError, match=r"accumulate_grad_batches=3 does not divide"):
        make_plan(cfg("trainer.accumulate_grad_batches=3"), world_size=2)


def test_per_milestone_factors_give_alexnets_schedule():
    p = plan(base_lr=0.01, lr_scaling="none", base_milestones=(10, 15, 20, 25), base_epochs=30)
    lrs = lrs_over_run(p, steps_per_epoch=1, gamma=[0.5, 0.2, 0.5, 0.2])
    assert [lrs[e] for e in (0, 10, 15, 20, 25)] == pytest.approx([1e-2, 5e-3, 1e-3, 5e-4, 1e-4])


def test_step_based_regimes_stretch_steps_milestones_and_warmup():
    p = plan(base_epochs=-1, base_max_steps=1000, unit="step", base_milestones=(500.0,),
             base_warmup=100.0, stretch=4.0)  # fmt: skip
    assert (p.epochs, p.max_steps, p.milestones, p.warmup) == (-1, 4000, (2000.0,), 400.0)
    assert "regime x4: 4000 steps, lr decays at steps [2000.0]" in describe(p)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=p.lr)
    scheduler = make_scheduler(optimizer, p, steps_per_epoch=7)  # epochs: irrelevant
    lrs = []
    for _ in range(p.max_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[400] == pytest.approx(p.lr) and lrs[399] < p.lr  # warmup ends at step 400
    assert lrs[1999] == pytest.approx(p.lr) and lrs[2000] == pytest.approx(p.lr * 0.1)


def test_adapted_step_budget_trains_the_stretched_number_of_steps(tmp_path, data_dir):
    from lbtrain.config.command_line import compose_config
    from lbtrain.config.validate import validate
    from lbtrain.train.fit import build

    cfg = compose_config(
        ["trainer.max_epochs=-1", "trainer.max_steps=20", "optim.schedule_unit=step",
         "optim.milestones=[10]", "batch_size=64", "regime=adapted", "logger=csv",
         "callbacks=none", f"paths.data_dir={data_dir}", "trainer.log_every_n_steps=1",
         "trainer.limit_val_batches=0"],
        str(tmp_path),
    )  # fmt: skip
    validate(cfg)
    trainer, module, dm = build(cfg, tmp_path)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 40  # 20 base steps x (64 / 32)
    assert module.lr_schedulers().get_last_lr()[0] == pytest.approx(0.05 * 0.1)  # decayed at 20


@pytest.mark.parametrize(
    ("overrides", "warned"),
    [
        (["optim.warmup=2"], True),  # lr_scaling=none: a ramp from optim.lr to optim.lr
        (["optim.warmup=2", "lr_scaling=linear", "batch_size=256"], False),
        (["optim.warmup=0"], False),
    ],
)
def test_a_warmup_that_cannot_change_the_lr_is_reported(tmp_path, data_dir, caplog, overrides,
                                                        warned):  # fmt: skip
    cfg = compose_config([f"paths.data_dir={data_dir}", "logger=none", *overrides], str(tmp_path))
    validate(cfg)
    with caplog.at_level(logging.WARNING, logger="lbtrain"):
        build(cfg, tmp_path)
    assert ("optim.warmup=2 does nothing in this run" in caplog.text) == warned


def test_adams_sde_rule_is_the_default_under_sqrt_scaling_and_halflife_leaves_beta1():
    adam = dict(optimizer="adamw", adaptive=True, batch_size=512, base_batch_size=128)
    implicit, sde = plan(**adam), plan(**adam, adam_rule="sde")
    assert implicit.betas == sde.betas == pytest.approx((1 - 4 * 0.1, 1 - 4 * 0.001))
    assert implicit.eps == sde.eps == pytest.approx(1e-8 / 2)
    half = plan(**adam, adam_rule="halflife")
    assert half.betas == pytest.approx((0.9, 0.999**4)) and half.eps == 1e-8
    assert half.lr == pytest.approx(0.2)  # the lr follows lr_scaling alone
    assert plan(**adam, lr_scaling="none").betas == (0.9, 0.999)  # no rule: as given


def test_the_plan_line_says_when_the_lr_never_decays():
    """A short run (trainer.max_epochs=5 under 30-epoch milestones) keeps its milestones and
    never decays: its plan line says so; a run that reaches them says nothing of it."""
    short = describe(plan(base_epochs=5, base_milestones=(15.0, 25.0)))
    said = "(all past the run's end at epoch 5: never reached; shorten optim.milestones too)"
    assert short.endswith(f"5 epochs, lr decays at epochs [15.0, 25.0] {said}")
    partly = describe(plan(base_epochs=20, base_milestones=(15.0, 25.0)))
    assert partly.endswith("([25.0] past the run's end at epoch 20: never reached; shorten "
                           "optim.milestones too)")  # fmt: skip
    assert "never reached" not in describe(plan())
    assert "regime x1: 1 epoch, lr" in describe(plan(base_epochs=1, base_milestones=(0.5,)))
