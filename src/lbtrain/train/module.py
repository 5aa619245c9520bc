"""The LightningModule: cross-entropy classification, the chosen optimizer, a per-step schedule.

It wires the paper's pieces (the model, already Ghost-BN-converted; the `BatchPlan` with
the scaled LR and stretched regime); it does not re-implement them.

Every value it logs carries lbtrain's step convention (README, "Which step a value belongs
to"): step t is after t optimizer updates. `train/loss_step` at t is the loss of the batch
that made update t; epoch metrics sit at the epoch's last update. Lightning would log
these one step early (its counter is raised after the logging), so `step` is logged too.
"""

import logging
import math
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lbtrain.train.branch import load_moments
from lbtrain.train.optimizers import OptimizerSpec
from lbtrain.train.plan import BatchPlan, make_scheduler
from lbtrain.train.steps import step_done, step_of_this_batch

log = logging.getLogger("lbtrain")


class Classifier(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        plan: BatchPlan,
        num_classes: int,
        optimizer: OptimizerSpec,
        stop_on_divergence: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.plan = plan
        self.optimizer_spec = optimizer
        self.optimizer_state: dict | None = None  # a branch's start (lbtrain/train/branch.py)
        # logger=False: the loggers get the whole resolved config (fit.record), not this subset
        self.save_hyperparameters(ignore=["model", "plan", "optimizer"], logger=False)
        # validate_args=False: the argument checks read tensor values on the host every step
        acc = dict(num_classes=num_classes, average="micro", validate_args=False)
        self.train_acc, self.val_acc = MulticlassAccuracy(**acc), MulticlassAccuracy(**acc)
        # Means over samples, exact under uneven DDP shards and short last batches: each
        # update gives the batch's mean loss once per sample (`expand`, a view: no copy, no
        # weight tensor from the host). nan_strategy="disable": no NaN check, which reads a
        # value on the host every step, and a diverged run reports NaN instead of dropping it.
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_loss = MeanMetric(nan_strategy="disable")
        # the epoch's running sums go into checkpoints: a run resumed mid-epoch reports the
        # same train/loss_epoch and train/acc as one that never stopped
        self.train_loss.persistent(True)
        self.train_acc.persistent(True)
        # samples processed by training, over all devices (batch augmentation's copies
        # included): a host count from batch shapes, in the checkpoint for resumed runs
        self.samples_seen = 0
        self.seconds_before = 0.0  # training wall time of earlier sessions (a resumed run)
        self._started = time.perf_counter()
        # Divergence: the first update whose loss is not finite, kept on the device (-1: none
        # yet) and read on the host only every log_every_n_steps (`_check_divergence`)
        self.stop_on_divergence = stop_on_divergence
        self._first_nonfinite: torch.Tensor | None = None
        self.diverged_at_step: int | None = None
        self._diverged_loss = float("nan")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.samples_seen += len(y) * self.trainer.world_size  # equal shards on every rank
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_loss.update(loss.detach().expand(len(y)))
        self.train_acc.update(logits.detach(), y)
        # `self.log` costs ~0.3 ms, as much as a whole step of a small model, so the step
        # value is logged only on the steps the loggers write (Lightning writes after the
        # optimizer step that makes the step of this batch a multiple of log_every_n_steps).
        every = self.trainer.log_every_n_steps
        update = step_of_this_batch(self.trainer)
        if every and update % every == 0:
            self.log_dict({"train/loss_step": loss, "step": float(update)})
        self._watch(loss.detach(), update)
        return loss

    def _watch(self, loss: torch.Tensor, update: int) -> None:
        """Remember, on the device, the first update whose loss is not finite, and that loss."""
        if self._first_nonfinite is None:
            self._first_nonfinite = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._nonfinite_loss = torch.zeros((), device=loss.device)
        first = self._first_nonfinite
        new = ~torch.isfinite(loss) & (first < 0)
        self._first_nonfinite = torch.where(new, update, first)
        self._nonfinite_loss = torch.where(new, loss.float(), self._nonfinite_loss)
        if update % self.trainer.log_every_n_steps == 0:  # the loss goes to the host anyway
            self._check_divergence()

    def _check_divergence(self) -> None:
        """On the host: stop at the first non-finite loss (every rank), unless
        `stop_on_divergence` is off, for who studies divergence itself."""
        if self.diverged_at_step is not None or self._first_nonfinite is None:
            return
        first = int(self._first_nonfinite)
        if not self.trainer.strategy.reduce_boolean_decision(first >= 0, all=False):
            return
        self.diverged_at_step = first if first >= 0 else step_of_this_batch(self.trainer)
        then = "stopping" if self.stop_on_divergence else "training on (stop_on_divergence=false)"
        if self.trainer.is_global_zero:
            log.warning(
                "lbtrain: diverged at step %d: train loss %s; %s",
                self.diverged_at_step, float(self._nonfinite_loss), then,
            )  # fmt: skip
        if self.stop_on_divergence:
            self.trainer.should_stop = True

    def on_train_epoch_start(self) -> None:
        # A new epoch (not called when a run resumes mid-epoch): start the sums afresh, also
        # after resuming from a checkpoint saved before Lightning reset them at epoch end.
        self.train_loss.reset()
        self.train_acc.reset()

    def _at_this_step(self) -> dict[str, float]:
        return {"step": float(step_done(self.trainer)), "epoch": float(self.current_epoch)}

    def on_train_epoch_end(self) -> None:
        self._check_divergence()  # in the epoch's last steps, since the last check
        self.log_dict({"train/loss_epoch": self.train_loss, "train/acc": self.train_acc})
        self.log_dict(self._at_this_step())

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_loss.update(F.cross_entropy(logits, y).expand(len(y)))
        self.val_acc.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        self.log("val/loss", self.val_loss)
        self.log("val/acc", self.val_acc, prog_bar=True)
        self.log_dict(self._at_this_step())

    def on_train_start(self) -> None:
        self._started = time.perf_counter()

    def train_seconds(self) -> float:
        """Wall time spent in training so far, over every session of a resumed run."""
        return self.seconds_before + time.perf_counter() - self._started

    def _running_sums(self) -> list[str]:
        """The state_dict keys of the epoch's running sums (every state sum-reduced)."""
        return [f"{name}.{key}" for name in ("train_loss", "train_acc")
                for key in getattr(self, name).metric_state]  # fmt: skip

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["samples_seen"] = self.samples_seen
        checkpoint["diverged_at_step"] = self.diverged_at_step
        checkpoint["train_seconds"] = self.train_seconds()
        # Under DDP each rank sums its own shard of the epoch, and torchmetrics adds the
        # ranks' sums only when it computes; the state_dict holds rank 0's. So the checkpoint
        # keeps every rank's sums too, and a run resumed mid-epoch reports the same epoch
        # metrics as one that never stopped, to the bit (see on_load_checkpoint).
        if self.trainer.world_size > 1:  # every rank saves (Lightning), so all take part
            state, gather = checkpoint["state_dict"], self.trainer.strategy.all_gather
            checkpoint["running_sums_per_rank"] = {
                k: gather(state[k]).cpu() for k in self._running_sums()
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.samples_seen = checkpoint.get("samples_seen", 0)
        self.diverged_at_step = checkpoint.get("diverged_at_step")
        self.seconds_before = checkpoint.get("train_seconds", 0.0)
        # Each rank resumes its own sums; at another world size, rank 0 resumes with their
        # total and the other ranks from zero, which adds up to the same epoch metric.
        state, rank = checkpoint["state_dict"], self.trainer.global_rank
        per_rank = checkpoint.get("running_sums_per_rank") or {}
        for key in self._running_sums():
            sums = per_rank.get(key)  # None: a checkpoint of one process, its sums the total
            if sums is not None and len(sums) == self.trainer.world_size:
                state[key] = sums[rank]
            else:
                total = state[key] if sums is None else sums.sum(0)
                state[key] = total if rank == 0 else torch.zeros_like(total)

    def configure_optimizers(self):
        optimizer = self.optimizer_spec.build(self.model, self.plan.lr)
        if self.optimizer_state is not None:
            load_moments(optimizer, self.optimizer_state)
            self.optimizer_state = None  # loaded: not kept beside the optimizer's own
        # optimizer steps per epoch, after limit_train_batches and gradient accumulation (the
        # estimate loads the train dataloader, which sets num_training_batches); a schedule
        # in steps does not need it
        steps_per_epoch = 1
        # N, for a batch-size schedule and AdamW's timescale in epochs (a data module of yours
        # may not say: the timescale is then counted in the run's epochs)
        num_train = getattr(self.trainer.datamodule, "num_train_samples", None)
        if self.plan.phases:  # a batch-size schedule: each phase has its own steps per epoch
            steps_per_epoch = self.plan.phases[0].steps_per_epoch(num_train, self.plan.world_size)
        elif self.plan.unit == "epoch":
            self.trainer.estimated_stepping_batches  # noqa: B018
            batches = self.trainer.num_training_batches
            steps_per_epoch = max(1, math.ceil(batches / self.trainer.accumulate_grad_batches))
        self.steps_per_epoch, self.num_train = steps_per_epoch, num_train
        # where the noise scale drops (LR decays, batch increases): the diffusion fit ends there
        self.milestone_steps, _ = self.plan.decays(steps_per_epoch, num_train)
        scheduler = make_scheduler(optimizer, self.plan, steps_per_epoch, num_train)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
