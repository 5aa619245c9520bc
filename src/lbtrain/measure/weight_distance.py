"""||w_t - w_0||: how far the weights have travelled from their initialisation, every step.

The paper's evidence (Figure 2) is that this distance grows like log t during the high-LR
phase, with a slope that depends on the batch size. The authors logged it once per epoch
for the first layer only; this callback logs it for all trainable parameters after every
optimizer step t (t = 1, 2, ... = `trainer.global_step`), to every logger. Buffering,
checkpointing and logging: `StepSeries`.
"""

import lightning as L
import torch
from torch import Tensor

from lbtrain.measure.step_series import StepSeries


class FlatWeights:
    """A run's trainable parameters as one flat vector, read each step without a copy where
    possible: flat views share storage with the parameters, which optimizers update in
    place; a channels_last weight has no flat view and is flattened at each step instead."""

    def __init__(self, named: list[tuple[str, Tensor]]) -> None:
        self._views = [p.detach().view(-1) if p.is_contiguous() else p.detach() for _, p in named]
        # the layer of a parameter is its module: "model.3.weight" -> "model.3"
        layers = [n.rsplit(".", 1)[0] for n, _ in named]
        self.layer_names = list(dict.fromkeys(layers))
        self.layer_index = torch.cat(
            [torch.full((p.numel(),), self.layer_names.index(layer)) for (_, p), layer in
             zip(named, layers, strict=True)]
        ).to(named[0][1].device)  # fmt: skip

    def read(self) -> Tensor:
        return torch.cat([v if v.dim() == 1 else v.reshape(-1) for v in self._views])

    def per_layer_sum(self, values: Tensor) -> Tensor:
        sums = torch.zeros(len(self.layer_names), device=values.device, dtype=values.dtype)
        return sums.index_add_(0, self.layer_index, values)


# A step of a small model leaves the code of the distance's tensor ops cold: on a CPU each
# op then costs several times what it costs when run again right away. A series whose
# weights fit this many bytes, times its flush interval, keeps a copy of them at each step
# (one op) and computes its values at the flush, step by step with the same ops: the same
# numbers, which do not depend on when a flush comes (README, "Benchmarks": the hook time
# with and without).
DEFER_BYTES = 16 * 2**20


class FromInitialWeights(StepSeries):
    """A series that compares the weights with w_0, the run's first; w_0 is saved in
    checkpoints, so a resumed run keeps measuring from the original initialisation. A
    subclass defines `values(w)`: the series' values for the flat weights w."""

    def __init__(self, *, flush_every_n_steps: int, per_layer: bool) -> None:
        super().__init__(flush_every_n_steps)
        self.per_layer = per_layer
        self.w0: Tensor | None = None  # flat copy of the measured weights at step 0

    def track(self, named: list[tuple[str, Tensor]]) -> None:
        """Measure these parameters from now on (w_0: now, or as a checkpoint restored it)."""
        self.weights = FlatWeights(named)
        now = self.weights.read()
        if self.w0 is not None and self.w0.numel() != now.numel():
            raise RuntimeError(f"{self.name}: checkpointed w_0 does not match the model")
        self.w0 = now.clone() if self.w0 is None else self.w0.to(now.device, now.dtype)
        self.sub_names = self.weights.layer_names if self.per_layer else []
        self.deferred = now.numel() * now.element_size() * self.flush_every_n_steps <= DEFER_BYTES

    def values(self, w: Tensor) -> Tensor:
        raise NotImplementedError

    def measure(self, pl_module: L.LightningModule) -> Tensor:
        w = self.weights.read()  # a copy: later steps do not change it
        return w if self.deferred else self.values(w)

    def finish(self, measured: Tensor) -> Tensor:
        return self.values(measured) if self.deferred else measured

    def extra_state(self) -> dict:
        return {"w0": self.w0.cpu() if self.w0 is not None else None}

    def load_extra_state(self, state: dict) -> None:
        self.w0 = state["w0"]


class WeightDistance(FromInitialWeights):
    """Logs `weight_distance` (and, with `per_layer`, `weight_distance/<layer>`) per step,
    over all trainable parameters."""

    name, fit_prefix = "weight_distance", "diffusion"

    def start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.track([(n, p) for n, p in pl_module.named_parameters() if p.requires_grad])

    def values(self, w: Tensor) -> Tensor:
        if not self.per_layer:
            return torch.dist(w, self.w0).view(1)
        per_layer = self.weights.per_layer_sum((w - self.w0).square())
        return torch.cat([per_layer.sum().view(1), per_layer]).sqrt()
