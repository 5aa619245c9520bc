"""The optimizers a run can choose (`optim.optimizer`): SGD and AdamW from torch, LARS and LAMB
from timm (Apache-2.0), each built from one `OptimizerSpec`.

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

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.normalization import GroupNorm, LayerNorm

from lbtrain.scaling import RULES

LAYERWISE = ("lars", "lamb")  # trust-ratio optimizers: norm and bias excluded by default


@dataclass(frozen=True)
class OptimizerSpec:
    name: str = "sgd"
    momentum: float = 0.9  # sgd, lars
    nesterov: bool = False  # sgd, lars
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)  # adamw, lamb (after the LR scaling rule)
    eps: float = 1e-8  # adamw, lamb (after the LR scaling rule)
    trust_coeff: float = 0.001  # lars
    max_grad_norm: float | None = None  # lamb: its global gradient-norm clip
    exclude_norm_and_bias: bool = False  # norm parameters and biases: no decay, no adaptation

    def build(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        groups = param_groups(model, self.weight_decay, self.exclude_norm_and_bias)
        if self.name == "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=self.momentum, nesterov=self.nesterov)
        if self.name == "adamw":
            return torch.optim.AdamW(groups, lr=lr, betas=self.betas, eps=self.eps)
        from timm.optim import Lamb, Lars  # imported here: timm's import costs a second

        if self.name == "lars":
            return Lars(
                groups, lr=lr, momentum=self.momentum, nesterov=self.nesterov,
                trust_coeff=self.trust_coeff,
            )  # fmt: skip
        if self.name == "lamb":
            return Lamb(groups, lr=lr, betas=self.betas, eps=self.eps,
                        max_grad_norm=self.max_grad_norm)  # fmt: skip
        raise ValueError(f"optim.optimizer={self.name}: use one of {', '.join(RULES)}")


def is_norm_or_bias(module: nn.Module, name: str) -> bool:
    return name == "bias" or isinstance(module, _BatchNorm | LayerNorm | GroupNorm)


def param_groups(model: nn.Module, weight_decay: float, exclude_norm_and_bias: bool) -> list[dict]:
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
