"""LARS and LAMB (timm) as lbtrain builds them: each layer's step against the papers'
formulas computed by hand, BatchNorm and bias parameters neither decayed nor adapted; and
the square-root rule for AdamW (Malladi et al. 2022)."""

import json
import logging
from importlib.resources import files

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from lbtrain.config.command_line import compose_config
from lbtrain.train.fit import build
from lbtrain.train.optimizers import OptimizerSpec


def two_layers() -> tuple[nn.Module, dict]:
    """Linear -> BatchNorm -> ReLU -> Linear, one backward on fixed data; returns the model
    (gradients in .grad) and a copy of every parameter and gradient before the step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    F.cross_entropy(model(x), y).mul(100).backward()  # |g| well above 1: a clip would show
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in model.named_parameters()}
    return model, before


def optimizer(name: str, **settings) -> OptimizerSpec:
    """The default config's optimizer settings (conf/train.yaml, the MNIST-1D regime), with
    `optim.optimizer=name` and these changed; exclude_norm_and_bias as the default (null)."""
    conf = files("lbtrain.conf")
    optim = OmegaConf.merge(OmegaConf.load(conf / "train.yaml").optim,
                            OmegaConf.load(conf / "optim" / "mnist1d.yaml"))  # fmt: skip
    return OptimizerSpec.from_config({**optim, "optimizer": name, **settings})


NORM_AND_BIAS = ("0.bias", "1.weight", "1.bias", "3.bias")
WEIGHTS = ("0.weight", "3.weight")


def test_lars_scales_each_weight_by_its_trust_ratio_and_leaves_norm_and_bias_alone():
    model, before = two_layers()
    lr, wd, eta = 0.5, 5e-4, 0.001
    spec = optimizer("lars", momentum=0.9, weight_decay=wd, trust_coeff=eta)
    spec.build(model, lr).step()
    after = dict(model.named_parameters())
    for name in WEIGHTS:  # You et al. 2017: local lr = eta ||w|| / (||g|| + wd ||w||)
        w, g = before[name]
        trust = eta * w.norm() / (g.norm() + wd * w.norm())
        expected = w - lr * trust * (g + wd * w)  # first step: the momentum buffer is the step
        assert torch.allclose(after[name], expected, rtol=1e-5, atol=1e-7), name
    for name in NORM_AND_BIAS:  # plain SGD: no decay, no trust ratio
        w, g = before[name]
        assert torch.allclose(after[name], w - lr * g, rtol=1e-5, atol=1e-7), name


def test_lamb_takes_adams_step_times_the_layers_trust_ratio_without_clipping_the_gradient():
    model, before = two_layers()
    lr, wd, eps = 0.01, 0.01, 1.0  # eps of the size of the gradients: a global clip would show
    spec = optimizer("lamb", weight_decay=wd, betas=(0.9, 0.999), eps=eps)
    spec.build(model, lr).step()
    after = dict(model.named_parameters())
    for name, (w, g) in before.items():
        adam = g / (g.abs() + eps)  # first step, bias-corrected: m = g, v = g^2
        if name in WEIGHTS:  # You et al. 2019: r = ||w|| / ||adam + wd w||
            update = adam + wd * w
            expected = w - lr * (w.norm() / update.norm()) * update
        else:
            expected = w - lr * adam
        assert torch.allclose(after[name], expected, rtol=1e-5, atol=1e-7), name


def test_adamw_under_the_sqrt_rule_scales_lr_betas_and_eps(tmp_path, data_dir):
    """Batch 128 over the base 32: kappa 4, lr x 2, 1 - beta x 4, eps / 2 (Malladi et al.)."""
    cfg = compose_config(
        ["optim.optimizer=adamw", "lr_scaling=sqrt", "batch_size=128", "optim.lr=0.001",
         "optim.betas=[0.95,0.999]", "optim.eps=1e-8", f"paths.data_dir={data_dir}",
         "trainer.max_epochs=1", "trainer.limit_train_batches=2", "logger=csv"],
        str(tmp_path),
    )  # fmt: skip
    trainer, module, dm = build(cfg, tmp_path)
    trainer.fit(module, datamodule=dm)
    (group,) = trainer.optimizers[0].param_groups
    assert isinstance(trainer.optimizers[0], torch.optim.AdamW)
    assert group["betas"] == pytest.approx((0.8, 0.996))
    assert group["eps"] == pytest.approx(5e-9)
    assert group["initial_lr"] == pytest.approx(0.002)
    plan = json.loads((tmp_path / "summary.json").read_text())["plan"]
    assert plan["betas"] == pytest.approx([0.8, 0.996]) and plan["eps"] == pytest.approx(5e-9)


def test_the_halflife_rule_and_a_fixed_timescale_reach_adamws_param_groups(
    tmp_path, data_dir, caplog
):
    """Batch 128 over the base 32, kappa 4, lr unscaled: Marek et al.'s beta2 ** 4 with beta1
    and eps as given; the weight decay x 4 so that the weights' EMA timescale in epochs,
    B / (N lr wd) (Wang & Aitchison), is the base regime's 32 / (N lr wd0)."""
    cfg = compose_config(
        ["optim.optimizer=adamw", "batch_size=128", "optim.lr=0.001", "optim.weight_decay=0.05",
         "optim.betas=[0.9,0.99]", "optim.adam_rule=halflife", "optim.fixed_timescale=true",
         f"paths.data_dir={data_dir}", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "logger=csv"],
        str(tmp_path),
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="lbtrain"):
        trainer, module, dm = build(cfg, tmp_path)
        trainer.fit(module, datamodule=dm)
    decayed = trainer.optimizers[0].param_groups[0]
    assert decayed["betas"] == pytest.approx((0.9, 0.99**4))
    assert decayed["eps"] == 1e-8 and decayed["initial_lr"] == 0.001
    assert decayed["weight_decay"] == pytest.approx(0.2)
    plan = json.loads((tmp_path / "summary.json").read_text())["plan"]
    assert plan["timescale_steps"] == pytest.approx(1 / (0.001 * 0.2))
    assert plan["timescale_epochs"] == pytest.approx(32 / (module.num_train * 0.001 * 0.05))
    assert "beta2 0.99 ** (128/32) = 0.960596" in caplog.text
    assert "weight decay 0.05 x 128/32 x 0.001/0.001 = 0.2" in caplog.text
