"""Lightning's loggers, each with one change (conf/logger/):

- `ResumableCSVLogger`: a run resumed in its own directory (a requeued job, `ckpt_path=` into
  the same run dir) appends to its metrics.csv instead of deleting it;
- `WandbLogger`: does not pass wandb.init `anonymous=None`, which wandb >= 0.19 answers with
  "The anonymous setting has no effect" on every run.
"""

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch import loggers
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from lbtrain.lightning_internals import appending_csv_writer, drop_unset_wandb_init_arg


class ResumableCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        return appending_csv_writer(self)


class WandbLogger(loggers.WandbLogger):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        drop_unset_wandb_init_arg(self, "anonymous")
