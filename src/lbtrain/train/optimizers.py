"""The optimizer registry (`optim.optimizer`): SGD and AdamW from torch, LARS and LAMB from
timm (Apache-2.0). Each is a builder `fn(groups, lr, spec, **options)` registered with the
LR scaling rules it has; `optim.options` passes further keyword arguments to it (e.g.
`+optim.options.dampening=0.1` for SGD), and your own register the same way (README,
"Extend lbtrain"). torch and timm are imported when an optimizer is built, so that the
config can be checked against this registry before they load.

Layer-wise adaptation, as in You et al. 2017 (LARS) and 2019 (LAMB): each layer's update is
rescaled by a trust ratio ||w|| / ||update||, for LARS trust_coeff * ||w|| / (||g|| + wd ||w||).
Two of timm's defaults would change what a run measures, so lbtrain sets them:
- timm adapts (and decays) only parameters whose group has weight decay. With
  `exclude_norm_and_bias` (the LARS paper's choice, and lbtrain's default for LARS and LAMB)
  the BatchNorm parameters and every bias form a group without weight decay, so they are
  neither decayed nor adapted: plain SGD / Adam steps.
- timm's LAMB clips the global gradient norm at 1.0 by default; here that is
  `max_grad_norm`, off (null) unless asked for, as `trainer.gradient_clip_val` is.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from lbtrain.config.registry import Registry
from lbtrain.errors import unexpected_option
from lbtrain.measure.stability import adam_threshold, sgd_threshold

OPTIMIZERS = Registry("optim.optimizer")
SGD_RULES = ("none", "linear", "sqrt")
# Adam-style moments have no linear rule, and their sqrt rule scales more than the LR
ADAM_RULES = ("none", "sqrt")


def register_optimizer(
    name=None,
    *,
    lr_rules=SGD_RULES,
    adaptive=False,
    layerwise=False,
    decoupled_decay=False,
    threshold=None,
):
    """`lr_rules`: the `lr_scaling` values the optimizer has; `adaptive`: Adam-style moments
    (optim.betas, optim.eps and optim.adam_rule apply); `layerwise`: trust ratios
    (optim.exclude_norm_and_bias defaults to true); `decoupled_decay`: each step shrinks the
    weights by lr x weight_decay, so they are an EMA of timescale 1 / (lr wd) (AdamW);
    `threshold`: its edge of stability, a function of a param group (lbtrain/measure/stability.py),
    None where none is known."""
    return OPTIMIZERS.register(name, lr_rules=lr_rules, adaptive=adaptive, layerwise=layerwise,
                               decoupled_decay=decoupled_decay, threshold=threshold)  # fmt: skip


@register_optimizer(threshold=sgd_threshold)
def sgd(groups, lr, spec, **options):
    import torch

    return torch.optim.SGD(groups, lr=lr, momentum=spec.momentum, nesterov=spec.nesterov,
                           **options)  # fmt: skip


@register_optimizer(layerwise=True)
def lars(groups, lr, spec, **options):
    from timm.optim import Lars  # imported here: timm's import costs a second

    return Lars(groups, lr=lr, momentum=spec.momentum, nesterov=spec.nesterov,
                trust_coeff=spec.trust_coeff, **options)  # fmt: skip


# lr_scaling=sqrt: Malladi et al. 2022's rule, lr, beta1, beta2 and eps (plan.adam_sqrt_rule)
@register_optimizer(
    lr_rules=ADAM_RULES, adaptive=True, decoupled_decay=True, threshold=adam_threshold
)
def adamw(groups, lr, spec, **options):
    import torch

    return torch.optim.AdamW(groups, lr=lr, betas=spec.betas, eps=spec.eps, **options)


# lr_scaling=sqrt: You et al. 2019 scale LAMB's LR by sqrt(B), with warmup
@register_optimizer(lr_rules=ADAM_RULES, adaptive=True, layerwise=True)
def lamb(groups, lr, spec, **options):
    from timm.optim import Lamb

    return Lamb(groups, lr=lr, betas=spec.betas, eps=spec.eps, max_grad_norm=spec.max_grad_norm,
                **options)  # fmt: skip


@dataclass(frozen=True)
class OptimizerSpec:
    """One run's optimizer settings: `optim` as the config gives them, with the betas, eps and
    weight decay the plan's rules set."""

    optimizer: str
    momentum: float  # sgd, lars
    nesterov: bool  # sgd, lars
    weight_decay: float
    betas: tuple[float, float]  # adamw, lamb
    eps: float  # adamw, lamb
    trust_coeff: float  # lars
    max_grad_norm: float | None  # lamb: its global gradient-norm clip
    exclude_norm_and_bias: bool | None  # None: the optimizer's default (true if layer-wise)
    options: dict = field(default_factory=dict)  # more keyword arguments to the optimizer

    @classmethod
    def from_config(cls, optim, plan=None) -> "OptimizerSpec":
        """From the config's `optim` (any mapping); the plan, when given, brings the betas,
        eps and weight decay its rules set."""
        values = {f.name: optim[f.name] for f in fields(cls)}
        if plan:
            values |= {"betas": plan.betas, "eps": plan.eps, "weight_decay": plan.weight_decay}
        return cls(**values | {"betas": tuple(values["betas"]), "options": dict(values["options"])})

    def build(self, model, lr: float):
        exclude = self.exclude_norm_and_bias  # None: as the optimizer is, layer-wise or not
        exclude = OPTIMIZERS.facts[self.optimizer]["layerwise"] if exclude is None else exclude
        groups = param_groups(model, self.weight_decay, exclude)
        try:
            return OPTIMIZERS[self.optimizer](groups, lr, self, **self.options)
        except TypeError as e:  # an option it does not take, or one lbtrain passes itself
            if (option := unexpected_option(e)) is not None:
                raise ValueError(f"optim.options.{option}: optim.optimizer={self.optimizer} "
                                  "has no such option") from None  # fmt: skip
            match = re.search(r"got multiple values for (?:keyword )?argument '(\w+)'", str(e))
            if match and match.group(1) in self.options:
                key = match.group(1)
                raise ValueError(f"optim.options.{key}={self.options[key]}: lbtrain passes "
                                  f"{key} itself; set optim.{key} instead") from None  # fmt: skip
            raise


def stability_threshold(optimizer: str, group: dict) -> tuple[Callable | None, str | None]:
    """An optimizer's edge-of-stability threshold (a function of a param group) and what it
    bounds, "hessian" or "preconditioned", from `group`; (None, None) where none is known
    (LARS, LAMB, yours)."""
    threshold = OPTIMIZERS.facts[optimizer]["threshold"]
    return threshold, threshold(group)[1] if threshold else None


def is_norm_or_bias(module, name: str) -> bool:
    from torch.nn import GroupNorm, LayerNorm
    from torch.nn.modules.batchnorm import _BatchNorm

    return name == "bias" or isinstance(module, _BatchNorm | LayerNorm | GroupNorm)


def param_groups(model, weight_decay: float, exclude_norm_and_bias: bool) -> list[dict]:
    """One group with `weight_decay`; with `exclude_norm_and_bias`, the normalisation layers'
    parameters and all biases in a second group without it (timm's LARS and LAMB then leave
    that group unadapted)."""
    decay, plain, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:  # a shared parameter: once
                seen.add(id(p))
                excluded = exclude_norm_and_bias and is_norm_or_bias(module, name)
                (plain if excluded else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    return groups + ([{"params": plain, "weight_decay": 0.0}] if plain else [])
