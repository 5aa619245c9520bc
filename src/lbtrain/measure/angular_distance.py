"""angle(w_t, w_0) over the weights that feed a BatchNorm: diffusion without the norm effect.

BatchNorm makes the weights of the layer before it scale-invariant: the network computes
the same function for w and c * w, c > 0. Under weight decay their norm shrinks, so
||w_t - w_0|| mixes how far they travelled with how much they shrank (under +RA the
distance peaks and falls). The angle between w_t and w_0 is what the function depends on;
its log t fit (`angular_diffusion_slope`, ...) checks the paper's claim without the norm.
"""

import logging

import lightning as L
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lbtrain.lightning_internals import uncompiled
from lbtrain.measure.weight_distance import FromInitialWeights

log = logging.getLogger(__name__)


def batchnorm_fed_weights(model: nn.Module, sample: Tensor) -> set[nn.Parameter]:
    """The weights of the layers whose output goes straight into a BatchNorm, found by
    one forward pass of `sample` in eval mode (no statistics change) with hooks."""
    produced: dict[int, tuple[nn.Module, Tensor]] = {}  # keeps each output alive: ids stay unique
    fed: set[nn.Parameter] = set()

    def record(module, args, output) -> None:
        produced[id(output)] = (module, output)

    def check(module, args) -> None:
        if (source := produced.get(id(args[0]))) is not None:
            fed.add(source[0].weight)

    # a probe: the modules are the user's model's; any may have a weight, or none
    hooks = [
        m.register_forward_pre_hook(check) if isinstance(m, _BatchNorm)
        else m.register_forward_hook(record)
        for m in model.modules()
        if isinstance(m, _BatchNorm) or isinstance(getattr(m, "weight", None), nn.Parameter)
    ]  # fmt: skip
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(sample)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return fed


class AngularDistance(FromInitialWeights):
    """Logs `angular_distance` (radians; with `per_layer`, `angular_distance/<layer>`)."""

    name, fit_prefix = "angular_distance", "angular_diffusion"

    def check_data(self, datamodule) -> None:
        # a probe: the data module may be the user's own (README, "Extend lbtrain")
        if getattr(datamodule, "input_shape", None) is None:
            raise ValueError(
                f"callbacks.{self.name}: needs a data module with `input_shape` (fit with "
                "datamodule=...) to trace which weights feed a BatchNorm"
            )

    def start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_data(trainer.datamodule)
        model = uncompiled(pl_module.model)  # hooks: not compiled
        shape = trainer.datamodule.input_shape
        sample = torch.zeros(2, *shape, device=next(model.parameters()).device)
        fed = batchnorm_fed_weights(model, sample)
        named = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad and p in fed]
        if not named:  # e.g. model.norm=none: no scale-invariant weights, no angle to log
            log.warning("angular_distance: no weight of this model feeds a BatchNorm; off")
            self.enabled = False
            return
        self.track(named)
        self._v0 = self.w0 / self.w0.norm()  # unit vectors: the whole set, each layer
        self._v0_layer = self.w0 / self._layer_norms(self.w0)

    def _layer_norms(self, w: Tensor) -> Tensor:
        return self.weights.per_layer_sum(w.square()).sqrt()[self.weights.layer_index]

    def values(self, w: Tensor) -> Tensor:
        # the angle from w's parts along v_0 and across it: no cancellation at small angles,
        # where acos(u . v) loses half its digits, in 5 tensor ops
        along = torch.dot(w, self._v0)
        across = torch.addcmul(w, self._v0, along.neg()).norm()
        angle = torch.atan2(across, along).view(1)
        if not self.per_layer:
            return angle
        layers = _angle(w / self._layer_norms(w), self._v0_layer, self.weights.per_layer_sum)
        return torch.cat([angle, layers])


def _angle(u: Tensor, v: Tensor, total) -> Tensor:
    """The angles between the unit vectors in u and v, summed by `total` (over each layer),
    as 2 atan2(|u - v|, |u + v|): accurate for small angles, where acos(u . v) is not."""
    return 2 * torch.atan2(total((u - v).square()).sqrt(), total((u + v).square()).sqrt())
