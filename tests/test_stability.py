"""Edge-of-stability thresholds: on a quadratic of curvature lambda, torch's own SGD (plain,
heavy ball, dampened, Nesterov) converges just below the threshold lbtrain logs and
diverges just above it; Adam's update with its preconditioner frozen does the same in the
eigenvalues of P^-1 H."""

import pytest
import torch

from lbtrain.measure.stability import adam_threshold, sgd_threshold


def final_distance(optimizer_of, curvature: float, steps: int = 4000) -> float:
    w = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    optimizer = optimizer_of([w])
    for _ in range(steps):
        optimizer.zero_grad()
        (curvature * w.square() / 2).sum().backward()
        optimizer.step()
    return w.abs().item()


@pytest.mark.parametrize(
    "settings",
    [{"momentum": 0.0}, {"momentum": 0.9}, {"momentum": 0.5, "dampening": 0.3},
     {"momentum": 0.9, "nesterov": True}, {"momentum": 0.5, "nesterov": True}],
    ids=["gd", "heavy ball", "dampened", "nesterov 0.9", "nesterov 0.5"],
)  # fmt: skip
def test_torch_sgd_converges_below_its_threshold_and_diverges_above(settings):
    group = {"lr": 0.1, **settings}
    threshold, bounds = sgd_threshold(group)
    assert bounds == "hessian"
    sgd = lambda params: torch.optim.SGD(params, **group)  # noqa: E731
    assert final_distance(sgd, 0.99 * threshold) < 1e-3
    assert final_distance(sgd, 1.01 * threshold) > 1e3


def test_adam_with_a_frozen_preconditioner_turns_unstable_at_its_threshold():
    """Adam's step m = beta1 m + (1 - beta1) g, w -= lr m / P, on H = diag(h) with P =
    diag(p): stable while the top eigenvalue of P^-1 H stays below the threshold."""
    lr, beta1 = 0.01, 0.9
    threshold, bounds = adam_threshold({"lr": lr, "betas": (beta1, 0.999)})
    assert bounds == "preconditioned" and threshold == pytest.approx(38 / lr)
    p = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    for factor, stable in ((0.99, True), (1.01, False)):
        h = p * factor * threshold * torch.tensor([0.3, 1.0, 0.1], dtype=torch.float64)
        w, m = torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
        for _ in range(4000):
            m = beta1 * m + (1 - beta1) * h * w
            w = w - lr * m / p
        assert (w.abs().max() < 1e-3) == stable, factor
