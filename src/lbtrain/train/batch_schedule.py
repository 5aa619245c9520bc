"""Batch-size schedules. `grow` (Smith et al. 2018, "Don't decay the learning rate, increase
the batch size"): at each LR milestone, grow the batch by 1/gamma instead of cutting the LR by
gamma. `warmup` (Merrill et al. 2025): the batch from each epoch on as given, e.g. along the
critical batch size measured by branching (make critical-batch-online), the LR following it by
the run's LR scaling rule and the milestones decaying it as usual.

SGD's noise scale is about lr N / B, so either move lowers it by the same factor; the grown
batch takes 1/gamma times fewer steps per epoch. Once the batch reaches the cap, the rest of
the factor is taken from the LR: the noise scale falls by gamma at every milestone as in the
LR schedule, with lr' / B' = gamma lr / B. Batches change at epoch boundaries, so the
milestones must be whole epochs; the batches are real, larger ones, never accumulated.
"""

import math
from dataclasses import dataclass


def batches_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Training batches per epoch on each rank: its equal share of n shuffled samples (the
    leftover dropped) in batches of `batch_size`, the last one short."""
    return -(-(n // world_size) // batch_size)


@dataclass(frozen=True)
class Phase:
    start_epoch: int  # the phase runs from this epoch to the next phase's start
    batch_size: int  # global
    lr_factor: float  # times the run's (scaled) LR

    def steps_per_epoch(self, num_train: int, world_size: int) -> int:
        """Steps of one epoch: the in-memory loader's batches of batch_size / world_size."""
        return batches_per_epoch(num_train, self.batch_size // world_size, world_size)


def grow_phases(
    batch_size: int, cap: int, milestones: list[float], gammas: list[float], world_size: int
) -> tuple[Phase, ...]:
    """The phases of a run whose milestones grow the batch by 1/gamma, up to `cap`."""
    key = "batch_schedule=grow"  # whole-epoch milestones: config/validate.py checks them
    phases = [Phase(0, batch_size, 1.0)]
    for milestone, gamma in zip(milestones, gammas, strict=True):
        last = phases[-1]
        grown = min(round(last.batch_size / gamma), cap)
        # the noise scale lr / B falls by gamma: by the batch, and by the LR past the cap
        factor = last.lr_factor * gamma * grown / last.batch_size
        if grown % world_size:
            raise ValueError(
                f"{key}: the batch grows to {grown} at epoch {int(milestone)}, which does not "
                f"divide across the {world_size} devices; pick batch_size, optim.gamma and "
                f"batch_schedule_cap so that every batch is a multiple of {world_size}"
            )
        phases.append(Phase(int(milestone), grown, factor))
    return tuple(phases)


def warmup_phases(
    batch_size: int, points: list[list[int]], milestones: list[float], gammas: list[float],
    lr_power: float,
) -> tuple[Phase, ...]:  # fmt: skip
    """The phases of batch_schedule=warmup: from epoch e of each [e, batch] of `points` on, that
    batch (batch_size before the first), the LR x (batch / batch_size) ** lr_power (the LR
    scaling rule) x gamma at each milestone passed (whole epochs: config/validate.py)."""
    starts = sorted({0, *(e for e, _ in points), *(int(m) for m in milestones)})
    phases = []
    for start in starts:
        batch = ([b for e, b in points if e <= start] or [batch_size])[-1]
        decay = math.prod(g for m, g in zip(milestones, gammas, strict=True) if m <= start)
        phases.append(Phase(start, batch, (batch / batch_size) ** lr_power * decay))
    return tuple(phases)


def check_fits(phases: tuple[Phase, ...], num_train: int, key: str) -> None:
    """No phase's batch may exceed the training set."""
    for phase in phases:
        if phase.batch_size > num_train:
            raise ValueError(
                f"{key}: the batch grows to {phase.batch_size} at epoch "
                f"{phase.start_epoch}, more than the {num_train} training samples; lower "
                + ("batch_schedule_cap" if key.endswith("grow") else "batch_schedule_points")
            )
