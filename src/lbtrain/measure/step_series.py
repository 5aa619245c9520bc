"""One mechanism for every per-step measurement (weight distance, angular distance, ...).

A measurement says what it measures after each optimizer step t (`measure`: a 1-D tensor
on the device, the series' value first, then one value per entry of `sub_names`) and what
it adds to summary.json (`summary_entries`). `StepSeries` does the rest:
- the values stay on the device and reach the host once every `flush_every_n_steps` steps,
  and at each epoch end, checkpoint and the end of training: no per-step host sync;
- each value goes to every logger at its own step t (`steps.step_done`: after the t-th
  update; micro-batches of gradient accumulation measure nothing), all the measurements
  of a step in one row (`MeasurementLog`);
- a measurement that needs the step's batch, or the weights before the update, has
  `before_step`, called before each measured step;
- the values already measured, pending ones included, are part of the checkpoint, so a
  resumed run continues the same series and its summary equals an uninterrupted run's;
- under DDP the weights are identical on every rank: rank 0 measures and logs.

A new measurement is one small subclass and one entry in conf/callbacks/ (README).
"""

import lightning as L
import torch
from torch import Tensor

from lbtrain.measure.diffusion import fit_diffusion
from lbtrain.train.steps import is_new_update, step_done, step_of_this_batch


def require(ok: bool, refusal: str) -> None:
    """A measurement's setting checked as it is built, refused in one line that names it
    ("chunks=1 must be >= 2 ..."; train.fit adds "callbacks.<entry>: " before it). These
    checks are the rules' only home: config/validate.py leaves callbacks to them."""
    if not ok:
        raise ValueError(refusal)


class StepSeries(L.Callback):
    name: str  # the logged series, e.g. "weight_distance"
    fit_prefix: str | None = None  # summary keys of its log t fit, e.g. "diffusion"
    sub_prefix: str | None = None  # sub-series are logged as f"{sub_prefix or name}/{sub}"
    # measures with BatchNorm in training mode, on rank 0 alone (SyncBatchNorm would hang)
    trains_batchnorm = False
    every_rank = False  # `before_step` runs on every DDP rank (else on rank 0 alone)
    each_micro_batch = False  # `before_step` sees each micro-batch of a step (else its first)
    final_value = True  # also measured after the last step (else only at `takes` steps)

    # The defaults are for a measurement of your own (README, "A measurement of your own"):
    # lbtrain's own take their settings from conf/callbacks/
    def __init__(self, flush_every_n_steps: int = 100, every_n_steps: int = 1) -> None:
        require(flush_every_n_steps >= 1, f"flush_every_n_steps={flush_every_n_steps} must be >= 1")
        require(every_n_steps >= 1, f"every_n_steps={every_n_steps} must be >= 1")
        self.flush_every_n_steps = flush_every_n_steps
        self.every_n_steps = every_n_steps  # measure after every N-th step, and at the end
        self.sub_names: list[str] = []  # logged as f"{name}/{sub}", after the value itself
        self.history: list[tuple[int, float]] = []  # (t, value), on the host
        self._pending: list[tuple[int, Tensor]] = []  # on the device
        self._unlogged: list[tuple[int, dict]] = []  # in `history`, not yet with the loggers
        self._last_step = -1
        # writes this series' rows with the other series' (train.fit.build_trainer hands it
        # over); None: the series writes to the loggers itself
        self.rows: MeasurementLog | None = None
        self.enabled = True  # `start` may find nothing to measure in this model

    # --- what a measurement defines -----------------------------------------------------
    def start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Called when training starts (again, after a resume): set up, set `sub_names`."""

    def before_step(self, trainer: L.Trainer, pl_module: L.LightningModule, batch) -> None:
        """Called before the update of a step that `takes`, with its batch (see `every_rank`
        and `each_micro_batch`): what the measurement reads before the update."""

    def check_data(self, datamodule) -> None:
        """Raise ValueError (one line naming its key) if this data module cannot be measured;
        `train.fit.build` calls it before training, `start` again."""

    def check_plan(self, plan, trainer: L.Trainer) -> None:
        """Raise ValueError (one line naming its key) if this batch plan (`train.plan.BatchPlan`)
        and trainer cannot be measured; `train.fit.build` calls it before training."""

    def measure(self, pl_module: L.LightningModule) -> Tensor:
        """The values after this step, on the device: [value, *one per sub_names], or what
        `finish` makes them from."""
        raise NotImplementedError

    def finish(self, measured: Tensor) -> Tensor:
        """The values from what `measure` returned, computed when they go to the host: a
        measurement may keep a copy of its inputs at each step and do its arithmetic here,
        for many steps in a row (FromInitialWeights)."""
        return measured

    def received(self, step: int, row: list[float]) -> None:
        """The values of step `step` on the host, as they join `history`: a measurement that
        keeps more than its value (NoiseScale's single estimates) takes it here."""

    def extra_state(self) -> dict:
        """What the measurement needs beyond its history to resume (e.g. w_0)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Takes back what `extra_state` gave, from the state a run resumes with."""

    def summary_entries(self, pl_module: L.LightningModule) -> dict[str, float]:
        """The final value and, with `fit_prefix`, the log t fit over the steps before the
        first LR decay (`<prefix>_slope`, `<prefix>_r2`, ...)."""
        if not self.history:
            return {}
        steps, values = zip(*self.history, strict=True)
        entries = {self.name: values[-1]}
        if self.fit_prefix:
            first_decay = next(iter(pl_module.milestone_steps), None)
            fit = fit_diffusion(steps, values, until_step=first_decay)
            entries |= {self.fit_prefix + k.removeprefix("diffusion"): v for k, v in fit.items()}
        return entries

    # --- the shared mechanism -----------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start(trainer, pl_module)
        self._last_step = step_done(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if not (self.enabled and (trainer.is_global_zero or self.every_rank)):
            return
        new = self.each_micro_batch or is_new_update(trainer, batch_idx)
        if new and self.takes(step_of_this_batch(trainer)):
            self.before_step(trainer, pl_module, batch)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = step_done(trainer)
        if step == self._last_step or not trainer.is_global_zero or not self.enabled:
            return  # a gradient-accumulation micro-batch: no optimizer step was taken
        self._last_step = step
        if self.takes(step):
            self._take(trainer, pl_module)

    def takes(self, step: int) -> bool:
        """Whether the value after step `step` is measured (besides the last step's)."""
        return step % self.every_n_steps == 0

    def _take(self, trainer: L.Trainer, pl_module) -> None:
        with torch.no_grad():
            self._pending.append((step_done(trainer), self.measure(pl_module)))
        if len(self._pending) >= self.flush_every_n_steps:
            self.flush(trainer)

    def _to_host(self) -> None:
        """Pending device values into the history (the one sync), queued for the loggers."""
        if not self._pending:
            return
        with torch.no_grad():
            rows = torch.stack([self.finish(v) for _, v in self._pending]).cpu().tolist()
        prefix = self.sub_prefix or self.name
        for (step, _), row in zip(self._pending, rows, strict=True):
            self.history.append((step, row[0]))
            self.received(step, row)
            subs = zip(self.sub_names, row[1:], strict=True)
            metrics = {self.name: row[0]} | {f"{prefix}/{n}": v for n, v in subs}
            self._unlogged.append((step, metrics))
        self._pending.clear()

    def flush(self, trainer: L.Trainer) -> None:
        self._to_host()
        for step, metrics in self._unlogged:
            if self.rows is not None:
                self.rows.add(step, metrics)
            else:
                for logger in trainer.loggers:
                    logger.log_metrics(metrics, step=step)
        self._unlogged.clear()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self.flush(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint) -> None:
        self.flush(trainer)  # the logs never lag behind a checkpoint a run may resume from

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        final = self.enabled and self.final_value and trainer.is_global_zero
        if final and self._last_taken() != step_done(trainer):
            self._take(trainer, pl_module)  # the final value of a series taken every N steps
        self.flush(trainer)

    def _last_taken(self) -> int:
        """The step of the newest value, pending or in the history (-1: none yet)."""
        if self._pending:
            return self._pending[-1][0]
        return self.history[-1][0] if self.history else -1

    def state_dict(self) -> dict:
        # Lightning asks for this before `on_save_checkpoint`: the checkpoint must already
        # hold the pending values, or a run resumed from it would lack them
        self._to_host()
        return {"history": list(self.history), **self.extra_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
        self.load_extra_state(state_dict)


class MeasurementLog(L.Callback):
    """Writes what the StepSeries before it flushed, one `log_metrics` call per step for all
    of them: weight and angular distance at step t go to W&B as one row, not two (each W&B
    call costs a fraction of a millisecond, a tenth of a small model's step: README,
    "Benchmarks"). train.fit.build_trainer places it after the configured callbacks, so that
    it runs after them in every hook, and hands it to each series (`StepSeries.rows`)."""

    def __init__(self) -> None:
        self.rows: dict[int, dict] = {}

    def add(self, step: int, metrics: dict) -> None:
        self.rows.setdefault(step, {}).update(metrics)

    def write(self, trainer: L.Trainer) -> None:
        for step in sorted(self.rows):
            for logger in trainer.loggers:
                logger.log_metrics(self.rows[step], step=step)
        self.rows.clear()

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if self.rows:
            self.write(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self.write(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint) -> None:
        self.write(trainer)
        for logger in trainer.loggers:  # on disk: a run resumed from it lacks no row
            logger.save()

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self.write(trainer)
