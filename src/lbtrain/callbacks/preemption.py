"""Preemption: on SIGUSR1 or SIGTERM, checkpoint to a fixed path, stop, and requeue; on
SIGINT (Ctrl-C), the same checkpoint and stop, as a pause: nothing is requeued, and a second
Ctrl-C exits at once.

lbtrain owns the checkpoint (not Lightning's SLURM-only auto-requeue), so it works the same
under SLURM, submitit and a plain shell. SLURM sends the signal ahead of a time limit or a
preemption (`#SBATCH --signal=USR1@120`; submitit: `signal_delay_s`, with lbtrain setting
SUBMITIT_PREEMPT_SIGNAL=USR1). At the next step boundary the job saves
`<job dir>/checkpoints/requeue.ckpt` and stops without writing a summary. Under DDP the ranks
agree on the step, and on the signal, so one rank's signal stops them all.

Global rank 0 alone requeues, once per signal. The signal goes on to the handler of whoever
handled it before training started: submitit's, which requeues a timed-out job (USR1) its
own way and counts it against `max_num_timeout`, and ignores SIGTERM. If that handler returns
(SIGTERM, or no submitit), lbtrain runs `scontrol requeue` under SLURM; a SLURM requeue or
preemption that is already under way makes that a no-op. When the job starts again in the
same directory, `python -m lbtrain.run` resumes from the checkpoint (`train.fit.resume_from`),
with the same W&B run id.
"""

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch

from lbtrain.callbacks.checkpoint import save_atomically
from lbtrain.errors import NotRequeued, Preempted, StoppedAtOnce
from lbtrain.launch.run_dir import REQUEUE_CHECKPOINT
from lbtrain.lightning_internals import set_updates_logged
from lbtrain.train.steps import is_new_update

log = logging.getLogger(__name__)
EXIT_PREEMPTED = 124  # as `timeout` does: stopped early, resumable
EXIT_INTERRUPTED = 130  # as a shell reports a Ctrl-C: 128 + SIGINT
SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
# Under DDP the ranks agree on a signal through a collective (and a host sync): not every step.
DDP_CHECK_EVERY_N_STEPS = 20


class Preemption(L.Callback):
    """train.fit.build_trainer adds it to every run, whatever the callbacks config."""

    def __init__(self, dirpath: str | Path) -> None:
        self.path = Path(dirpath) / REQUEUE_CHECKPOINT
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        # noted first: a second signal may interrupt this handler itself
        again, self.received = self.received, signum  # acted on at the next step boundary
        if signum == signal.SIGINT and again == signal.SIGINT:  # Ctrl-C twice: stop now
            sys.stderr.write("lbtrain: second Ctrl-C: stopped at once, no checkpoint\n")
            raise StoppedAtOnce  # from the step the run is in, not after it
        if signum == signal.SIGINT:
            sys.stderr.write("lbtrain: Ctrl-C: pausing at the next step, with a checkpoint to "
                             "continue from (Ctrl-C again: stop at once)\n")  # fmt: skip

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        # after Lightning's own handlers, so these take precedence for the training loop
        self._previous = {s: signal.signal(s, self._handler) for s in SIGNALS}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx) -> None:
        # Lightning restores a checkpoint as if saved after a batch, as its own are, and so
        # raises its logging counter by one when resuming from ours, saved before a batch:
        # it would log (and gate the logging of) every later value one step off.
        set_updates_logged(trainer, trainer.global_step)
        # Checked before an optimizer step's first micro-batch: the checkpoint holds every
        # completed step and none of this one, so the resumed run starts with this batch.
        if not is_new_update(trainer, batch_idx):
            return
        signum = self.received or 0
        if trainer.world_size > 1:  # every rank stops at the same step, on the same signal
            if (batch_idx // trainer.accumulate_grad_batches) % DDP_CHECK_EVERY_N_STEPS:
                return
            mine = torch.tensor(signum, device=trainer.strategy.root_device)  # NCCL: on the GPU
            signum = int(trainer.strategy.reduce(mine, reduce_op="max"))
        if signum:
            save_atomically(trainer, self.path)
            log.warning(
                "%s: saved %s at step %d; stopping", signal.Signals(signum).name, self.path,
                trainer.global_step,
            )  # fmt: skip
            previous = self._previous.get(signum)
            # This handler stays until fit() ends and Lightning restores the launcher's: a
            # SIGTERM that SLURM sends while the job requeues must not reach Lightning's own,
            # which broadcasts to ranks that may have exited (gloo: "Connection closed by
            # peer", seen in the 2-rank SLURM drill, inside submitit's requeue).
            self._previous = {}
            requeue = trainer.is_global_zero and signum != signal.SIGINT  # Ctrl-C: a pause
            if requeue and _hands_over(previous):
                try:  # submitit: requeues and exits, or refuses
                    previous(signum, None)
                except Exception as e:
                    raise NotRequeued(
                        f"stopped at step {trainer.global_step} on {signal.Signals(signum).name}"
                        f" and not requeued ({type(e).__name__}: {e}); its state is in "
                        f"{self.path}"
                    ) from None
            raise Preempted(self.path, trainer.global_step, signum, requeue)

    def teardown(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def _hands_over(handler) -> bool:
    """A handler of the launcher's (submitit's) that the signal must still reach; not the
    defaults and not Lightning's own, which would only stop the loop again."""
    if not callable(handler) or handler is signal.default_int_handler:
        return False
    # a probe: the handler is the launcher's, any callable; its `__module__` may be None
    owner = getattr(handler, "__module__", None) or type(handler).__module__
    return not owner.startswith(("lightning", "pytorch_lightning"))


def requeue_if_on_slurm() -> str | None:
    """Put this SLURM job back in the queue; what happened, or None outside SLURM."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode == 0:
        return f"requeued SLURM job {job}"
    # e.g. "Job is pending execution": SLURM requeues it itself (scontrol requeue, preemption)
    return f"SLURM job {job} not requeued by lbtrain: {result.stderr.strip() or result.returncode}"
