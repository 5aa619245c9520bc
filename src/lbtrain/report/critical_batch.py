"""The critical batch size from a batch-size sweep (McCandlish et al. 2018; Shallue et al.
2019): how many optimizer steps S(B) and training examples E(B) = B S(B) each batch size
takes to reach a target, and the fit

    S = S_min (1 + B_crit / B),   equivalently   (S / S_min - 1)(E / E_min - 1) = 1,

whose B_crit = E_min / S_min separates perfect scaling (S ~ 1/B, below B_crit) from
diminishing returns (S ~ S_min, above). The noise scale B_simple predicts it.
"""

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import nnls

NOISE_COLUMNS = ("noise_scale/trace_sigma", "noise_scale/grad_sq")  # logged by NoiseScale
# `train/loss` is the epoch mean: a per-batch loss crosses a target first by noise
ALIASES = {"train/loss": "train/loss_epoch"}
LOWER_IS_BETTER = re.compile(r"loss|error|err\b")


@dataclass(frozen=True)
class Target:
    metric: str  # a column of csv/metrics.csv
    value: float
    lower_is_better: bool

    @classmethod
    def parse(cls, text: str) -> "Target":
        """`val/acc=0.9` (direction from the name: loss and error go down, the rest up),
        or explicitly `val/acc>=0.9`, `train/loss<=0.3`."""
        match = re.fullmatch(r"\s*([^<>=\s]+)\s*(>=|<=|=)\s*([-+0-9.eE]+)\s*", text)
        if not match:
            raise ValueError(
                f"--target {text}: use METRIC=VALUE, METRIC>=VALUE or METRIC<=VALUE, "
                "e.g. val/acc=0.9 or train/loss<=0.3"
            )
        name, op, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--target {text}: {value} is not a number") from None
        lower = LOWER_IS_BETTER.search(name) is not None if op == "=" else op == "<="
        return cls(ALIASES.get(name, name), number, lower)

    def __str__(self) -> str:
        return f"{self.metric} {'<=' if self.lower_is_better else '>='} {self.value:g}"


def steps_to_target(steps: np.ndarray, values: np.ndarray, target: Target) -> float:
    """The first step at which the metric meets the target, interpolated linearly between
    the last logged point that missed it and the first that met it (NaN: never met). A value
    that is not finite (a diverging run's NaN or inf loss) is no measurement: it never meets
    the target, and the interpolation skips it."""
    values = np.asarray(values, dtype=float)
    steps = np.asarray(steps)[np.isfinite(values)]
    sign = -1.0 if target.lower_is_better else 1.0
    margin = sign * (values[np.isfinite(values)] - target.value)  # >= 0: met
    met = np.flatnonzero(margin >= 0)
    if len(met) == 0:
        return math.nan
    i = met[0]
    if i == 0:
        return float(steps[0])
    s0, s1, m0, m1 = steps[i - 1], steps[i], margin[i - 1], margin[i]
    return float(s0 + (s1 - s0) * (-m0) / (m1 - m0))


@dataclass(frozen=True)
class ScalingFit:
    s_min: float  # steps to target with an unlimited batch
    e_min: float  # examples to target with the smallest batch
    b_crit: float  # E_min / S_min

    def steps(self, batch: np.ndarray) -> np.ndarray:
        return self.s_min * (1 + self.b_crit / np.asarray(batch, dtype=float))


def fit_critical_batch(batch: np.ndarray, steps: np.ndarray) -> ScalingFit:
    """S = S_min + E_min / B is linear in (S_min, E_min): least squares of the relative
    residual (S_fit - S) / S, so every batch size counts alike whether it took 10 steps or
    10,000, with both non-negative (scipy's nnls). B_crit = E_min / S_min: infinite for
    perfect scaling (S_min = 0), 0 where larger batches never cut the steps."""
    batch, steps = np.asarray(batch, dtype=float), np.asarray(steps, dtype=float)
    if len(set(batch)) < 3:
        raise ValueError("the fit needs steps-to-target at 3 or more batch sizes")
    design = np.stack([1 / steps, 1 / (batch * steps)], axis=1)
    (s_min, e_min), _ = nnls(design, np.ones(len(batch)))
    b_crit = e_min / s_min if s_min > 0 else math.inf
    return ScalingFit(float(s_min), float(e_min), float(b_crit))


def noise_scale_until(metrics: pd.DataFrame, until: float) -> float:
    """A run's B_simple over its steps up to `until` (all of them if NaN): the mean of the
    logged tr(Sigma) over the mean of the logged |G|^2, never the mean of the logged ratio,
    which one step with |G|^2 near zero can swing to any size or sign."""
    return _b_simple(metrics, NOISE_COLUMNS, -math.inf, math.inf if math.isnan(until) else until)


def _b_simple(metrics: pd.DataFrame, columns: tuple[str, str], low: float, high: float) -> float:
    """The mean tr(Sigma) over the mean |G|^2 (`columns`) logged at steps low to high."""
    if not set(columns) <= set(metrics.columns):
        return math.nan
    rows = metrics.dropna(subset=list(columns))
    rows = rows[rows["step"].between(low, high)]
    return float(rows[columns[0]].mean() / rows[columns[1]].mean()) if len(rows) else math.nan


BRANCH_TOLERANCE = 0.05  # a branch within 5% of the m = 1 branch's loss is within the CBS


def branch_cbs(losses: dict[int, float], base_batch: int, tolerance: float) -> int:
    """The critical batch at one checkpoint from its branches (Merrill et al. 2025): the
    largest branch batch B' such that every branch up to it ends within `tolerance` of the
    m = 1 branch, loss(B'') <= (1 + tolerance) loss(base_batch) for all B'' <= B'. `losses`:
    each branch batch's loss after the same number of samples."""
    limit = (1 + tolerance) * losses[base_batch]
    cbs = base_batch
    for batch in sorted(b for b in losses if b > base_batch):
        if not losses[batch] <= limit:  # NaN (a diverged branch) fails too
            break
        cbs = batch
    return cbs


def noise_scale_near(metrics: pd.DataFrame, step: int) -> float:
    """B_simple around `step`: the mean tr(Sigma) over the mean |G|^2 of the single
    measurements within a factor sqrt(2) of it (checkpoints a factor 2 apart get windows of
    their own), from NoiseScale's `*_single` series."""
    single = ("noise_scale/trace_sigma_single", "noise_scale/grad_sq_single")
    return _b_simple(metrics, single, step / math.sqrt(2), step * math.sqrt(2))
