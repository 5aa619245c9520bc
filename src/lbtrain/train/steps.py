"""lbtrain's step convention, in one place: the value at step t is the value after t
optimizer updates (README, "Which step a value belongs to"). Lightning's `global_step`
counts the updates done, so a value taken in a training batch's hooks before its update
(its loss, the LR it trains with) belongs to the update the batch is about to make. Every
value lbtrain logs takes its step from one of these two."""

from lightning import Trainer


def step_of_this_batch(trainer: Trainer) -> int:
    """Before a batch's optimizer step (training_step, on_train_batch_start): the update it
    makes."""
    return trainer.global_step + 1


def step_done(trainer: Trainer) -> int:
    """After an optimizer step (a batch's end, an epoch's, validation): the updates done."""
    return trainer.global_step


def is_new_update(trainer: Trainer, batch_idx: int) -> bool:
    """Before a batch (on_train_batch_start): whether it begins an optimizer update, the first
    of its micro-batches under gradient accumulation (every batch without). An epoch's short
    last update begins at such a batch too, and lbtrain checkpoints only before one, so a
    resumed run starts at one. After a batch, whether it made an update is whether
    `step_done` moved on from the step seen last (`StepSeries`)."""
    return batch_idx % trainer.accumulate_grad_batches == 0
