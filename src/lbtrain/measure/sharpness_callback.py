"""`sharpness/lambda_max` every N optimizer steps and at the end: the top Hessian eigenvalue
of the mean training cross-entropy (weight decay excluded) on a fixed measurement set, the
first `num_samples` training samples in data-set order, unaugmented. Beside it:
- `sharpness/lr_times_lambda` (lr x lambda_max) and `sharpness/products` (the Hessian-vector
  products it took: its cost);
- `sharpness/threshold`, the run's edge of stability at the coming update's lr (2 / lr for
  SGD, 2 (1 + momentum) / lr with heavy ball, ...: lbtrain/measure/stability.py), and
  `sharpness/stability_ratio`, the sharpness over it. LARS and LAMB have none (summary.json
  says so); for AdamW the bounded quantity is `sharpness/preconditioned`, the top
  eigenvalue of P^-1 H with P Adam's preconditioner, (1 - beta1^t)(sqrt(v_hat) + eps).
`bn_mode` says which loss: "train" (the default) normalises the measurement set as training
normalises a batch, with its own statistics (under Ghost BN, in ghost batches): the loss
training descends, which edge-of-stability statements are about; "eval" uses BatchNorm's
running statistics, the network at test time. Dropout is off and BatchNorm's running
statistics are left as they were. The uncompiled module is measured (torch.compile does
not support double backward)."""

import math

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lbtrain.lightning_internals import uncompiled
from lbtrain.measure.sharpness import measuring_mode, top_hessian_eigenvalue
from lbtrain.measure.step_series import StepSeries, require
from lbtrain.train.optimizers import stability_threshold

BN_MODES = ("train", "eval")


class Sharpness(StepSeries):
    name, sub_prefix = "sharpness/lambda_max", "sharpness"

    def __init__(
        self,
        every_n_steps: int = 1000,
        num_samples: int = 1000,
        tol: float = 1e-2,
        max_iter: int = 100,
        krylov_dim: int = 4,
        bn_mode: str = "train",
        flush_every_n_steps: int = 1,
    ) -> None:
        super().__init__(flush_every_n_steps, every_n_steps=every_n_steps)
        # ARPACK would fail at the first measurement, mid-run
        require(num_samples >= 1, f"num_samples={num_samples} must be >= 1")
        require(max_iter >= 1, f"max_iter={max_iter} must be >= 1")
        require(krylov_dim >= 2, f"krylov_dim={krylov_dim} must be >= 2")
        require(tol >= 0, f"tol={tol} must be >= 0 (0: machine precision)")
        require(bn_mode in BN_MODES, f"bn_mode={bn_mode!r} is not one of {', '.join(BN_MODES)}")
        self.num_samples, self.tol, self.max_iter = num_samples, tol, max_iter
        self.krylov_dim, self.bn_mode = krylov_dim, bn_mode
        self.trains_batchnorm = bn_mode == "train"
        self.vectors: dict[str, np.ndarray] = {}  # the last top eigenvectors: the next starts
        self.last: dict[str, float] = {}  # the last measurement's sub-series

    def check_data(self, datamodule) -> None:
        # a probe: the data module may be the user's own (README, "Extend lbtrain")
        if not hasattr(datamodule, "measurement_set"):
            raise ValueError(
                f"callbacks.sharpness: {type(datamodule).__name__} offers no measurement set "
                "(the first n training samples, in memory); use an in-memory data set"
            )

    def start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_data(trainer.datamodule)
        x, y = trainer.datamodule.measurement_set(self.num_samples)
        self.x, self.y = x.to(pl_module.device), y.to(pl_module.device)
        self.optimizer = trainer.optimizers[0]
        self.optimizer_name = pl_module.plan.optimizer
        self.threshold, bounds = stability_threshold(
            self.optimizer_name, self.optimizer.param_groups[0]
        )
        self.preconditioned = bounds == "preconditioned"
        self.sub_names = ["lr_times_lambda", "products"]  # products: what it cost
        self.sub_names += ["preconditioned"] if self.preconditioned else []
        self.sub_names += ["threshold", "stability_ratio"] if self.threshold else []

    def measure(self, pl_module: L.LightningModule) -> Tensor:
        model = uncompiled(pl_module.model)
        params = [p for p in model.parameters() if p.requires_grad]
        group = self.optimizer.param_groups[0]  # the lr of the coming updates
        eigenvalue, products = self._top(model, params, "hessian")
        row = [eigenvalue, group["lr"] * eigenvalue, products]
        bounded = eigenvalue  # what the threshold bounds
        if self.preconditioned:
            scale = adam_scale(self.optimizer, params)
            bounded, more = self._top(model, params, "preconditioned", scale)
            row[2] += more
            row.append(bounded)
        if self.threshold:
            threshold, _ = self.threshold(group)
            row += [threshold, bounded / threshold]
        return torch.tensor(row, device=pl_module.device)

    def _top(self, model, params, which: str, scale: Tensor | None = None) -> tuple[float, int]:
        if which == "preconditioned" and scale is None:
            return math.nan, 0  # no second moments yet: before the first step
        with measuring_mode(model, self.bn_mode), torch.enable_grad():
            loss = F.cross_entropy(model(self.x), self.y)
            eigenvalue, products, self.vectors[which] = top_hessian_eigenvalue(
                loss, params, tol=self.tol, max_iter=self.max_iter, krylov_dim=self.krylov_dim,
                start=self.vectors.get(which), scale=scale,
            )  # fmt: skip  # Lanczos on the host: a few syncs, every N steps
        return eigenvalue, products

    def received(self, step: int, row: list[float]) -> None:
        self.last = dict(zip(self.sub_names, row[1:], strict=True))

    def extra_state(self) -> dict:  # a resumed run starts where this one would have
        vectors = {k: torch.from_numpy(v) for k, v in self.vectors.items()}
        return {"vectors": vectors, "last": dict(self.last)}

    def load_extra_state(self, state: dict) -> None:
        self.last = state.get("last", {})
        self.vectors = {k: v.numpy() for k, v in (state.get("vectors") or {}).items()}

    def summary_entries(self, pl_module: L.LightningModule) -> dict:
        entries = super().summary_entries(pl_module)
        if not entries:
            return entries
        final = {f"sharpness/{k}": self.last[k] for k in self.sub_names
                 if k != "products" and k in self.last}  # fmt: skip
        if not self.threshold:  # LARS, LAMB, yours
            final["sharpness/threshold"] = f"none known for {self.optimizer_name}"
        return entries | final | {"sharpness/bn_mode": self.bn_mode}


def adam_scale(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> Tensor | None:
    """P^-1/2, flat over `params` in their order, P = (1 - beta1^t)(sqrt(v_hat) + eps):
    Adam's step is lr m / P with m an EMA of gradients (Cohen et al. 2022). None before the
    first step."""
    scales = {}
    for group in optimizer.param_groups:
        (beta1, beta2), eps = group["betas"], group["eps"]
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state:
                return None
            t = float(state["step"])
            v_hat = state["exp_avg_sq"] / (1 - beta2**t)
            scales[p] = ((1 - beta1**t) * (v_hat.sqrt() + eps)).rsqrt()
    return torch.cat([scales[p].reshape(-1) for p in params])
