"""The paper's diffusion law, fitted to one run's weight-distance curve.

Hoffer et al.: during the initial high-LR phase ||w_t - w_0|| grows like log t ("ultra-slow
diffusion"); more generally like (log t)^(2/alpha). We fit both over the steps before the
first LR decay: d = a log t + b (slope, intercept, R^2) and d = c (log t)^k (k, R^2 of the
log-log fit).
"""

import numpy as np


def fit_diffusion(steps, distances, until_step: int | None = None) -> dict[str, float]:
    """Least-squares fits over the points with 2 <= t <= until_step (log t > 0)."""
    t = np.asarray(steps, dtype=float)
    d = np.asarray(distances, dtype=float)
    keep = (t >= 2) & (d > 0) & np.isfinite(d) & (t <= (until_step if until_step else np.inf))
    t, d = t[keep], d[keep]
    if len(t) < 3:
        return {}
    log_t = np.log(t)
    slope, intercept = np.polyfit(log_t, d, 1)
    k, log_c = np.polyfit(np.log(log_t), np.log(d), 1)
    return {
        "diffusion_slope": float(slope),
        "diffusion_intercept": float(intercept),
        "diffusion_r2": _r2(d, slope * log_t + intercept),
        "diffusion_power_k": float(k),
        "diffusion_power_c": float(np.exp(log_c)),
        "diffusion_power_r2": _r2(np.log(d), k * np.log(log_t) + log_c),
        "diffusion_fit_steps": float(t.max()),
    }


def _r2(y: np.ndarray, y_hat: np.ndarray) -> float:
    total = ((y - y.mean()) ** 2).sum()
    return float(1 - ((y - y_hat) ** 2).sum() / total) if total > 0 else float("nan")
