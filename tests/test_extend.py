"""A model, a data module and an experiment of your own, from outside the package, trained
by `python -m lbtrain.run` exactly as the README's "Extend lbtrain" shows."""

import json
import sys
import textwrap

import torch

MY_EXT = '''
import math

import lightning as L
import torch
from torch import nn

from lbtrain.measure.step_series import StepSeries
from lbtrain.data import register_datamodule
from lbtrain.data.in_memory import InMemoryLoader
from lbtrain.models import register_model
from lbtrain.train.optimizers import register_optimizer


@register_optimizer(lr_rules=("none", "sqrt"))  # optim.optimizer=rmsprop
def rmsprop(groups, lr, spec, alpha=0.99):
    return torch.optim.RMSprop(groups, lr=lr, alpha=alpha, momentum=spec.momentum)


class GradNorm(StepSeries):  # the README's example of a measurement of your own
    name, fit_prefix = "grad_norm", None

    def measure(self, pl_module):
        grads = [p.grad.norm() for p in pl_module.parameters() if p.grad is not None]
        return torch.stack(grads).norm().view(1)


@register_model
def tiny_mlp(num_classes, input_shape, width=16):
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(input_shape), width, bias=False),
        nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, num_classes),
    )


@register_datamodule("blobs")
class Blobs(L.LightningDataModule):
    """Three Gaussian blobs in the plane, 4 units apart."""

    num_classes, input_shape = 3, (2,)

    def __init__(self, batch_size, shuffle_seed=0, num_samples=600):
        super().__init__()
        self.batch_size, self.seed = batch_size, shuffle_seed
        g = torch.Generator().manual_seed(0)
        y = torch.arange(num_samples) % 3
        centres = torch.tensor([[0.0, 4.0], [4.0, 0.0], [-4.0, -4.0]])
        x = centres[y] + torch.randn(num_samples, 2, generator=g)
        split = num_samples * 2 // 3
        self.train, self.val = (x[:split], y[:split]), (x[split:], y[split:])

    def train_dataloader(self):
        return InMemoryLoader.for_trainer(self.trainer, *self.train, self.batch_size,
                                          train=True, seed=self.seed)

    def val_dataloader(self):
        return InMemoryLoader.for_trainer(self.trainer, *self.val, 200, train=False,
                                          seed=self.seed)
'''

CONFIGS = {
    "model/tiny_mlp.yaml": "name: tiny_mlp\nwidth: 16\n",
    "data/blobs.yaml": "name: blobs\nnum_samples: 600\n",
    "experiment/blobs_rmsprop.yaml": """\
        # @package _global_
        defaults:
          - blobs
        optim:
          optimizer: rmsprop
          lr: 0.01
          options: {alpha: 0.9}
        """,
    "experiment/blobs.yaml": """\
        # @package _global_
        defaults:
          - override /data: blobs
          - override /model: tiny_mlp
        imports: [my_ext]
        optim:
          lr: 0.1
          base_batch_size: 20
          milestones: [3]
        trainer:
          max_epochs: 4
        """,
}


def write_extension(where, module: str) -> None:
    """my_ext.py and my_conf/ in `where`, as the README's "Extend lbtrain" lays them out."""
    (where / "my_ext.py").write_text(module)
    for name, text in CONFIGS.items():
        path = where / "my_conf" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_your_model_data_and_experiment_train_through_the_cli(cli, tmp_path):
    write_extension(tmp_path, MY_EXT)
    result = cli("hydra.searchpath=[file://my_conf]", "experiment=blobs", "logger=csv",
                 "batch_size=40", "lr_scaling=sqrt", "ghost_batch_size=20",
                 "+callbacks.grad_norm._target_=my_ext.GradNorm")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 4 * 10  # 400 training samples in batches of 40
    assert summary["val/acc"] > 0.9  # the blobs are separable: it learnt
    assert summary["plan"]["ghost_batch_size"] == 20
    assert summary["grad_norm"] > 0  # your measurement: logged every step, summarised
    log = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    assert "grad_norm" in log[0].split(",") and "angular_distance" in log[0].split(",")

    unknown = cli("hydra.searchpath=[file://my_conf]", "model=tiny_mlp", "imports=[nope]")
    assert unknown.returncode == 2
    assert "imports=[nope]: no module named 'nope'" in unknown.stderr


def test_your_optimizer_and_its_options_from_your_config_dir(cli, cli_in_process, tmp_path,
                                                            monkeypatch):  # fmt: skip
    """An optimizer of your own (`@register_optimizer`), chosen with its options in your
    experiment config: the run's checkpoint holds that optimizer with those options; an
    option it does not take, and a scaling rule it did not register, are refused."""
    from lbtrain.data import DATAMODULES
    from lbtrain.models import MODELS
    from lbtrain.train.optimizers import OPTIMIZERS

    write_extension(tmp_path, MY_EXT)
    given = ["hydra.searchpath=[file://my_conf]", "experiment=blobs_rmsprop", "logger=none"]
    result = cli(*given, "trainer.max_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "runs").iterdir()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    (group,) = checkpoint["optimizer_states"][0]["param_groups"]
    assert group["alpha"] == 0.9 and group["lr"] == 0.01 and group["momentum"] == 0.9
    assert "square_avg" in checkpoint["optimizer_states"][0]["state"][0]  # RMSprop's own

    # the refusals in this process (a second each, not ten); my_ext's registrations undone after
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_ext", raising=False)
    for registry in (DATAMODULES, MODELS, OPTIMIZERS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "facts", dict(registry.facts))
    refused = cli_in_process(*given, "+optim.options.betas=[0.9,0.99]")
    assert refused.returncode == 2
    assert "optim.options.betas: optim.optimizer=rmsprop has no such option" in refused.stderr
    linear = cli_in_process(*given, "lr_scaling=linear")
    assert linear.returncode == 2
    assert "lr_scaling=linear: has no defined rule for optim.optimizer=rmsprop" in linear.stderr


def test_a_config_and_an_extension_from_before_the_layout_still_run(cli, tmp_path):
    """0.1's module names (a callback's `_target_`, an extension's import) keep working for one
    release, each with a FutureWarning naming the new place; and a checkpoint holds no lbtrain
    class (it loads with weights_only=True), so moving modules cannot break loading one."""
    old = MY_EXT.replace("lbtrain.measure.step_series", "lbtrain.callbacks.step_series")
    write_extension(tmp_path, old)
    result = cli("hydra.searchpath=[file://my_conf]", "experiment=blobs", "logger=csv",
                 "callbacks.weight_distance._target_=lbtrain.callbacks.weight_distance.WeightDistance",
                 "+callbacks.grad_norm._target_=my_ext.GradNorm")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for old, new in (("callbacks.step_series", "measure.step_series"),
                     ("callbacks.weight_distance", "measure.weight_distance")):  # fmt: skip
        assert f"lbtrain.{old} is now lbtrain.{new}" in result.stderr
    (run_dir,) = (tmp_path / "logs" / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["grad_norm"] > 0 and summary["weight_distance"] > 0
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == summary["global_step"]


def test_a_name_of_the_old_config_module_still_imports():
    """0.1's `lbtrain.config` was one module; its functions import from the package for one
    release, with a FutureWarning naming the new module."""
    import pytest

    from lbtrain.config.command_line import compose_config

    with pytest.warns(FutureWarning, match=r"lbtrain.config.compose_config is now lbtrain\.config"
                      r"\.command_line\.compose_config"):  # fmt: skip
        from lbtrain.config import compose_config as old
    assert old is compose_config
    with pytest.raises(ImportError):
        from lbtrain.config import no_such_name  # noqa: F401


def test_an_old_module_name_is_the_new_module_with_its_own_spec():
    """The old name gives the module at its new path, unchanged (its spec too: a reload or
    importlib.resources reads it), and the warning points at the line that named it."""
    import importlib
    import sys

    import pytest

    sys.modules.pop("lbtrain.stability", None)
    with pytest.warns(
        FutureWarning, match="lbtrain.stability is now lbtrain.measure.stability"
    ) as w:
        import lbtrain.stability as old
    import lbtrain.measure.stability as new

    assert old is new and new.__spec__.name == "lbtrain.measure.stability"
    assert importlib.reload(new).__name__ == "lbtrain.measure.stability"
    assert w[0].filename == __file__
