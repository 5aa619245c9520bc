"""The gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018), the batch
size beyond which larger batches stop cutting the steps to a target much: G is the mean
gradient over the training set, Sigma the covariance of one sample's gradient.

Its unbiased estimate needs only the squared norms of gradients at two batch sizes, b < B
(appendix A). With g_b the mean gradient of b samples, E|g_b|^2 = |G|^2 + tr(Sigma) / b, so

    |G|^2     ~ (B |g_B|^2 - b |g_b|^2) / (B - b)
    tr(Sigma) ~ (|g_b|^2 - |g_B|^2) / (1/b - 1/B)

Training draws each epoch's batches without replacement from N samples, which makes the
variance of g_b tr(Sigma) (1/b - 1/N) instead; tr(Sigma) comes out unchanged and |G|^2 low
by tr(Sigma) / N, which `num_train` adds back (a few percent while B_simple << N, but a
quarter of |G|^2 at B_simple = N / 4). Single estimates are noisy, so the two are averaged
separately (an EMA each) and only then divided: the mean of ratios is biased.

The EMA follows B_simple as training moves, so its last value rests on the last few
measurements; `pooled` gives the run's estimate over a window of them, with its spread.
"""

import torch
from torch import Tensor


def two_batch_estimates(
    sq_small: Tensor, sq_big: Tensor, small: int, big: int, num_train: int | None = None
) -> tuple[Tensor, Tensor]:
    """Unbiased (|G|^2, tr(Sigma)) from |g_b|^2 (averaged over the small batches) and
    |g_B|^2, for batches of `small` and `big` samples drawn from `num_train` (None: an
    unlimited stream)."""
    trace = (sq_small - sq_big) / (1 / small - 1 / big)
    grad_sq = (big * sq_big - small * sq_small) / (big - small)
    if num_train:
        grad_sq = grad_sq + trace / num_train
    return grad_sq, trace


class DebiasedEMA:
    """Exponential moving averages of a few values, on their device (no host sync), started
    at zero and divided by the weight collected so far (as Adam's moments are), so the
    first estimates are not pulled towards zero."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.sums: Tensor | None = None
        self.weight = 0.0  # 1 - decay^n after n updates: a host number, known without a sync

    def update(self, values: Tensor) -> None:
        new = (1 - self.decay) * values
        self.sums = new if self.sums is None else self.decay * self.sums + new
        self.weight = self.decay * self.weight + (1 - self.decay)

    def value(self) -> Tensor | None:
        return None if self.sums is None else self.sums / self.weight

    def state_dict(self) -> dict:
        return {"sums": None if self.sums is None else self.sums.cpu(), "weight": self.weight}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.sums = None if state["sums"] is None else state["sums"].to(device)
        self.weight = state["weight"]


def pooled(singles: list[tuple[float, float]], resamples: int = 2000) -> dict[str, float]:
    """B_simple from many single measurements (|G|^2, tr(Sigma)): mean tr(Sigma) over mean
    |G|^2, and a 95% percentile-bootstrap interval that resamples the measurements (taken
    as independent: each rests on its own batch). Seeded: the same run, the same interval."""
    values = torch.tensor(singles, dtype=torch.float64)  # [n, 2]
    generator = torch.Generator().manual_seed(0)
    ratios = []
    for _ in range(0, resamples, 100):  # 100 resamples at a time: memory 100 x n, not 2000 x n
        means = values[torch.randint(len(values), (100, len(values)), generator=generator)].mean(1)
        ratios.append(means[:, 1] / means[:, 0])
    ratios = torch.cat(ratios)[:resamples]
    low, high = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=torch.float64))
    grad_sq, trace = values.mean(0)
    return {"b_simple": float(trace / grad_sq), "low": float(low), "high": float(high),
            "measurements": len(values)}  # fmt: skip
