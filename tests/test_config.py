"""Every option of every config group composes into a config that passes validation."""

from importlib.resources import files

import pytest
from omegaconf import DictConfig, OmegaConf

from lbtrain.config import resolvers
from lbtrain.config.command_line import compose_config, group_options
from lbtrain.config.validate import GROUPS, validate
from lbtrain.models import list_models

OPTIONS = [(g, o) for g in GROUPS for o in group_options(g)]


def compose_run(overrides: list[str], tmp_path) -> DictConfig:
    return compose_config(overrides, str(tmp_path))


# what an option needs besides: the warmup's points (make critical-batch-online measures them)
# and a branch's base run (its files are checked as the run is built)
NEEDS = {
    ("recipe", "warmup"): ["batch_schedule_points=[[1,64]]"],
    ("experiment", "mnist1d_cbs_branch"): ["branch.base_run=base", "branch.step=25"],
}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes_and_validates(group, option, tmp_path):
    validate(compose_run([f"{group}={option}", *NEEDS.get((group, option), [])], tmp_path))


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_is_selectable_by_its_name(name, tmp_path):
    cfg = compose_run([f"model={name}"], tmp_path)
    validate(cfg)
    assert cfg.model.name == name


def test_every_model_config_names_a_registered_model():
    assert set(group_options("model")) == set(list_models())


def test_default_run_is_the_small_batch_column(tmp_path):
    cfg = compose_run([], tmp_path)
    assert cfg.batch_size == cfg.optim.base_batch_size
    assert (cfg.lr_scaling, cfg.ghost_batch_size, cfg.regime) == ("none", None, "fixed")
    assert set(cfg.logger) == {"csv", "wandb"}


def test_wandb_goes_online_only_when_configured(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NETRC", raising=False)
    assert resolvers.wandb_mode() == "offline"
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert resolvers.wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolvers.wandb_mode() == "disabled"


def test_slurm_launcher_maps_devices_and_nodes_to_tasks_gpus_and_nodes():
    from hydra import compose, initialize_config_module

    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2"]
    with initialize_config_module("lbtrain.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (8, 8, 2)
    assert launcher.signal_delay_s == 120  # SIGUSR1 (see lbtrain/__init__.py) before the limit


def test_every_setting_has_one_default_in_the_yaml():
    """The schemas hold types only: a default there would be a second one, free to differ
    from the YAML's (RunSchema once said large_batch_size=4096 where train.yaml says 1024)."""
    import dataclasses

    from omegaconf import MISSING

    from lbtrain.config.validate import OptimSchema, RunSchema, TrainerSchema

    for schema in (RunSchema, OptimSchema, TrainerSchema):
        for f in dataclasses.fields(schema):
            if f.default_factory in (OptimSchema, TrainerSchema):
                continue  # a nested schema: its own fields are checked
            assert f.default == MISSING, f"{schema.__name__}.{f.name} has a default: {f.default!r}"


def test_a_key_missing_from_the_config_is_named_in_one_line(tmp_path):
    from omegaconf import OmegaConf, open_dict

    from lbtrain.errors import ConfigError

    for key in ("optim.eps", "large_batch_size", "trainer.accumulate_grad_batches"):
        cfg = compose_run([], tmp_path)
        parent, _, leaf = key.rpartition(".")
        with open_dict(cfg):
            del (OmegaConf.select(cfg, parent) if parent else cfg)[leaf]
        with pytest.raises(ConfigError, match=f"^{key}: missing from the config"):
            validate(cfg)


def test_a_constructor_default_never_differs_from_its_config():
    """Models and data modules keep keyword defaults for Python callers (tests, notebooks);
    each one that a config in conf/ sets must be the config's value, or the YAML would not
    be the one place a default is decided (change `hidden` in model/mlp.yaml: this fails)."""
    import inspect

    from lbtrain.data import DATAMODULES
    from lbtrain.models import MODELS

    conf = files("lbtrain.conf")
    for group, registry in (("data", DATAMODULES), ("model", MODELS)):
        for path in (conf / group).iterdir():
            config = OmegaConf.load(path)
            signature = inspect.signature(registry[config.name])
            for key, p in signature.parameters.items():
                if key in config and p.default is not inspect.Parameter.empty:
                    value = config[key]
                    value = list(value) if isinstance(p.default, tuple | list) else value
                    default = list(p.default) if isinstance(p.default, tuple) else p.default
                    where = f"{group}/{path.name}: {key}={value}"
                    assert value == default, f"{where}, constructor default {default}"


def test_a_callback_setting_has_one_home_its_yaml(tmp_path):
    """Every callback in conf/callbacks/ is built from its entry, and a key the entry sets has
    no second value in lbtrain's constructor. The measurements the README switches on alone
    (`+callbacks.sharpness._target_=...`, no other key) keep defaults: each the YAML's."""
    import inspect

    from hydra.utils import instantiate

    alone = {"noise_scale", "batch_sharpness", "sharpness"}
    for path in (files("lbtrain.conf") / "callbacks").iterdir():
        entries = OmegaConf.load(path) or {}
        for name, entry in entries.items():
            if name == "defaults":
                continue
            if "dirpath" in entry:  # ${hydra:runtime.output_dir}/... outside a Hydra run
                entry.dirpath = str(tmp_path)
            cls = type(instantiate(entry))
            if not cls.__init__.__module__.startswith("lbtrain."):
                continue  # Lightning's own (LearningRateMonitor): its defaults are no copy
            for key, p in inspect.signature(cls).parameters.items():
                if key in entry and p.default is not inspect.Parameter.empty:
                    where = f"callbacks/{path.name}: {name}.{key}={entry[key]}"
                    assert name in alone, f"{where}, and a constructor default {p.default!r}"
                    assert p.default == entry[key], f"{where}, constructor default {p.default!r}"


def test_threads_default_to_half_the_cores_unless_the_environment_or_the_key_says(monkeypatch):
    """torch's default, every core, stalls beside one busy process (bench_threads.py)."""
    import os

    import torch

    from lbtrain.launch.distributed import set_threads

    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        for key in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
            monkeypatch.delenv(key, raising=False)
        assert set_threads("auto").startswith(f"torch threads: {max(1, cores // 2)} (threads=auto")
        assert torch.get_num_threads() == max(1, cores // 2)
        monkeypatch.delenv("OMP_NUM_THREADS")  # set_threads sets it, for the ranks it starts
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
        assert set_threads("auto").startswith("torch threads: 3 (SLURM_CPUS_PER_TASK=3;")
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own, first
        assert set_threads("auto").startswith("torch threads: 2 (OMP_NUM_THREADS=2;")
        assert set_threads(1).startswith("torch threads: 1 (threads=1;")  # the key, above all
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
