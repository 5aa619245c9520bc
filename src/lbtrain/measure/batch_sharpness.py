"""`batch_sharpness` every N optimizer steps: the curvature of the step's own mini-batch
loss along its own gradient, g_B^T H_B g_B / |g_B|^2, at the weights the step starts from.
Averaged over batches this is the "batch sharpness" that mini-batch SGD holds at its edge of
stability (arXiv 2412.20553), where full-batch GD holds lambda_max (measure/sharpness_callback.py);
`batch_sharpness/threshold` and `batch_sharpness/stability_ratio` set it against the
optimizer's threshold (2 / lr for SGD, 2 (1 + momentum) / lr with heavy ball; not for Adam,
whose edge concerns the preconditioned Hessian). summary.json adds the means over the
measurements of the last half of the run (`batch_sharpness/mean_last_half`, and
`batch_sharpness/stability_ratio_mean_last_half`): one batch is a noisy draw of the
expectation.

The batch is the training micro-batch the step starts with, in training mode (BatchNorm
with the batch's own statistics, Ghost BN in its ghost batches: exactly the loss the step
descends), dropout off; BatchNorm's running statistics stay as they were. One backward
with create_graph and one Hessian-vector product: about three steps' cost, every N steps."""

import math
import statistics

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from lbtrain.lightning_internals import uncompiled
from lbtrain.measure.sharpness import batch_sharpness, measuring_mode
from lbtrain.measure.step_series import StepSeries
from lbtrain.train.optimizers import stability_threshold


class BatchSharpness(StepSeries):
    name, trains_batchnorm = "batch_sharpness", True
    final_value = False  # no value after the last step: each rests on a step's batch

    def __init__(self, every_n_steps: int = 100, flush_every_n_steps: int = 10) -> None:
        super().__init__(flush_every_n_steps, every_n_steps=every_n_steps)
        self._value: Tensor | None = None
        self.ratios: list[tuple[int, float]] = []  # (step, value / threshold), on the host

    def start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.model = uncompiled(pl_module.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = trainer.optimizers[0]
        threshold, bounds = stability_threshold(
            pl_module.plan.optimizer, self.optimizer.param_groups[0]
        )
        self.threshold = threshold if bounds == "hessian" else None
        self.sub_names = ["threshold", "stability_ratio"] if self.threshold else []

    def before_step(self, trainer: L.Trainer, pl_module, batch) -> None:
        if self.threshold:  # at the lr of this step's update
            self._threshold, _ = self.threshold(self.optimizer.param_groups[0])
        x, y = batch
        with measuring_mode(self.model, "train"), torch.enable_grad():
            self._value = batch_sharpness(F.cross_entropy(self.model(x), y), self.params)

    def measure(self, pl_module: L.LightningModule) -> Tensor:
        value, self._value = self._value, None
        value = value.detach() if value is not None else torch.tensor(math.nan)
        row = [value.to(pl_module.device)]
        if self.threshold:
            threshold = self._threshold
            row += [torch.tensor(threshold, device=pl_module.device), row[0] / threshold]
        return torch.stack(row)

    def received(self, step: int, row: list[float]) -> None:
        if self.threshold:
            self.ratios.append((step, row[2]))

    def extra_state(self) -> dict:
        return {"ratios": list(self.ratios)}

    def load_extra_state(self, state: dict) -> None:
        self.ratios = list(state.get("ratios", []))

    def summary_entries(self, pl_module: L.LightningModule) -> dict:
        entries = super().summary_entries(pl_module)
        if not entries:
            return entries
        half = self.history[-1][0] / 2
        mean = lambda series: statistics.fmean(v for step, v in series if step > half)  # noqa: E731
        entries["batch_sharpness/mean_last_half"] = mean(self.history)
        if self.ratios:
            entries["batch_sharpness/stability_ratio_mean_last_half"] = mean(self.ratios)
        return entries
