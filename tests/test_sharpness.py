"""Sharpness: the top Hessian eigenvalue by Lanczos equals the dense Hessian's, AdamW's
preconditioned one the dense P^-1 H's; measuring in training mode leaves training as it was."""

import json

import lightning as L
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from test_weight_distance import fit
from torch.func import functional_call, hessian

from lbtrain import report
from lbtrain.data.mnist1d import MNIST1DDataModule
from lbtrain.measure.sharpness import top_hessian_eigenvalue
from lbtrain.models import create_model


def test_lanczos_finds_the_top_eigenvalue_of_the_dense_hessian(data_dir):
    dm = MNIST1DDataModule(str(data_dir), batch_size=32)
    dm.setup()
    x, y = dm.measurement_set(300)
    torch.manual_seed(0)
    model = create_model("mlp", 10, (1, 40), hidden=[8], norm="none")
    params = dict(model.named_parameters())
    shapes = {k: p.shape for k, p in params.items()}
    flat = torch.cat([p.detach().flatten() for p in params.values()])  # 418 parameters

    def loss_of(vector: torch.Tensor) -> torch.Tensor:
        chunks = vector.split([s.numel() for s in shapes.values()])
        weights = {k: c.view(s) for (k, s), c in zip(shapes.items(), chunks, strict=True)}
        return F.cross_entropy(functional_call(model, weights, (x,)), y)

    dense = torch.linalg.eigvalsh(hessian(loss_of)(flat))
    loss = F.cross_entropy(model(x), y)
    lanczos = {"tol": 1e-2, "max_iter": 100, "krylov_dim": 4}  # callbacks/all.yaml's
    eigenvalue, products, vector = top_hessian_eigenvalue(loss, list(params.values()), **lanczos)
    assert eigenvalue == pytest.approx(float(dense.max()), rel=1e-3)  # at the default tol
    # started at its own answer, Lanczos confirms it in a few products
    again, fewer, _ = top_hessian_eigenvalue(F.cross_entropy(model(x), y), list(params.values()),
                                             start=vector, **lanczos)  # fmt: skip
    assert again == pytest.approx(eigenvalue, rel=1e-3) and fewer < products


def test_the_callback_logs_lambda_max_every_n_steps_and_at_the_end(tmp_path, data_dir):
    fit(tmp_path, data_dir, "trainer.max_epochs=1", "model=mlp", "model.norm=none",
        "+callbacks.sharpness._target_=lbtrain.measure.sharpness_callback.Sharpness",
        "+callbacks.sharpness.every_n_steps=2", "+callbacks.sharpness.num_samples=200")  # fmt: skip
    log = pd.read_csv(tmp_path / "csv" / "metrics.csv").dropna(subset=["sharpness/lambda_max"])
    assert list(log["step"]) == [2, 4, 5]  # every 2nd of the 5 steps, and the last
    lam, product = log["sharpness/lambda_max"], log["sharpness/lr_times_lambda"]
    assert (lam > 0).all()
    assert list(product / lam) == pytest.approx([0.05] * 3)  # lr 0.05, no decay in 5 steps
    # heavy ball, momentum 0.9: the edge of stability at 2 (1 + 0.9) / 0.05
    assert list(log["sharpness/threshold"]) == pytest.approx([76.0] * 3)
    assert list(log["sharpness/stability_ratio"]) == pytest.approx(list(lam / 76))


def dense_hessian(model, x, y):
    """The loss's Hessian over all parameters, flat in model order, from torch.func."""
    params = dict(model.named_parameters())
    shapes = {k: p.shape for k, p in params.items()}
    flat = torch.cat([p.detach().flatten() for p in params.values()])

    def loss_of(vector: torch.Tensor) -> torch.Tensor:
        chunks = vector.split([s.numel() for s in shapes.values()])
        weights = {k: c.view(s) for (k, s), c in zip(shapes.items(), chunks, strict=True)}
        return F.cross_entropy(functional_call(model, weights, (x,)), y)

    return hessian(loss_of)(flat)


def test_adamws_preconditioned_sharpness_is_the_dense_top_eigenvalue_of_p_inverse_h(
    tmp_path, data_dir
):
    trainer = fit(
        tmp_path, data_dir, "trainer.max_epochs=1", "model=mlp", "model.norm=none",
        "model.hidden=[8]", "optim.optimizer=adamw", "optim.lr=0.01",
        "+callbacks.sharpness._target_=lbtrain.measure.sharpness_callback.Sharpness",
        "+callbacks.sharpness.every_n_steps=100", "+callbacks.sharpness.num_samples=200",
        "+callbacks.sharpness.tol=1e-9",
    )  # fmt: skip
    model, optimizer = trainer.lightning_module.model, trainer.optimizers[0]
    x, y = trainer.datamodule.measurement_set(200)
    h = dense_hessian(model, x, y)
    p = []  # Adam's step after t steps: lr m / ((1 - beta1^t)(sqrt(v / (1 - beta2^t)) + eps))
    for param in model.parameters():
        state = optimizer.state[param]
        t = float(state["step"])
        v_hat = state["exp_avg_sq"] / (1 - 0.999**t)
        p.append(((1 - 0.9**t) * (v_hat.sqrt() + 1e-8)).flatten())
    p = torch.cat(p)
    dense = torch.linalg.eigvals(h / p[:, None]).real.max()  # P^-1 H: not symmetric
    log = pd.read_csv(tmp_path / "csv" / "metrics.csv").dropna(subset=["sharpness/lambda_max"])
    last = log.iloc[-1]  # the measurement after the last step: the weights and state above
    assert last["step"] == 5
    assert last["sharpness/preconditioned"] == pytest.approx(float(dense), rel=1e-4)
    assert last["sharpness/lambda_max"] == pytest.approx(float(torch.linalg.eigvalsh(h).max()),
                                                         rel=1e-4)  # fmt: skip
    assert last["sharpness/threshold"] == pytest.approx(2 * 1.9 / (0.1 * 0.01))  # 38 / lr
    assert last["sharpness/stability_ratio"] == pytest.approx(last["sharpness/preconditioned"]
                                                              / 3800)  # fmt: skip


def test_measuring_in_training_mode_leaves_training_bit_for_bit_unchanged(tmp_path, data_dir):
    """Under Ghost BN the measurement set is normalised in ghost batches, as training does;
    BatchNorm's running statistics and the random streams come out as they went in."""
    runs = {}
    sharpness = ("+callbacks.sharpness._target_=lbtrain.measure.sharpness_callback.Sharpness",
                 "+callbacks.sharpness.every_n_steps=2")  # fmt: skip
    for name, extra in (("with", sharpness), ("without", ())):
        trainer = fit(tmp_path / name, data_dir, "trainer.max_epochs=1", "ghost_batch_size=8",
                      *extra)  # fmt: skip
        runs[name] = trainer.lightning_module.model.state_dict()
    summary = json.loads((tmp_path / "with" / "summary.json").read_text())
    assert summary["sharpness/bn_mode"] == "train" and "sharpness/lambda_max" in summary
    assert runs["with"].keys() == runs["without"].keys()
    for key, value in runs["with"].items():
        assert torch.equal(value, runs["without"][key]), key


class RecordBatch(L.Callback):
    """The weights and the batch each step starts from."""

    def __init__(self) -> None:
        self.starts = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        weights = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        self.starts[trainer.global_step + 1] = (weights, [t.clone() for t in batch])


def test_batch_sharpness_is_the_dense_curvature_along_the_batch_gradient(tmp_path, data_dir):
    record = RecordBatch()
    fit(tmp_path, data_dir, "trainer.max_epochs=1", "model=mlp", "model.norm=none",
        "model.hidden=[8]", "optim.momentum=0",
        "+callbacks.batch_sharpness._target_=lbtrain.measure.batch_sharpness.BatchSharpness",
        "+callbacks.batch_sharpness.every_n_steps=2", extra_callbacks=[record])  # fmt: skip
    log = pd.read_csv(tmp_path / "csv" / "metrics.csv").dropna(subset=["batch_sharpness"])
    assert list(log["step"]) == [2, 4]  # every 2nd of the 5 steps
    model = create_model("mlp", 10, (1, 40), hidden=[8], norm="none")
    for _, row in log.iterrows():
        weights, (x, y) = record.starts[row["step"]]
        model.load_state_dict(weights)
        h = dense_hessian(model, x, y)
        loss = F.cross_entropy(model(x), y)
        g = torch.cat([d.flatten() for d in torch.autograd.grad(loss, list(model.parameters()))])
        expected = float(g @ h @ g / (g @ g))
        assert row["batch_sharpness"] == pytest.approx(expected, rel=1e-4)
        assert row["batch_sharpness/threshold"] == pytest.approx(2 / 0.05)  # plain SGD: 2 / lr
        assert row["batch_sharpness/stability_ratio"] == pytest.approx(expected / 40, rel=1e-4)


@pytest.mark.parametrize(
    ("optimizer", "threshold"), [("sgd", 76.0), ("lars", "none known for lars")]
)
def test_the_report_draws_both_sharpnesses_against_the_runs_threshold(
    tmp_path, cli_in_process, optimizer, threshold
):
    done = cli_in_process(
        "trainer.max_epochs=1", "trainer.limit_train_batches=5", f"optim.optimizer={optimizer}",
        "callbacks=all", "callbacks.sharpness.every_n_steps=2",
        "callbacks.sharpness.num_samples=200", "callbacks.batch_sharpness.every_n_steps=2",
        "callbacks.noise_scale=null", "logger=csv", "hydra.run.dir=runs/0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "runs" / "0" / "summary.json").read_text())
    assert summary["sharpness/threshold"] == threshold  # heavy ball: 2 (1 + 0.9) / 0.05
    table = report.write_report([tmp_path / "runs"], tmp_path / "report")
    if optimizer == "sgd":
        ratio = f"{summary['sharpness/stability_ratio']:.3f}"
        assert table["final sharpness / threshold"].iloc[0] == ratio
    else:  # no threshold, no column
        assert "final sharpness / threshold" not in table
    assert (tmp_path / "report" / "sharpness.png").stat().st_size > 10_000
    assert (tmp_path / "report" / "batch_sharpness.png").stat().st_size > 10_000
