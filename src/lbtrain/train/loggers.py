"""Lightning's loggers, each with one change (conf/logger/):

- `ResumableCSVLogger`: a run resumed in its own directory (a requeued job, `ckpt_path=` into
  the same run dir) appends to its metrics.csv instead of deleting it, after dropping the
  rows of steps past its checkpoint (`forget_after`: logged after the checkpoint was saved);
- `WandbLogger`: does not pass wandb.init `anonymous=None`, which wandb >= 0.19 answers with
  "The anonymous setting has no effect" on every run, nor a tag like `recipe=None`; plots every
  series against lbtrain's step (`STEP_KEY`, not W&B's count of log calls), and keeps the best
  `val/acc` in the run's summary as `val/acc_best` beside the final one.
"""

import csv
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch import loggers
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from lbtrain.lightning_internals import appending_csv_writer, drop_unset_wandb_init_arg

# Lightning's WandbLogger logs each value's step under this key: the step of lbtrain's convention
# (steps.py; tests/test_steps.py), the x-axis of every W&B series and of lbtrain.dashboard's panels
STEP_KEY = "trainer/global_step"
VAL_ACC, BEST_VAL_ACC = "val/acc", "val/acc_best"


class ResumableCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        return appending_csv_writer(self)


class WandbLogger(loggers.WandbLogger):
    def __init__(self, tags: list[str] | None = None, **kwargs) -> None:
        # a tag of a setting the run does not have (`recipe=None`: no recipe chosen) is none
        tags = [tag for tag in tags or [] if not tag.endswith("=None")]
        super().__init__(tags=tags, **kwargs)
        drop_unset_wandb_init_arg(self, "anonymous")
        self.axes_defined = False

    @property
    @rank_zero_experiment
    def experiment(self):
        run = super().experiment
        if not self.axes_defined:  # once, at start: lbtrain's own axis, whatever Lightning does
            run.define_metric(STEP_KEY)
            run.define_metric("*", step_metric=STEP_KEY, step_sync=True)
            self.axes_defined = True
        return run

    @rank_zero_only
    def log_metrics(self, metrics, step=None) -> None:
        super().log_metrics(metrics, step)
        if VAL_ACC in metrics:  # once a validation. The summary's val/acc is the last one (and
            # RunSummary's final update); define_metric(summary="max") would be overwritten by it
            summary = self.experiment.summary
            summary[BEST_VAL_ACC] = max(float(metrics[VAL_ACC]), summary.get(BEST_VAL_ACC, -1.0))


def forget_after(loggers, step: int) -> None:
    """A run resumes from its checkpoint after `step` updates: the CSV rows of later steps
    (written before a kill -9 or a crash) go, as the resumed run logs those steps anew."""
    for logger in loggers:
        if not isinstance(logger, ResumableCSVLogger):
            continue
        path = Path(logger.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        keep = [row for row in rows if not row["step"] or float(row["step"]) <= step]
        if len(keep) < len(rows):
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=reader.fieldnames)
                writer.writeheader()
                writer.writerows(keep)
