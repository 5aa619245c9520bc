"""Batch arithmetic: per-device and ghost batches, the LR scaling rule, the regime stretch.

The paper's fixes +LR and +RA are two pure functions here (`scaled_lr`, `regime_factor`);
`BatchPlan` applies them to one run and states the arithmetic in one line of the log.
"""

import math
from dataclasses import dataclass

from lbtrain.batch_schedule import Phase, grow_phases
from lbtrain.errors import ConfigError

# lr = base_lr * (batch_size / base_batch_size) ** power
LR_SCALING_POWERS = {"none": 0.0, "linear": 1.0, "sqrt": 0.5}
REGIMES = ("fixed", "adapted")


def scaled_lr(base_lr: float, batch_size: int, base_batch_size: int, rule: str) -> float:
    """+LR: sqrt keeps the covariance of the weight update of small-batch SGD (Hoffer et al.);
    linear is Goyal et al.'s rule."""
    return base_lr * (batch_size / base_batch_size) ** LR_SCALING_POWERS[rule]


# Which rules each optimizer has: the LR rules are SGD's; Adam-style optimizers have no
# linear rule, and their sqrt rule scales more than the LR (`adam_sqrt_rule`)
RULES = {
    "sgd": ("none", "linear", "sqrt"),
    "lars": ("none", "linear", "sqrt"),
    "adamw": ("none", "sqrt"),  # Malladi et al. 2022: lr, beta1, beta2 and eps
    "lamb": ("none", "sqrt"),  # You et al. 2019 scale LAMB's LR by sqrt(B), with warmup
}


ADAPTIVE = ("adamw", "lamb")  # Adam-style moments: betas and eps apply


def adam_sqrt_rule(
    betas: tuple[float, float], eps: float, kappa: float
) -> tuple[tuple[float, float], float]:
    """Malladi et al. 2022's square-root rule for Adam, the SDE-preserving one: with the batch
    kappa times larger, lr x sqrt(kappa) (`scaled_lr`), 1 - beta x kappa for both betas, and
    eps / sqrt(kappa). Returns the scaled (betas, eps)."""
    return (1 - kappa * (1 - betas[0]), 1 - kappa * (1 - betas[1])), eps / math.sqrt(kappa)


def regime_factor(regime: str, regime_multiplier: float, batch_size: int, base_batch: int) -> float:
    """+RA: how much longer (in epochs) this run trains than the base regime.

    `adapted` stretches by batch_size / base_batch_size, so a large-batch run takes as
    many optimizer steps as the base regime; `regime_multiplier` multiplies on top.
    """
    return regime_multiplier * (batch_size / base_batch if regime == "adapted" else 1.0)


@dataclass(frozen=True)
class BatchPlan:
    """What one run does with its global batch and its base regime."""

    batch_size: int  # global: all devices of all nodes together, per optimizer step
    world_size: int
    accumulate: int
    ghost_batch_size: int | None
    base_batch_size: int
    base_lr: float
    lr_scaling: str
    base_epochs: int  # trainer.max_epochs; -1: the budget is base_max_steps
    base_milestones: tuple[float, ...]  # in `unit`s of the base regime
    base_warmup: float  # in `unit`s of the base regime
    stretch: float
    base_max_steps: int = -1  # trainer.max_steps; -1: the budget is base_epochs
    unit: str = "epoch"  # of milestones and warmup: "epoch" or "step"
    optimizer: str = "sgd"
    batch_augment: int = 1  # copies of each sample per batch: batch_size x this per step
    base_betas: tuple[float, float] = (0.9, 0.999)  # adamw, lamb: at base_batch_size
    base_eps: float = 1e-8
    gammas: tuple[float, ...] = ()  # the LR factor at each milestone
    phases: tuple[Phase, ...] = ()  # a batch-size schedule (batch_schedule.py); () = none

    def batch_at(self, epoch: int) -> int:
        """The global batch of this epoch (it changes only under a batch-size schedule)."""
        return (
            [p.batch_size for p in self.phases if p.start_epoch <= epoch][-1]
            if self.phases
            else self.batch_size
        )

    def per_device_batch_at(self, epoch: int) -> int:
        return self.batch_at(epoch) // self.world_size

    def decays(
        self, steps_per_epoch: int, num_train: int | None = None
    ) -> tuple[list[int], list[float]]:
        """The steps at which the noise scale drops (LR decays; under a batch schedule, batch
        increases too) and the LR factor from each on, the first for step 0."""
        if not self.phases:
            milestones = [self.to_steps(m, steps_per_epoch) for m in self.milestones]
            return milestones, decay_factors(list(self.gammas) or 0.1, len(milestones))
        steps = [row["steps"] for row in self.phase_steps(num_train)]
        boundaries = [sum(steps[: k + 1]) for k in range(len(steps) - 1)]
        return boundaries, [p.lr_factor for p in self.phases]

    def phase_steps(self, num_train: int) -> list[dict]:
        """Each phase of a batch-size schedule: its epochs' batch, LR, steps per epoch and
        steps (the run takes fewer as its batch grows)."""
        ends = [p.start_epoch for p in self.phases[1:]] + [self.epochs]
        rows = []
        for phase, end in zip(self.phases, ends, strict=True):
            per_epoch = phase.steps_per_epoch(num_train, self.world_size)
            rows.append({"from_epoch": phase.start_epoch, "batch_size": phase.batch_size,
                         "lr": self.lr * phase.lr_factor, "steps_per_epoch": per_epoch,
                         "steps": (end - phase.start_epoch) * per_epoch})  # fmt: skip
        return rows

    @property
    def kappa(self) -> float:
        return self.batch_size / self.base_batch_size

    @property
    def betas(self) -> tuple[float, float]:
        if self.optimizer == "adamw" and self.lr_scaling == "sqrt":
            return adam_sqrt_rule(self.base_betas, self.base_eps, self.kappa)[0]
        return self.base_betas

    @property
    def eps(self) -> float:
        if self.optimizer == "adamw" and self.lr_scaling == "sqrt":
            return adam_sqrt_rule(self.base_betas, self.base_eps, self.kappa)[1]
        return self.base_eps

    @property
    def per_device_batch(self) -> int:
        return self.batch_size // self.world_size

    @property
    def micro_batch(self) -> int:
        """Samples per forward pass on one device (per-device batch / accumulation)."""
        return self.per_device_batch // self.accumulate

    @property
    def lr(self) -> float:
        return scaled_lr(self.base_lr, self.batch_size, self.base_batch_size, self.lr_scaling)

    @property
    def epochs(self) -> int:
        # Fractional stretched budgets round up: a run never trains less than asked.
        return math.ceil(self.base_epochs * self.stretch - 1e-9) if self.base_epochs > 0 else -1

    @property
    def max_steps(self) -> int:
        return (
            math.ceil(self.base_max_steps * self.stretch - 1e-9) if self.base_max_steps > 0 else -1
        )

    @property
    def milestones(self) -> tuple[float, ...]:
        # Milestones stay fractional; the schedule converts them to steps.
        return tuple(m * self.stretch for m in self.base_milestones)

    @property
    def warmup(self) -> float:
        return self.base_warmup * self.stretch

    def to_steps(self, amount: float, steps_per_epoch: int) -> int:
        """An amount of `unit`s (a milestone, the warmup) in optimizer steps."""
        return round(amount * (steps_per_epoch if self.unit == "epoch" else 1))

    def effective(self, steps_per_epoch: int, num_train: int | None = None) -> dict:
        """What the run does, after scaling and stretching: the `plan` that config.yaml, the
        loggers' config and summary.json record next to the base regime they came from."""
        milestones, _ = self.decays(steps_per_epoch, num_train)
        total = [self.epochs * steps_per_epoch] if self.epochs > 0 else []
        schedule = {}
        if self.phases:
            rows = self.phase_steps(num_train)
            schedule = {"batch_schedule": rows}
            total = [sum(r["steps"] for r in rows)]
        total += [self.max_steps] if self.max_steps > 0 else []
        return {
            "batch_size": self.batch_size,
            "per_device_batch": self.per_device_batch,
            "micro_batch": self.micro_batch,
            "ghost_batch_size": self.ghost_batch_size,
            "lr": self.lr,
            "regime_stretch": self.stretch,
            "epochs": self.epochs,
            "max_steps": self.max_steps,
            "steps_per_epoch": steps_per_epoch,
            "total_steps": min(total),
            "milestones_steps": milestones,
            "warmup_steps": self.to_steps(self.warmup, steps_per_epoch),
            "optimizer": self.optimizer,
            "batch_augment": self.batch_augment,
            "samples_per_step": self.batch_size * self.batch_augment,
            **schedule,
            **({"betas": list(self.betas), "eps": self.eps} if self.adaptive else {}),
        }

    @property
    def adaptive(self) -> bool:
        return self.optimizer in ADAPTIVE

    def describe(self) -> str:
        devices = f"{self.world_size} device{'s' if self.world_size > 1 else ''}"
        parts = [f"batch {self.batch_size} = {devices} x {self.per_device_batch}"]
        if self.accumulate > 1:
            parts[0] += f" ({self.accumulate} micro-batches of {self.micro_batch})"
        if self.batch_augment > 1:
            parts.append(
                f"batch augmentation x{self.batch_augment}: {self.batch_size * self.batch_augment}"
                f" samples per step ({self.batch_size} distinct)"
            )
        if self.ghost_batch_size:
            ghosts = math.ceil(self.micro_batch * self.batch_augment / self.ghost_batch_size)
            parts.append(f"ghost {self.ghost_batch_size} ({ghosts} ghosts per forward)")
        ratio = f"{self.batch_size}/{self.base_batch_size}"
        rule = {"none": "", "linear": f" x {ratio}", "sqrt": f" x sqrt({ratio})"}
        parts.append(f"lr {self.base_lr:g}{rule[self.lr_scaling]} = {self.lr:.4g}")
        if self.optimizer != "sgd":
            parts[-1] += f" ({self.optimizer})"
        if self.adaptive and self.betas != self.base_betas:  # Malladi et al.'s sqrt rule
            (b1, b2), (c1, c2) = self.base_betas, self.betas
            parts.append(
                f"betas 1 - {ratio} x (1 - ({b1:g}, {b2:g})) = ({c1:.4g}, {c2:.6g}), "
                f"eps {self.base_eps:g} / sqrt({ratio}) = {self.eps:.3g}"
            )
        if self.warmup:
            parts.append(f"warmup {self.warmup:g} {self.unit}s from lr {self.base_lr:g}")
        budget = [f"{self.epochs} epochs"] if self.epochs > 0 else []
        budget += [f"{self.max_steps} steps"] if self.max_steps > 0 else []
        if self.phases:  # Smith et al.: the milestones grow the batch instead
            grows = ", ".join(
                f"{p.batch_size} from epoch {p.start_epoch}"
                + (f" (lr x{p.lr_factor:.3g})" if p.lr_factor != 1 else "")
                for p in self.phases[1:]
            )
            parts.append(f"regime x{self.stretch:g}: {' or '.join(budget)}, batch grows to {grows}")
            return "; ".join(parts)
        parts.append(
            f"regime x{self.stretch:g}: {' or '.join(budget)}, "
            f"lr decays at {self.unit}s {[round(m, 2) for m in self.milestones]}"
        )
        return "; ".join(parts)


def make_plan(cfg, world_size: int) -> BatchPlan:
    """The run's batch plan from its validated config and the trainer's world size."""
    batch = cfg.batch_size
    accumulate = cfg.trainer.accumulate_grad_batches
    if batch % world_size:
        raise ConfigError(
            f"batch_size={batch} is not divisible by the {world_size} devices "
            f"(trainer.devices x trainer.num_nodes); use a multiple of {world_size}"
        )
    if (batch // world_size) % accumulate:
        raise ConfigError(
            f"trainer.accumulate_grad_batches={accumulate} does not divide the per-device "
            f"batch {batch // world_size}; use a divisor of it"
        )
    optim = cfg.optim
    gamma = optim.gamma
    milestones = tuple(optim.milestones)
    per_milestone = [gamma] * len(milestones) if isinstance(gamma, int | float) else list(gamma)
    stretch = regime_factor(cfg.regime, cfg.regime_multiplier, batch, optim.base_batch_size)
    phases = ()
    if cfg.batch_schedule == "grow":
        if accumulate > 1 or optim.schedule_unit != "epoch":
            raise ConfigError(
                "batch_schedule=grow: needs real batches changing between epochs "
                "(trainer.accumulate_grad_batches=1, optim.schedule_unit=epoch)"
            )
        stretched = [m * stretch for m in milestones]
        phases = grow_phases(batch, cfg.batch_schedule_cap, stretched, per_milestone, world_size)
    return BatchPlan(
        batch_size=batch,
        world_size=world_size,
        accumulate=accumulate,
        ghost_batch_size=cfg.ghost_batch_size,
        base_batch_size=optim.base_batch_size,
        base_lr=optim.lr,
        lr_scaling=cfg.lr_scaling,
        base_epochs=cfg.trainer.max_epochs,
        base_max_steps=cfg.trainer.max_steps,
        unit=optim.schedule_unit,
        base_milestones=milestones,
        base_warmup=optim.warmup,
        stretch=stretch,
        gammas=tuple(per_milestone),
        phases=phases,
        optimizer=optim.optimizer,
        batch_augment=cfg.batch_augment,
        base_betas=tuple(optim.betas),
        base_eps=optim.eps,
    )


def decay_factors(gamma: float | list[float], n_milestones: int) -> list[float]:
    """The LR factor after 0, 1, ... milestones: `gamma` each time, or one multiplier per
    milestone (AlexNet's 1e-2 -> 5e-3 -> 1e-3 -> ... is gamma = [0.5, 0.2, 0.5, 0.2])."""
    steps = [gamma] * n_milestones if isinstance(gamma, int | float) else list(gamma)
    return [math.prod(steps[:k]) for k in range(n_milestones + 1)]


def make_scheduler(optimizer, plan: BatchPlan, steps_per_epoch: int, num_train: int | None = None):
    """Per-step LR schedule: optional linear warmup from base_lr to the scaled lr (Goyal et
    al.), times a step decay at each (stretched) milestone. Milestones and warmup in epochs
    become optimizer steps here, rounded to the nearest step, so fractional epochs are
    honoured; in steps they are used as they are (rounded). Under a batch-size schedule the
    LR keeps its value where the batch grows (`plan.decays`)."""
    from bisect import bisect_right

    from torch.optim.lr_scheduler import LambdaLR

    milestones, factors = plan.decays(steps_per_epoch, num_train)
    warmup_steps = plan.to_steps(plan.warmup, steps_per_epoch)
    start = plan.base_lr / plan.lr if plan.lr > 0 else 1.0

    def factor(step: int) -> float:
        warmup = start + (1 - start) * step / warmup_steps if step < warmup_steps else 1.0
        return warmup * factors[bisect_right(milestones, step)]

    return LambdaLR(optimizer, factor)
