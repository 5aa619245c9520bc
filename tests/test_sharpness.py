"""Sharpness: the top Hessian eigenvalue by power iteration equals the dense Hessian's."""

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from test_weight_distance import fit
from torch.func import functional_call, hessian

from lbtrain.data.mnist1d import MNIST1DDataModule
from lbtrain.models import create_model
from lbtrain.sharpness import top_hessian_eigenvalue


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
    eigenvalue, products, vector = top_hessian_eigenvalue(loss, list(params.values()))
    assert eigenvalue == pytest.approx(float(dense.max()), rel=1e-3)  # at the default tol
    # started at its own answer, Lanczos confirms it in a few products
    again, fewer, _ = top_hessian_eigenvalue(F.cross_entropy(model(x), y), list(params.values()),
                                             start=vector)  # fmt: skip
    assert again == pytest.approx(eigenvalue, rel=1e-3) and fewer < products


def test_the_callback_logs_lambda_max_every_n_steps_and_at_the_end(tmp_path, data_dir):
    fit(tmp_path, data_dir, "trainer.max_epochs=1", "model=mlp", "model.norm=none",
        "+callbacks.sharpness._target_=lbtrain.callbacks.sharpness.Sharpness",
        "+callbacks.sharpness.every_n_steps=2", "+callbacks.sharpness.num_samples=200")  # fmt: skip
    log = pd.read_csv(tmp_path / "csv" / "metrics.csv").dropna(subset=["sharpness/lambda_max"])
    assert list(log["step"]) == [2, 4, 5]  # every 2nd of the 5 steps, and the last
    lam, product = log["sharpness/lambda_max"], log["sharpness/lr_times_lambda"]
    assert (lam > 0).all()
    assert list(product / lam) == pytest.approx([0.05] * 3)  # lr 0.05, no decay in 5 steps
