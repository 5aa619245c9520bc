"""Lightning's loggers, each with one change (conf/logger/):

- `ResumableCSVLogger`: a run resumed in its own directory (a requeued job, `ckpt_path=` into
  the same run dir) appends to its metrics.csv instead of deleting it;
- `WandbLogger`: does not pass wandb.init `anonymous=None`, which wandb >= 0.19 answers with
  "The anonymous setting has no effect" on every run.
"""

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch import loggers
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning's version deletes an existing metrics.csv; keep it and its columns
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class ResumableCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class WandbLogger(loggers.WandbLogger):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self._wandb_init.get("anonymous") is None:  # Lightning's default: not asked for
            del self._wandb_init["anonymous"]
