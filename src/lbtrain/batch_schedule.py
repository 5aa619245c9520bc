"""Batch-size schedules (Smith et al. 2018, "Don't decay the learning rate, increase the batch
size"): at each LR milestone, grow the batch by 1/gamma instead of cutting the LR by gamma.

SGD's noise scale is about lr N / B, so either move lowers it by the same factor; the grown
batch takes 1/gamma times fewer steps per epoch. Once the batch reaches the cap, the rest of
the factor is taken from the LR: the noise scale falls by gamma at every milestone as in the
LR schedule, with lr' / B' = gamma lr / B. Batches change at epoch boundaries, so the
milestones must be whole epochs; the batches are real, larger ones, never accumulated.
"""

from dataclasses import dataclass

from lbtrain.errors import ConfigError


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
    key = "batch_schedule=grow"
    if any(m != int(m) for m in milestones):
        raise ConfigError(
            f"{key}: the milestones {list(milestones)} must be whole epochs (the batch size "
            "changes between epochs); use integer optim.milestones and regime stretch"
        )
    if cap < batch_size:
        raise ConfigError(f"batch_schedule_cap={cap}: must be >= batch_size={batch_size}")
    phases = [Phase(0, batch_size, 1.0)]
    for milestone, gamma in zip(milestones, gammas, strict=True):
        last = phases[-1]
        grown = min(round(last.batch_size / gamma), cap)
        # the noise scale lr / B falls by gamma: by the batch, and by the LR past the cap
        factor = last.lr_factor * gamma * grown / last.batch_size
        if grown % world_size:
            raise ConfigError(
                f"{key}: the batch grows to {grown} at epoch {int(milestone)}, which does not "
                f"divide across the {world_size} devices; pick batch_size, optim.gamma and "
                f"batch_schedule_cap so that every batch is a multiple of {world_size}"
            )
        phases.append(Phase(int(milestone), grown, factor))
    return tuple(phases)


def check_fits(phases: tuple[Phase, ...], num_train: int) -> None:
    """No phase's batch may exceed the training set."""
    for phase in phases:
        if phase.batch_size > num_train:
            raise ConfigError(
                f"batch_schedule=grow: the batch grows to {phase.batch_size} at epoch "
                f"{phase.start_epoch}, more than the {num_train} training samples; lower "
                "batch_schedule_cap"
            )
