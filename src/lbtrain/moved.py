"""Old module names, kept for one release (0.2: the layout of folders by layer).

A config or extension that names a module by its old path (a callback's `_target_`, say
`lbtrain.callbacks.noise_scale.NoiseScale`) gets the module at its new path, once, with one
FutureWarning naming both. Checkpoints hold no lbtrain class (torch's, collections' and plain
values: a test loads one with `weights_only=True`), so the move does not reach them."""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# fmt: off
MOVED = {  # old -> new, under lbtrain. (lbtrain.config is a package now: its names moved too)
    "resolvers": "config.resolvers", "registry": "config.registry",
    "run_dir": "launch.run_dir", "hydra_callbacks": "launch.hydra_callbacks",
    "distributed": "launch.distributed", "notices": "launch.notices",
    "training": "train.fit", "module": "train.module", "scaling": "train.plan",
    "batch_schedule": "train.batch_schedule", "optimizers": "train.optimizers", "gbn": "train.gbn",
    "branch": "train.branch", "steps": "train.steps", "loggers": "train.loggers",
    "callbacks.step_series": "measure.step_series", "noise_scale": "measure.noise_scale",
    "callbacks.noise_scale": "measure.noise_scale_callback", "sharpness": "measure.sharpness",
    "callbacks.sharpness": "measure.sharpness_callback",
    "callbacks.batch_sharpness": "measure.batch_sharpness",
    "callbacks.angular_distance": "measure.angular_distance",
    "callbacks.weight_distance": "measure.weight_distance", "stability": "measure.stability",
    "diffusion": "measure.diffusion", "critical_batch": "report.critical_batch",
}
# 0.1's lbtrain.config module (a package now): its public names -> the module they are in
CONFIG_NAMES = {
    **dict.fromkeys(("compose_config", "check_overrides", "group_options", "config_dirs",
                     "import_extensions"), "command_line"),
    **dict.fromkeys(("GROUPS", "ADDED_KEYS", "MAPPINGS", "check_mappings", "check_registered",
                     "RunSchema", "OptimSchema", "TrainerSchema", "TOPICS"), "validate"),
}
# fmt: on


class OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `lbtrain.<old>` as the module now at `lbtrain.<new>`."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname.removeprefix("lbtrain.")
        if old == fullname or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = "lbtrain." + MOVED[spec.name.removeprefix("lbtrain.")]
        warn(spec.name, new, stacklevel=3)
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__  # the import system sets the old name's next
        return module

    def exec_module(self, module):
        """The module at the new path ran already: it keeps its own spec (a reload, resources)."""
        module.__spec__ = module.__spec__.loader_state


def warn(old: str, new: str, stacklevel: int) -> None:
    """One FutureWarning, at the line that named `old` (`stacklevel` frames up from here)."""
    warnings.warn(f"{old} is now {new}; the old name goes in the next release (README, Layout)",
                  FutureWarning, stacklevel=stacklevel)  # fmt: skip


def old_config_name(name: str):
    """A name of 0.1's `lbtrain.config` module, from the module of `lbtrain.config` it is in now
    (any other name, a submodule's too, is not: Python then imports the submodule)."""
    if name not in CONFIG_NAMES:
        raise AttributeError(f"module 'lbtrain.config' has no attribute {name!r}")
    new = f"lbtrain.config.{CONFIG_NAMES[name]}"
    warn(f"lbtrain.config.{name}", f"{new}.{name}", stacklevel=4)
    return getattr(importlib.import_module(new), name)


def install() -> None:
    if not any(isinstance(f, OldNames) for f in sys.meta_path):
        sys.meta_path.append(OldNames())
