"""What a run actually did, written by the process that trains (rank 0): its effective plan
(epochs, steps, milestones in steps, scaled LR, per-device, micro and ghost batch) when
training starts, into config.yaml and every logger's config; and summary.json (the plan,
final metrics, steps, the diffusion fit) when it ends.

It is a callback rather than code around `trainer.fit()` so that it also runs inside the
worker processes of `ddp_spawn`, where the trained state lives.
"""

import json
import logging
from itertools import count
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.loggers import WandbLogger

from lbtrain.measure.step_series import StepSeries
from lbtrain.train.module import Classifier
from lbtrain.train.plan import effective

log = logging.getLogger(__name__)


class RunSummary(L.Callback):
    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "summary.json"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        plan = {"plan": effective(pl_module.plan, pl_module.steps_per_epoch, pl_module.num_train)}
        config = self.path.with_name("config.yaml")
        if config.exists():  # the resolved config, written by train.fit.record
            with open(config, "a") as f:
                f.write(yaml.safe_dump(plan, sort_keys=False))
        for logger in trainer.loggers:
            logger.log_hyperparams(plan)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        summary = summarise(trainer, pl_module)
        self.write(summary)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(summary)

    def write(self, summary: dict) -> None:
        """summary.json, never rewritten with fewer keys than it had (a resume with fewer
        measurements switched on): then this session's goes beside it, and the log says so."""
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)  # a run built outside lbtrain.run
        if path.exists() and (lost := json.loads(path.read_text()).keys() - summary.keys()):
            numbered = (self.path.with_suffix(f".{k}.json") for k in count(1))
            path = next(p for p in numbered if not p.exists())
            log.warning("%s kept: this session's summary lacks %s; it is in %s", self.path.name,
                        ", ".join(sorted(lost)), path.name)  # fmt: skip
        path.write_text(json.dumps(summary, indent=2))


def summarise(trainer: L.Trainer, module: Classifier) -> dict[str, float]:
    """Final metrics, steps taken, the plan, and what each measurement contributes (its final
    value and log t fit: every StepSeries)."""
    # `step` and `epoch` only place the logged values on the x-axis (train/module.py)
    summary = {
        k: float(v) for k, v in trainer.callback_metrics.items() if k not in ("step", "epoch")
    }
    summary.update(global_step=trainer.global_step, epochs=trainer.current_epoch)
    summary.update(samples_seen=module.samples_seen, train_seconds=module.train_seconds())
    if module.diverged_at_step is not None:  # the report gives it no accuracy
        summary["diverged_at_step"] = module.diverged_at_step
    summary["plan"] = effective(module.plan, module.steps_per_epoch, module.num_train)
    for callback in trainer.callbacks:
        if isinstance(callback, StepSeries):
            summary.update(callback.summary_entries(module))
    return summary
