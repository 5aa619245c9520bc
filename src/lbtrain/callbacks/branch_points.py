"""Checkpoints at chosen optimizer steps, `checkpoints/branch_points/step=<t>.ckpt`, for
branches to start from (lbtrain/train/branch.py): the run's whole state after its t-th update."""

from pathlib import Path

import lightning as L

from lbtrain.train.branch import checkpoint_path
from lbtrain.train.steps import step_done


class BranchPoints(L.Callback):
    def __init__(self, dirpath: str | Path, steps: list[int]) -> None:
        steps = list(steps)
        if not steps or any(not isinstance(t, int) or t < 1 for t in steps):
            raise ValueError(f"steps={steps} must be optimizer steps >= 1")
        self.run_dir, self.steps = Path(dirpath), set(steps)

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        step = step_done(trainer)
        if step in self.steps:
            self.steps.discard(step)  # saved once: the next micro-batches have the same step
            trainer.save_checkpoint(checkpoint_path(self.run_dir, step))
