"""`sharpness/lambda_max`, `sharpness/lr_times_lambda` and `sharpness/products` (the
Hessian-vector products it took: its cost) every N optimizer steps and at the end: the top
Hessian eigenvalue of the mean training cross-entropy (weight decay excluded) on a fixed
measurement set, the first `num_samples` training samples in data-set order, unaugmented.
BatchNorm (Ghost BN too) is measured in eval mode, with its running statistics: the function
the network computes at test time. The uncompiled module is measured (torch.compile does not
support double backward)."""

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lbtrain.callbacks.step_series import StepSeries
from lbtrain.errors import ConfigError
from lbtrain.sharpness import top_hessian_eigenvalue


class Sharpness(StepSeries):
    name, fit_prefix, sub_prefix = "sharpness/lambda_max", None, "sharpness"
    bn_mode = "eval"

    def __init__(
        self,
        every_n_steps: int = 1000,
        num_samples: int = 1000,
        tol: float = 1e-2,
        max_iter: int = 100,
        krylov_dim: int = 4,
        flush_every_n_steps: int = 1,
    ) -> None:
        super().__init__(flush_every_n_steps, every_n_steps=every_n_steps)
        for key, value, least in (("num_samples", num_samples, 1), ("max_iter", max_iter, 1),
                                  ("krylov_dim", krylov_dim, 2)):  # fmt: skip
            if not value >= least:  # ARPACK would fail at the first measurement, mid-run
                raise ValueError(f"{key}={value} must be >= {least}")
        if not tol >= 0:
            raise ValueError(f"tol={tol} must be >= 0 (0: machine precision)")
        self.num_samples, self.tol, self.max_iter = num_samples, tol, max_iter
        self.krylov_dim = krylov_dim
        self.vector: np.ndarray | None = None  # the last top eigenvector: the next start

    def check_data(self, datamodule) -> None:
        if not hasattr(datamodule, "measurement_set"):
            raise ConfigError(
                f"callbacks.sharpness: {type(datamodule).__name__} offers no measurement set "
                "(the first n training samples, in memory); use an in-memory data set"
            )

    def start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_data(trainer.datamodule)
        x, y = trainer.datamodule.measurement_set(self.num_samples)
        self.x, self.y = x.to(pl_module.device), y.to(pl_module.device)
        self.sub_names = ["lr_times_lambda", "products"]  # products: what the measurement cost
        self.optimizer = trainer.optimizers[0]

    def measure(self, pl_module: L.LightningModule) -> Tensor:
        model = getattr(pl_module.model, "_orig_mod", pl_module.model)
        params = [p for p in model.parameters() if p.requires_grad]
        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                loss = F.cross_entropy(model(self.x), self.y)
                eigenvalue, products, self.vector = top_hessian_eigenvalue(
                    loss,
                    params,
                    self.tol,
                    self.max_iter,
                    start=self.vector,
                    krylov_dim=self.krylov_dim,
                )  # Lanczos on the host: a few syncs, every N steps, not every step
        finally:
            model.train(was_training)
        lr = self.optimizer.param_groups[0]["lr"]  # the LR of the coming updates
        return torch.tensor([eigenvalue, lr * eigenvalue, products], device=pl_module.device)

    def extra_state(self) -> dict:  # a resumed run starts where this one would have
        return {"vector": None if self.vector is None else torch.from_numpy(self.vector)}

    def load_extra_state(self, state: dict) -> None:
        vector = state.get("vector")
        self.vector = None if vector is None else vector.numpy()

    def summary_entries(self, pl_module: L.LightningModule) -> dict:
        entries = super().summary_entries(pl_module)
        return entries | {"sharpness/bn_mode": self.bn_mode} if entries else entries
