"""Every private Lightning attribute lbtrain reads or writes, named here and nowhere else, and
torch's one (`torch.compile`'s wrapper keeps the model it compiled as `_orig_mod`) and
wandb-workspaces' one (a view's serialised model, which `lbtrain.dashboard --dry-run` prints).

Each use checks that the attribute is there: if a Lightning release renames or removes one,
lbtrain raises `LightningChanged` naming it instead of carrying on without it (a renamed
`_hydra_subprocess_cmd` would otherwise make every DDP rank re-run the whole sweep, silently).
`tests/test_lightning_internals.py` checks each against the installed Lightning.
"""

import csv

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import subprocess_script

# (owner, attribute): what lbtrain relies on, and why
RANK_COMMAND = (subprocess_script, "_hydra_subprocess_cmd")  # DDP's re-launch of a Hydra app
UPDATES = "_batches_that_stepped"  # fit_loop.epoch_loop: the updates done, as logged
LOGGER_CONNECTOR = "_logger_connector"  # Trainer: its `should_update_logs` gate
LR_STATS = (LearningRateMonitor, "_extract_stats")  # the monitored LRs of this step
CHECK_LOG_DIR = (ExperimentWriter, "_check_log_dir_exists")  # deletes an old metrics.csv
CSV_EXPERIMENT = "_experiment"  # CSVLogger: its writer, made on first use
CSV_FS = "_fs"  # CSVLogger and its writer: the filesystem they write through
WANDB_INIT = "_wandb_init"  # WandbLogger: the arguments of its wandb.init call
DDP_COMM_HOOK = "_ddp_comm_hook"  # DDPStrategy: the communication hook it will register
COMPILED = "_orig_mod"  # torch.compile's OptimizedModule: the module it compiled
WORKSPACE_MODEL = "_to_model"  # wandb_workspaces' Workspace/Report: the model it would send


class LightningChanged(RuntimeError):
    """An internal lbtrain relies on is gone from the installed Lightning (or torch, or
    wandb-workspaces)."""


def private(owner, name: str):
    """`owner`'s private attribute `name`; LightningChanged where it is gone."""
    if not hasattr(owner, name):
        where = getattr(owner, "__name__", type(owner).__name__)
        raise LightningChanged(
            f"{where}.{name} is gone from the installed package, and lbtrain relies on it "
            "(lbtrain/lightning_internals.py); install a Lightning that pyproject.toml admits"
        )
    return getattr(owner, name)


def replace_rank_command(command) -> None:
    """Lightning starts extra DDP ranks of a Hydra app with `_hydra_subprocess_cmd`'s command."""
    private(*RANK_COMMAND)
    setattr(*RANK_COMMAND, command)


def updates_logged(trainer: Trainer) -> int:
    """Lightning's logging step: the optimizer updates done, as its loggers count them."""
    return private(trainer.fit_loop.epoch_loop, UPDATES)


def set_updates_logged(trainer: Trainer, step: int) -> None:
    private(trainer.fit_loop.epoch_loop, UPDATES)
    setattr(trainer.fit_loop.epoch_loop, UPDATES, step)


def logs_this_step(trainer: Trainer) -> bool:
    """Whether Lightning logs at this step (`trainer.log_every_n_steps`)."""
    return private(trainer, LOGGER_CONNECTOR).should_update_logs


def monitored_lrs(monitor: LearningRateMonitor, trainer: Trainer, interval: str) -> dict:
    private(*LR_STATS)  # Lightning's class has it, or the installed one changed
    return getattr(monitor, LR_STATS[1])(trainer, interval)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that it keeps an existing metrics.csv and its columns."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


def appending_csv_writer(logger: CSVLogger) -> ExperimentWriter:
    """The logger's writer, made on first use as Lightning makes it, but appending."""
    private(*CHECK_LOG_DIR)  # what _AppendingWriter overrides
    if private(logger, CSV_EXPERIMENT) is None:
        private(logger, CSV_FS).makedirs(logger.root_dir, exist_ok=True)
        setattr(logger, CSV_EXPERIMENT, _AppendingWriter(log_dir=logger.log_dir))
    return getattr(logger, CSV_EXPERIMENT)


def drop_unset_wandb_init_arg(logger: WandbLogger, key: str) -> None:
    """Leave `key` out of the logger's wandb.init call where Lightning passes it as None."""
    init = private(logger, WANDB_INIT)
    if key in init and init[key] is None:
        del init[key]


def ddp_comm_hook(strategy):
    """The communication hook a DDP strategy will register (None: none, or not DDP)."""
    if not isinstance(strategy, DDPStrategy):
        return None
    return private(strategy, DDP_COMM_HOOK)


def uncompiled(model):
    """The model `torch.compile` wrapped (its parameters, its hooks), or `model` itself."""
    return getattr(model, COMPILED, model)


def uncompiled_key(key: str) -> str:
    """A state_dict key of a compiled model as its uncompiled model names it."""
    return key.removeprefix(f"{COMPILED}.")


def workspace_model(view):
    """The pydantic model wandb-workspaces would send for a workspace or report `view`."""
    return private(view, WORKSPACE_MODEL)()
