"""The critical batch size: steps to a target per batch size, the fit
S = S_min (1 + B_crit / B), and the report's table and figure on a real batch-size sweep."""

import math
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from lbtrain.config.command_line import compose_config
from lbtrain.config.validate import validate
from lbtrain.report import write_report
from lbtrain.report.critical_batch import (
    ScalingFit,
    Target,
    fit_critical_batch,
    noise_scale_until,
    steps_to_target,
)


def test_the_fit_recovers_b_crit_from_steps_that_follow_the_model():
    batch = np.array([16, 32, 64, 128, 256, 512, 1024, 2048])
    rng = np.random.default_rng(0)
    steps = 300 * (1 + 400 / batch) * np.exp(rng.normal(0, 0.03, len(batch)))  # 3% noise
    fit = fit_critical_batch(batch, steps)
    assert fit.b_crit == pytest.approx(400, rel=0.1)
    assert fit.s_min == pytest.approx(300, rel=0.05)
    assert fit.e_min == pytest.approx(fit.s_min * fit.b_crit)
    # perfect scaling (S ~ 1/B, B_crit -> infinity) and no scaling (S constant) both fit
    assert fit_critical_batch(batch, 1e6 / batch).b_crit > 1e4
    assert fit_critical_batch(batch, np.full(len(batch), 50.0)).b_crit < 1


def test_steps_to_target_interpolates_between_logged_points_and_knows_the_direction():
    steps, acc = np.array([100, 200, 300]), np.array([0.5, 0.7, 0.9])
    assert steps_to_target(steps, acc, Target.parse("val/acc=0.8")) == pytest.approx(250)
    assert steps_to_target(steps, acc, Target.parse("val/acc=0.4")) == 100  # met at once
    assert math.isnan(steps_to_target(steps, acc, Target.parse("val/acc=0.95")))
    loss = np.array([2.0, 1.0, 0.5])
    assert steps_to_target(steps, loss, Target.parse("train/loss=0.75")) == pytest.approx(250)
    assert Target.parse("train/loss=0.75").metric == "train/loss_epoch"  # the epoch mean
    assert Target.parse("val/acc<=0.2").lower_is_better


@pytest.mark.xdist_group("tiny_sweep")
def test_report_finds_steps_to_target_per_batch_size_and_lists_runs_that_never_reach_it(
    tmp_path, data_dir
):
    sweep = tmp_path / "sweep"
    args = [
        sys.executable, "-m", "lbtrain.run", "-m", "batch_size=16,32,64,1024",
        "trainer.max_epochs=3", "logger=csv", "callbacks=all", "callbacks.sharpness=null",
        "callbacks.noise_scale.every_n_steps=5", f"paths.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "report"
    write_report([sweep], out, Target.parse("val/acc=0.3"))  # --target val/acc=0.3
    report = [sys.executable, "-m", "lbtrain.report", str(sweep), "--out", str(out)]  # bad input
    table = pd.read_csv(out / "critical_batch.csv")
    assert list(table["batch size"]) == [16, 32, 64, 1024]
    reached = table.dropna(subset=["steps to target"])
    assert list(reached["batch size"]) == [16, 32, 64]  # 12 steps of 1024 do not get there
    assert (
        reached["examples to target"] == reached["batch size"] * reached["steps to target"]
    ).all()
    assert (reached["B_simple until target"] > 0).all()
    # each logged val/acc sits at an epoch's last step: the target falls between two of them
    for b, s in zip(reached["batch size"], reached["steps to target"], strict=True):
        assert 0 < s <= 3 * math.ceil(4000 / b)
    md = (out / "critical_batch.md").read_text()
    assert "B_crit = E_min / S_min" in md and "B_crit / B_simple" in md
    assert "Runs that never reached the target:" in md and "(B=1024, seed 0)" in md
    # one validation an epoch: 250 steps apart at B=16, coarse against B=64's few steps
    assert "interpolated linearly between the steps val/acc was logged at: up to 250 steps" in md
    assert "That is coarse against the fewest steps to target" in md
    assert (out / "critical_batch.png").stat().st_size > 10_000

    bad = subprocess.run([*report, "--target", "val/acc"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--target val/acc: use METRIC=VALUE" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = subprocess.run([*report, "--target", "val/accuracy=0.9"], capture_output=True,
                         text=True)  # fmt: skip
    assert bad.returncode != 0 and "no run logged it; choose one of: " in bad.stderr
    assert "val/acc" in bad.stderr.splitlines()[-1] and "Traceback" not in bad.stderr


def test_a_runs_noise_scale_is_its_mean_trace_over_its_mean_grad_sq_not_a_swung_ratio():
    """One measurement with |G|^2 near zero logs a huge ratio; the run's B_simple divides
    the averages, as the estimator does, and stays near tr(Sigma) / |G|^2 of the rest."""
    metrics = pd.DataFrame({
        "step": [5, 10, 15, 20, 25],
        "noise_scale/trace_sigma": [100.0, 100.0, 100.0, 100.0, 100.0],
        "noise_scale/grad_sq": [1.0, 1.0, 1e-4, 1.0, 1.0],
    })  # fmt: skip
    metrics["noise_scale/b_simple"] = (
        metrics["noise_scale/trace_sigma"] / metrics["noise_scale/grad_sq"]
    )
    assert metrics["noise_scale/b_simple"].mean() > 1e5
    assert noise_scale_until(metrics, math.nan) == pytest.approx(125, rel=1e-3)
    assert noise_scale_until(metrics, 12.0) == pytest.approx(100)  # steps 5 and 10 only


def test_the_documented_sweep_composes(tmp_path):
    """The experiment's header command, one point of it: the target and the protocol."""
    cfg = compose_config(
        ["experiment=mnist1d_critical_batch", "batch_size=2048", "optim.lr=0.2"], str(tmp_path)
    )
    validate(cfg)
    assert cfg.callbacks.stop_at_target.stopping_threshold == 0.85
    assert (cfg.ghost_batch_size, cfg.lr_scaling, list(cfg.optim.milestones)) == (8, "sqrt", [])
    assert cfg.callbacks.noise_scale.every_n_steps == 5 and cfg.callbacks.sharpness is None


def test_the_report_fits_each_seed_alone_to_show_how_far_b_crit_moves_with_the_seeds():
    """Seed 0's steps follow B_crit = 100 exactly, seed 1's B_crit = 400: the per-seed fits
    recover each, while the pooled fit (on the mean steps) lies between them."""
    from lbtrain.report.critical import SEED_STEPS, critical_batch_summary

    batches = np.array([16, 64, 256, 1024])
    seed0 = ScalingFit(20.0, 2000.0, 100.0).steps(batches)
    seed1 = ScalingFit(10.0, 4000.0, 400.0).steps(batches)
    df = pd.DataFrame({
        "batch size": batches, "steps to target": (seed0 + seed1) / 2,
        "B_simple until target": 50.0, "best for its batch": True,
        SEED_STEPS: [{0: a, 1: b} for a, b in zip(seed0, seed1, strict=True)],
    })  # fmt: skip
    fit, _, lines = critical_batch_summary(df)
    per_seed = next(line for line in lines if "each seed's own steps" in line)
    assert per_seed.endswith("B_crit = 100 (seed 0), 400 (seed 1).")
    assert 100 < fit.b_crit < 400
    one_seed = df.assign(**{SEED_STEPS: [{0: a} for a in seed0]})
    assert not any("each seed" in line for line in critical_batch_summary(one_seed)[2])


def test_a_value_that_is_not_finite_never_meets_the_target():
    """A diverging run's NaN or inf is no measurement: a loss of -inf does not meet a loss
    target, and a NaN between two measurements does not hide the crossing."""
    steps = np.array([100, 200, 300])
    acc = np.array([0.5, math.nan, 0.9])
    assert steps_to_target(steps, acc, Target.parse("val/acc=0.8")) == pytest.approx(250)
    loss = np.array([2.0, -math.inf, math.nan])
    assert math.isnan(steps_to_target(steps, loss, Target.parse("train/loss=0.75")))
    assert math.isnan(steps_to_target(steps, np.array([0.5, math.inf, 0.6]),
                                      Target.parse("val/acc=0.8")))  # fmt: skip


def test_a_diverged_run_reached_the_target_only_if_it_did_before_diverging(tmp_path, capsys):
    """B=64 diverged at update 25 before reaching val/acc 0.85; what it logged after (here a
    0.9, as a run with stop_on_divergence=false may) does not count: it never reached it,
    and the report says it diverged. B=128 reached it at step 17.5, then diverged: it did."""
    from test_report import write_run

    def run(batch: int, acc: dict[int, float], diverged_at: int | None) -> None:
        steps = sorted(acc)
        summary = {"val/acc": acc[steps[-1]], "global_step": steps[-1]}
        if diverged_at is not None:
            summary["diverged_at_step"] = diverged_at
        metrics = {"step": steps, "epoch": list(range(len(steps))),
                   "val/acc": [acc[s] for s in steps],
                   "train/loss_epoch": [math.nan if diverged_at and s >= diverged_at else 1.0
                                        for s in steps]}  # fmt: skip
        write_run(tmp_path / "sweep" / str(batch), 0, summary, batch, metrics=metrics)

    run(32, {10: 0.5, 20: 0.7, 30: 0.9}, None)
    run(64, {10: 0.5, 20: 0.6, 30: 0.9, 40: 0.102}, diverged_at=25)
    run(128, {10: 0.7, 20: 0.9, 30: 0.102}, diverged_at=25)
    out = tmp_path / "report"
    write_report([tmp_path / "sweep"], out, Target.parse("val/acc=0.85"))
    table = pd.read_csv(out / "critical_batch.csv").set_index("batch size")
    assert table.loc[32, "steps to target"] == pytest.approx(27.5)
    assert math.isnan(table.loc[64, "steps to target"]) and table.loc[64, "seeds reached"] == "0/1"
    assert table.loc[128, "steps to target"] == pytest.approx(17.5)
    never = (out / "critical_batch.md").read_text().split("Runs that never reached the target:")
    assert never[1].strip() == f"- {tmp_path / 'sweep' / '64'} (B=64, seed 0): diverged at step 25"
    assert "diverged at step 25" in capsys.readouterr().out


def _sweep(root, steps_to_reach: dict[int, int | None]) -> None:
    """One run a batch size, val/acc logged every 10 steps up to 200: 0.5 until the step
    given, then 0.9 (None: never)."""
    from test_report import write_run

    for batch, reach in steps_to_reach.items():
        steps = list(range(10, 201, 10))
        acc = [0.9 if reach is not None and s >= reach else 0.5 for s in steps]
        metrics = {"step": steps, "epoch": list(range(len(steps))), "val/acc": acc}
        write_run(root / str(batch), 0, {"val/acc": acc[-1], "global_step": 200}, batch,
                  metrics=metrics)  # fmt: skip


def test_a_sweep_where_no_batch_size_reaches_the_target_still_gets_its_table_and_figure(
    tmp_path,
):
    """No run meets the target: every batch size is `never`, there is no fit, and the figure
    marks them all (it ended in matplotlib's traceback, on an empty log-scaled panel)."""
    _sweep(tmp_path / "sweep", {32: None, 64: None, 128: None})
    out = tmp_path / "report"
    write_report([tmp_path / "sweep"], out, Target.parse("val/acc=0.85"))
    assert pd.read_csv(out / "critical_batch.csv")["steps to target"].isna().all()
    assert "No fit of S = S_min (1 + B_crit / B)" in (out / "critical_batch.md").read_text()
    assert (out / "critical_batch.png").stat().st_size > 10_000


def test_steps_that_still_halve_with_the_batch_put_b_crit_above_the_largest_batch(tmp_path):
    """S ~ 1/B over every batch size tried: S_min fits to 0, so B_crit is no number but a
    bound, said as one; the figure draws no fit curve of 0 x inf (numpy warned of it)."""
    _sweep(tmp_path / "sweep", {32: 160, 64: 80, 128: 40})
    out = tmp_path / "report"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        write_report([tmp_path / "sweep"], out, Target.parse("val/acc=0.85"))
    md = (out / "critical_batch.md").read_text()
    assert "B_crit = E_min / S_min = inf" not in md
    assert "above the largest batch size tried (128)" in md
    assert (out / "critical_batch.png").stat().st_size > 10_000
