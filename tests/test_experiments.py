"""Every Table 1 experiment composes with every recipe and trains a few steps on small
files written in its data set's real on-disk format."""

from importlib.resources import files

import pytest

from lbtrain.config.command_line import compose_config, group_options
from lbtrain.config.validate import validate
from lbtrain.train.fit import build

# the paper's experiments (the MNIST-1D sweeps have tests of their own)
EXPERIMENTS = [e for e in group_options("experiment") if not e.startswith("mnist1d_")]
RECIPES = group_options("recipe")
# what each recipe sets: (batch_size, ghost_batch_size) as base or large
RECIPE_BATCHES = {"sb": ("base", None), "lb": ("large", None), "lb_lr": ("large", None),
                  "lb_lr_gbn": ("large", "base"), "lb_lr_gbn_ra": ("large", "base"),
                  "lars": ("large", None), "grow": ("base", None),
                  "batch_aug": ("large", "base"), "warmup": ("base", "base")}  # fmt: skip
# what a recipe needs besides: the warmup's points (make critical-batch-online measures them)
RECIPE_NEEDS = {"warmup": ["batch_schedule_points=[[1,1024]]"]}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("recipe", RECIPES)
def test_every_experiment_composes_with_every_recipe(experiment, recipe, tmp_path):
    overrides = [f"experiment={experiment}", f"recipe={recipe}", *RECIPE_NEEDS.get(recipe, [])]
    cfg = compose_config(overrides, str(tmp_path))
    validate(cfg)
    sizes = {"base": cfg.optim.base_batch_size, "large": cfg.large_batch_size, None: None}
    batch, ghost = RECIPE_BATCHES[recipe]
    assert (cfg.batch_size, cfg.ghost_batch_size) == (sizes[batch], sizes[ghost])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_a_few_steps(
    experiment, tmp_path, request, mnist_dir, cifar10_dir, cifar100_dir, imagenet_dir,
    skip_cifar_md5,
):  # fmt: skip
    cfg = compose_config([f"experiment={experiment}"], str(tmp_path))
    data_dir = {"mnist": mnist_dir, "cifar10": cifar10_dir, "cifar100": cifar100_dir,
                "imagenet": imagenet_dir}[cfg.data.name]  # fmt: skip
    overrides = [
        f"experiment={experiment}", f"data.data_dir={data_dir}", "batch_size=4",
        "ghost_batch_size=2", "lr_scaling=sqrt", "data.eval_batch_size=4", "logger=csv",
        "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
    ]  # fmt: skip
    if cfg.data.name == "imagenet":
        overrides.append("data.num_workers=0")
    cfg = compose_config(overrides, str(tmp_path))
    validate(cfg)
    trainer, module, dm = build(cfg, tmp_path)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2
    assert "val/acc" in trainer.callback_metrics  # validation ran on the held-out set
    assert "GhostBatchNorm" in repr(module.model)


def documented_command(experiment: str) -> list[str]:
    """The sweep written in the experiment file's header, as its overrides."""
    text = (files("lbtrain.conf") / "experiment" / f"{experiment}.yaml").read_text()
    (line,) = [ln for ln in text.splitlines() if "python -m lbtrain.run -m" in ln]
    return line.split("python -m lbtrain.run -m", 1)[1].split()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_each_documented_row_runs_the_rule_and_clipping_it_names(experiment, tmp_path):
    overrides = documented_command(experiment)
    assert f"experiment={experiment}" in overrides
    sweep = dict(o.split("=", 1) for o in overrides)
    for recipe in sweep["recipe"].split(","):
        point = [o for o in overrides if not o.startswith(("recipe=", "seed="))]
        cfg = compose_config([*point, f"recipe={recipe}"], str(tmp_path))
        validate(cfg)
        if experiment == "resnet50_imagenet":  # Goyal et al.: linear rule, warmup, no clip
            assert cfg.optim.warmup == 5 and cfg.trainer.gradient_clip_val is None
            assert cfg.lr_scaling == "linear"
        else:  # the paper's runs clip the gradient norm at 5.0
            assert cfg.trainer.gradient_clip_val == 5.0
