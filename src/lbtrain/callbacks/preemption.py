"""Preemption: on SIGUSR1 or SIGTERM, checkpoint to a fixed path, stop, and requeue.

lbtrain owns the checkpoint (not Lightning's SLURM-only auto-requeue), so it works the same
under SLURM, submitit and a plain shell. SLURM sends the signal ahead of a time limit or a
preemption (`#SBATCH --signal=USR1@120`; submitit: `signal_delay_s`, with lbtrain setting
SUBMITIT_PREEMPT_SIGNAL=USR1). At the next step boundary the job saves
`<job dir>/checkpoints/requeue.ckpt` and stops without writing a summary. Then whoever
handled the signal before training started requeues the job: submitit's own handler
(which knows its requeue protocol), or else `scontrol requeue` under SLURM. When the job
starts again in the same directory, `lbtrain.run` resumes from that checkpoint, with the
same W&B run id.
"""

import logging
import os
import signal
import subprocess
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)
REQUEUE_CHECKPOINT = "requeue.ckpt"


class Preempted(Exception):
    """Raised inside fit() once the requeue checkpoint is on disk."""


class Preemption(L.Callback):
    def __init__(
        self,
        dirpath: str | Path,
        signals: tuple[str, ...] = ("SIGUSR1", "SIGTERM"),
        ddp_check_every_n_steps: int = 20,
    ) -> None:
        self.path = Path(dirpath) / REQUEUE_CHECKPOINT
        self.signals = [getattr(signal, name) for name in signals]
        # Under DDP the ranks agree through a collective (and a host sync): not every step.
        self.ddp_check_every_n_steps = ddp_check_every_n_steps
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        self.received = signum  # act at the next step boundary, not inside the handler

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        # after Lightning's own handlers, so these take precedence for the training loop
        self._previous = {s: signal.signal(s, self._handler) for s in self.signals}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx) -> None:
        # Lightning restores a checkpoint as if saved after a batch, as its own are, and so
        # raises its logging counter by one when resuming from ours, saved before a batch:
        # it would log (and gate the logging of) every later value one step off.
        trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step
        # Checked before an optimizer step's first micro-batch: the checkpoint holds every
        # completed step and none of this one, so the resumed run starts with this batch.
        accumulate = trainer.accumulate_grad_batches
        if batch_idx % accumulate:
            return
        stop = self.received is not None
        if trainer.world_size > 1:  # every rank stops at the same step
            if (batch_idx // accumulate) % self.ddp_check_every_n_steps:
                return
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            trainer.save_checkpoint(self.path)
            log.warning(
                "signal %s: saved %s at step %d; stopping", self.received, self.path,
                trainer.global_step,
            )  # fmt: skip
            previous = self._previous.get(self.received)
            self.teardown(trainer, pl_module, "fit")
            if _hands_over(previous):  # e.g. submitit: it requeues the job its own way
                previous(self.received, None)
            raise Preempted(str(self.path))

    def teardown(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def _hands_over(handler) -> bool:
    """A handler of the launcher's (submitit's) that the signal must still reach; not the
    defaults and not Lightning's own, which would only stop the loop again."""
    if not callable(handler) or handler is signal.default_int_handler:
        return False
    owner = getattr(handler, "__module__", None) or type(handler).__module__
    return not owner.startswith(("lightning", "pytorch_lightning"))


def requeue_if_on_slurm() -> None:
    """Put this SLURM job back in the queue (a no-op outside SLURM)."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ.get("SLURM_JOB_ID")
    if job:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        log.warning("scontrol requeue %s: %s", job, result.returncode or "ok")
