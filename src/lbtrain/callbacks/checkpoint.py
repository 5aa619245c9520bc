"""`checkpoints/last.ckpt` while a run trains, so that a kill -9 or a crash loses at most one
interval: at the start of every epoch after the first, optionally every N optimizer steps or
M minutes, and when fit() ends.

Each mid-run one is saved where the preemption checkpoint is (callbacks/preemption.py): at a
step boundary, before a batch, with everything of the steps before it logged and on disk. A
run resumed from it (`ckpt_path=`) drops the log rows of later steps (`train.loggers.forget_after`)
and continues exactly as if it had never stopped.

Every file is written beside its final name and renamed over it (`save_atomically`): a kill
during a save leaves the previous checkpoint whole. (Lightning's own save writes to the
system's temp dir and moves the file, which is a copy, not a rename, where the run dir is on
another file system, as on most clusters.)
"""

import os
import time
from pathlib import Path

import lightning as L
import torch

from lbtrain.launch.run_dir import LAST_CHECKPOINT
from lbtrain.train.steps import is_new_update


def save_atomically(trainer: L.Trainer, path: Path) -> None:
    """`trainer.save_checkpoint` (every rank takes part; rank 0 writes), then a rename."""
    partial = path.with_name(f".{path.name}.partial")
    trainer.save_checkpoint(partial, weights_only=False)  # said: Lightning logs a line if not
    if trainer.is_global_zero:
        os.replace(partial, path)


class LastCheckpoint(L.Callback):
    """Runs first in each batch (after `Preemption`: train.fit.build_trainer places both), so
    that no other callback has begun the step it saves before; the final save comes at fit
    end, after every callback's end of training (the series' last values)."""

    def __init__(
        self,
        dirpath: str | Path,
        every_n_steps: int | None,
        every_n_minutes: float | None,
        ddp_check_every_n_steps: int,
    ) -> None:
        self.path = Path(dirpath) / LAST_CHECKPOINT
        self.every_n_steps = every_n_steps
        self.seconds = None if every_n_minutes is None else 60 * every_n_minutes
        # under DDP the ranks agree on the time through a collective: not every step
        self.ddp_check_every_n_steps = ddp_check_every_n_steps
        self._saved_at = time.monotonic()
        self._first_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._saved_at = time.monotonic()
        self._first_step = trainer.global_step  # a resumed run's checkpoint is on disk

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step  # the updates done: the checkpoint holds all of them
        # not between micro-batches of one step, nor where a resumed run starts (on disk)
        if not is_new_update(trainer, batch_idx) or step == self._first_step:
            return
        due = batch_idx == 0 or (self.every_n_steps and step % self.every_n_steps == 0)
        if due or (self.seconds is not None and self._time_is_up(trainer, step)):
            save_atomically(trainer, self.path)
            self._saved_at = time.monotonic()

    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        save_atomically(trainer, self.path)  # the final state

    def _time_is_up(self, trainer: L.Trainer, step: int) -> bool:
        up = time.monotonic() - self._saved_at >= self.seconds
        if trainer.world_size == 1:
            return up
        if step % self.ddp_check_every_n_steps:
            return False
        mine = torch.tensor(int(up), device=trainer.strategy.root_device)
        return bool(trainer.strategy.broadcast(mine, src=0))  # rank 0's clock decides
