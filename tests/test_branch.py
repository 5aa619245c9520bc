"""The critical batch size over training by branching (Merrill et al. 2025): on a noisy
quadratic, where every branch's expected loss is exactly computable, the branch protocol's
CBS agrees with the exact one; a branch run starts from its checkpoint's weights and
optimizer state with its own batch and LR; the warmup schedule follows the points."""

import math
import shutil

import lightning as L
import pandas as pd
import pytest
import torch
from test_weight_distance import fit

from lbtrain import report
from lbtrain.config.command_line import compose_config
from lbtrain.report.critical_batch import branch_cbs
from lbtrain.report.online import warmup_points
from lbtrain.train.branch import checkpoint_path
from lbtrain.train.fit import build

# The noisy quadratic model (Zhang et al. 2019): L(w) = sum h_i w_i^2 / 2, a per-sample gradient
# with noise of covariance C = H, so a batch of b has H w + noise of covariance H / b.
D, BASE, LR, SAMPLES, SEEDS = 300, 8, 0.1, 4096, 4
H = torch.logspace(-3, 0, D, dtype=torch.float64)
MULTIPLIERS = (1, 2, 4, 8, 16, 32, 64)


def exact_second_moments(moments: torch.Tensor, batch: int, steps: int) -> torch.Tensor:
    """E[w_i^2] after `steps` SGD steps at `batch` with the sqrt LR rule, exactly."""
    lr = LR * math.sqrt(batch / BASE)
    for _ in range(steps):
        moments = (1 - lr * H) ** 2 * moments + lr**2 * H / batch
    return moments


def sgd(w: torch.Tensor, batch: int, steps: int, seed: int) -> torch.Tensor:
    """torch's SGD on the quadratic, the batch's gradient noise drawn from `seed`."""
    w = torch.nn.Parameter(w.clone())
    optimizer = torch.optim.SGD([w], lr=LR * math.sqrt(batch / BASE))
    noise = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        (H * w.square() / 2).sum().backward()
        w.grad += (H / batch).sqrt() * torch.randn(D, generator=noise, dtype=torch.float64)
        optimizer.step()
    return w.detach()


def test_on_a_noisy_quadratic_the_branches_find_the_exact_critical_batch():
    w0 = torch.ones(D, dtype=torch.float64)
    exact_cbs, branched_cbs = [], []
    for t in (0, 30, 100, 300, 1000):
        moments = exact_second_moments(w0.square(), BASE, t)  # the base run, in expectation
        exact = {}
        for m in MULTIPLIERS:
            after = exact_second_moments(moments, m * BASE, SAMPLES // (m * BASE))
            exact[m * BASE] = float((H * after).sum() / 2)
        checkpoint = sgd(w0, BASE, t, seed=0)  # the base run: one draw
        branched = {}
        for m in MULTIPLIERS:  # each branch: the same samples, 4 seeds, their mean loss
            ends = [sgd(checkpoint, m * BASE, SAMPLES // (m * BASE), seed) for seed in
                    range(1, SEEDS + 1)]  # fmt: skip
            branched[m * BASE] = sum(float((H * w.square()).sum() / 2) for w in ends) / SEEDS
        exact_cbs.append(branch_cbs(exact, BASE, 0.05))
        branched_cbs.append(branch_cbs(branched, BASE, 0.05))
    assert exact_cbs[0] == BASE and exact_cbs[-1] == 64 * BASE  # it rises over training
    for e, b in zip(exact_cbs, branched_cbs, strict=True):  # within one doubling of the batch
        assert abs(math.log2(b / e)) <= 1, (exact_cbs, branched_cbs)


def test_the_cbs_is_the_largest_batch_up_to_which_every_branch_is_within_tolerance():
    losses = {32: 1.0, 64: 1.04, 128: 1.02, 256: 1.2, 512: 1.01, 1024: math.nan}
    assert branch_cbs(losses, 32, 0.05) == 128  # 512 is within, but 256 is not
    assert branch_cbs(losses, 32, 0.25) == 512  # the diverged branch (NaN) never counts
    assert branch_cbs({32: 1.0, 64: 1.2}, 32, 0.05) == 32


class FirstStep(L.Callback):
    """The weights, optimizer state and LR the first step starts from."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0:
            optimizer = trainer.optimizers[0]
            self.weights = {k: v.clone() for k, v in pl_module.model.state_dict().items()}
            self.buffers = [optimizer.state[p]["momentum_buffer"].clone()
                            for g in optimizer.param_groups for p in g["params"]]  # fmt: skip
            self.lr = optimizer.param_groups[0]["lr"]


def test_a_branch_starts_from_its_checkpoints_weights_and_momentum_with_its_own_lr(
    tmp_path, data_dir
):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.yaml").write_text(  # what the branch reads of it (fit() writes none)
        "batch_size: 32\noptim: {optimizer: sgd, exclude_norm_and_bias: null}\n"
    )
    points = "+callbacks.branch_points"
    fit(base, data_dir, "trainer.max_epochs=1", "ghost_batch_size=32",
        f"{points}._target_=lbtrain.callbacks.branch_points.BranchPoints",
        f"{points}.dirpath={base}", f"{points}.steps=[3]")  # fmt: skip
    checkpoint = torch.load(checkpoint_path(base, 3), weights_only=False)
    assert checkpoint["global_step"] == 3
    cfg = compose_config(
        ["experiment=mnist1d_cbs_branch", f"branch.base_run={base}", "branch.step=3",
         "branch.samples=256", "batch_size=128", "seed=1", f"paths.data_dir={data_dir}",
         "logger=csv"], str(tmp_path / "branch"),
    )  # fmt: skip
    trainer, module, dm = build(cfg, tmp_path / "branch")
    first = FirstStep()
    trainer.callbacks.append(first)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2  # 256 samples at 128
    saved = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()
             if k.startswith("model.")}  # fmt: skip
    assert saved.keys() == first.weights.keys()
    for key, value in saved.items():
        assert torch.equal(value, first.weights[key]), key
    saved = checkpoint["optimizer_states"][0]  # the same groups, in the same order
    buffers = [saved["state"][i]["momentum_buffer"] for g in saved["param_groups"]
               for i in g["params"]]  # fmt: skip
    assert len(buffers) == len(first.buffers)
    for buffer, started in zip(buffers, first.buffers, strict=True):
        assert torch.equal(buffer, started)
    assert first.lr == pytest.approx(0.05 * 2)  # the sqrt rule at 4 x 32: the branch's own


def test_a_branch_below_the_base_batch_or_from_a_step_never_saved_is_refused_in_one_line(
    tmp_path, cli_in_process
):
    base = tmp_path / "base"
    checkpoint_path(base, 5).parent.mkdir(parents=True)
    checkpoint_path(base, 5).touch()
    (base / "config.yaml").write_text(
        "batch_size: 32\noptim: {optimizer: sgd, exclude_norm_and_bias: null}\n"
    )
    given = ("experiment=mnist1d_cbs_branch", f"branch.base_run={base}")
    refused = cli_in_process(*given, "branch.step=7", "batch_size=64")
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1] == (
        "lbtrain: error: branch.step=7: the base run saved no checkpoint at that step; it saved "
        "[5] (callbacks.branch_points.steps)")  # fmt: skip
    refused = cli_in_process(*given, "branch.step=5", "batch_size=16")
    assert refused.stderr.strip().splitlines()[-1] == (
        "lbtrain: error: batch_size=16: a branch's batch is m x the base run's 32, m >= 1 "
        "(here m = 0.5)")  # fmt: skip
    refused = cli_in_process(*given, "branch.step=5", "optim.optimizer=adamw")
    assert refused.stderr.strip().splitlines()[-1] == (
        f"lbtrain: error: optim.optimizer=adamw: the base run {base} trained with "
        "optim.optimizer=sgd; a branch continues its optimizer")  # fmt: skip
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").rglob("summary.json"))


def test_the_warmup_doubles_the_batch_once_an_epoch_while_the_cbs_is_above_twice_it():
    """Merrill et al.'s rule on a measured CBS(t): 4000 training samples, base batch 32."""
    table = pd.DataFrame({"samples": [800, 3200, 6400, 12800, 25600],
                          "CBS": [32, 128, 1024, 1024, 96]})  # fmt: skip
    # epoch 1 (sample 4000) sees CBS 128 > 64: 64; epoch 2 sees 1024: 128, epoch 3: 256 (one
    # doubling an epoch), epoch 4 (12800 passed at 16000): 512; epoch 7: CBS 96, no change
    assert warmup_points(table, 32, 4000) == [[1, 64], [2, 128], [3, 256], [4, 512]]
    assert warmup_points(table.assign(CBS=[32] * 5), 32, 4000) == [[0, 32]]  # never grows


def test_the_report_reads_the_cbs_off_branches_whose_base_run_is_unfinished_or_gone(
    cli_in_process, tmp_path, capsys
):
    """Branches need only the base run's checkpoints: the report reads them while the base
    run still trains (no summary.json yet), and leaves out, in one line, those whose base
    run was moved away, writing the rest of the report."""
    base, branches = tmp_path / "base", tmp_path / "branches"
    ran = cli_in_process("experiment=mnist1d_cbs_base", "trainer.max_epochs=1", "logger=csv",
                         "callbacks.branch_points.steps=[25,50]",
                         f"hydra.run.dir={base}")  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    ran = cli_in_process("-m", "experiment=mnist1d_cbs_branch", f"branch.base_run={base}",
                         "branch.step=25,50", "batch_size=32,128", "seed=1,2", "branch.samples=256",
                         "logger=csv", f"hydra.sweep.dir={branches}")  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    (base / "summary.json").unlink()  # the base run, still training

    report.write_report([branches], tmp_path / "report")
    table = pd.read_csv(tmp_path / "report" / "cbs_online.csv")
    assert list(table["step"]) == [25, 50] and list(table["samples"]) == [800, 1600]
    assert (table["seeds"] == 2).all() and table["CBS"].isin([32, 128]).all()
    assert table["B_simple(t)"].notna().all()  # from the base run's noise-scale series
    # a tolerance every branch meets: CBS 128 at both checkpoints (samples 800, 1600), above
    # twice 32, so the batch doubles at the first epoch past them: epoch 1 (4000 samples)
    report.write_report([branches], tmp_path / "tolerant", branch_tolerance=10.0)
    assert pd.read_csv(tmp_path / "tolerant" / "cbs_online.csv")["CBS"].tolist() == [128, 128]
    assert (tmp_path / "tolerant" / "warmup_points.txt").read_text() == "[[1,64]]\n"

    capsys.readouterr()
    shutil.move(base, tmp_path / "moved")
    report.write_report([branches], tmp_path / "report_after_move")
    said = capsys.readouterr().err.splitlines()  # among the report's notes on missing figures
    assert said.count(
        f"lbtrain.report: no base run at {base} (moved or deleted?); its branches are left out "
        "of cbs_online"
    ) == 1 and "Traceback" not in "".join(said)
    assert (tmp_path / "report_after_move" / "table.csv").exists()
    assert not (tmp_path / "report_after_move" / "cbs_online.csv").exists()
