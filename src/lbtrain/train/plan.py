"""Batch arithmetic: per-device and ghost batches, the LR scaling rule, the regime stretch.

The paper's fixes +LR and +RA are two pure functions here (`scaled_lr`, `regime_factor`);
`BatchPlan` applies them to one run and states the arithmetic in one line of the log.
"""

import math
from dataclasses import dataclass, field, replace

from lbtrain.train.batch_schedule import Phase, grow_phases, warmup_phases
from lbtrain.train.optimizers import OPTIMIZERS

# lr = base_lr * (batch_size / base_batch_size) ** power
LR_SCALING_POWERS = {"none": 0.0, "linear": 1.0, "sqrt": 0.5}
REGIMES = ("fixed", "adapted")


def scaled_lr(base_lr: float, batch_size: int, base_batch_size: int, rule: str) -> float:
    """+LR: sqrt keeps the covariance of the weight update of small-batch SGD (Hoffer et al.);
    linear is Goyal et al.'s rule."""
    return base_lr * (batch_size / base_batch_size) ** LR_SCALING_POWERS[rule]


def adam_sqrt_rule(
    betas: tuple[float, float], eps: float, kappa: float
) -> tuple[tuple[float, float], float]:
    """Malladi et al. 2022's square-root rule for Adam, the SDE-preserving one: with the batch
    kappa times larger, lr x sqrt(kappa) (`scaled_lr`), 1 - beta x kappa for both betas, and
    eps / sqrt(kappa). Returns the scaled (betas, eps)."""
    return (1 - kappa * (1 - betas[0]), 1 - kappa * (1 - betas[1])), eps / math.sqrt(kappa)


def halflife_rule(betas: tuple[float, float], kappa: float) -> tuple[float, float]:
    """Marek et al. 2025's rule: beta2 ** kappa keeps the second moment's half-life fixed in
    samples when the batch is kappa times larger; beta1 and eps stay."""
    return betas[0], betas[1] ** kappa


ADAM_BATCH_RULES = ("sde", "halflife")  # optim.adam_rule


def resolved_adam_rule(optimizer: str, lr_scaling: str, rule: str | None) -> str | None:
    """The rule that sets Adam's betas (and eps) for the batch: `optim.adam_rule`, or when it
    is null Malladi et al.'s (sde) for AdamW under lr_scaling=sqrt, as before the key existed."""
    if rule is None and optimizer == "adamw" and lr_scaling == "sqrt":
        return "sde"
    return rule


def regime_factor(regime: str, regime_multiplier: float, batch_size: int, base_batch: int) -> float:
    """+RA: how much longer (in epochs) this run trains than the base regime.

    `adapted` stretches by batch_size / base_batch_size, so a large-batch run takes as
    many optimizer steps as the base regime; `regime_multiplier` multiplies on top.
    """
    return regime_multiplier * (batch_size / base_batch if regime == "adapted" else 1.0)


@dataclass(frozen=True)
class BatchPlan:
    """What one run does with its global batch and its base regime: the config's numbers,
    and (resolved once, in __post_init__) what the LR rule and the regime stretch make of
    them. Every number a run logs about its own arithmetic comes from here."""

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
    base_max_steps: int  # trainer.max_steps; -1: the budget is base_epochs
    unit: str  # of milestones and warmup: "epoch" or "step"
    optimizer: str
    adaptive: bool  # Adam-style moments: betas and eps apply (optimizers.py)
    batch_augment: int  # copies of each sample per batch: batch_size x this per step
    base_betas: tuple[float, float]  # adamw, lamb: at base_batch_size
    base_eps: float
    adam_rule: str | None  # optim.adam_rule: null, sde or halflife (see resolved_adam_rule)
    base_weight_decay: float
    fixed_timescale: bool  # weight decay keeps the base regime's tau_epoch (decoupled decay)
    decoupled_decay: bool  # the optimizer shrinks weights by lr x weight_decay a step (AdamW)
    gammas: tuple[float, ...]  # the LR factor at each milestone
    phases: tuple[Phase, ...]  # a batch-size schedule (batch_schedule.py); () = none
    # resolved from the above
    kappa: float = field(init=False)  # batch_size / base_batch_size
    per_device_batch: int = field(init=False)
    micro_batch: int = field(init=False)  # samples per forward pass on one device
    lr: float = field(init=False)
    epochs: int = field(init=False)
    max_steps: int = field(init=False)
    milestones: tuple[float, ...] = field(init=False)  # stretched; fractional until in steps
    warmup: float = field(init=False)
    betas: tuple[float, float] = field(init=False)
    eps: float = field(init=False)
    weight_decay: float = field(init=False)
    timescale: float | None = field(init=False)  # tau_iter = 1 / (lr wd), at the peak lr

    def __post_init__(self) -> None:
        def resolve(name, value):
            object.__setattr__(self, name, value)  # frozen: set once, here

        resolve("kappa", self.batch_size / self.base_batch_size)
        resolve("per_device_batch", self.batch_size // self.world_size)
        resolve("micro_batch", self.per_device_batch // self.accumulate)
        resolve("lr", scaled_lr(self.base_lr, self.batch_size, self.base_batch_size,
                                self.lr_scaling))  # fmt: skip
        # Fractional stretched budgets round up: a run never trains less than asked.
        stretched = lambda n: math.ceil(n * self.stretch - 1e-9) if n > 0 else -1  # noqa: E731
        resolve("epochs", stretched(self.base_epochs))
        resolve("max_steps", stretched(self.base_max_steps))
        resolve("milestones", tuple(m * self.stretch for m in self.base_milestones))
        resolve("warmup", self.base_warmup * self.stretch)
        betas, eps = self.base_betas, self.base_eps
        rule = resolved_adam_rule(self.optimizer, self.lr_scaling, self.adam_rule)
        if rule == "sde":
            betas, eps = adam_sqrt_rule(betas, eps, self.kappa)
        elif rule == "halflife":
            betas = halflife_rule(betas, self.kappa)
        resolve("betas", tuple(betas))
        resolve("eps", eps)
        # Wang & Aitchison 2024: tau_epoch = B / (N lr wd); fixed, wd x (B / B0) x (lr0 / lr)
        wd = self.base_weight_decay
        if self.fixed_timescale and self.lr > 0:
            wd *= self.kappa * self.base_lr / self.lr
        resolve("weight_decay", wd)
        decays = self.decoupled_decay and wd > 0 and self.lr > 0
        resolve("timescale", 1 / (self.lr * wd) if decays else None)

    def batch_at(self, epoch: int) -> int:
        """The global batch of this epoch (it changes only under a batch-size schedule)."""
        started = [p.batch_size for p in self.phases if p.start_epoch <= epoch]
        return started[-1] if started else self.batch_size  # the first phase starts at 0

    def per_device_batch_at(self, epoch: int) -> int:
        return self.batch_at(epoch) // self.world_size

    def decays(
        self, steps_per_epoch: int, num_train: int | None = None
    ) -> tuple[list[int], list[float]]:
        """The steps at which the noise scale drops (LR decays; under a batch schedule, batch
        increases too) and the LR factor from each on, the first for step 0."""
        if not self.phases:
            milestones = [self.to_steps(m, steps_per_epoch) for m in self.milestones]
            return milestones, [math.prod(self.gammas[:k]) for k in range(len(milestones) + 1)]
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

    def to_steps(self, amount: float, steps_per_epoch: int) -> int:
        """An amount of `unit`s (a milestone, the warmup) in optimizer steps."""
        return round(amount * (steps_per_epoch if self.unit == "epoch" else 1))


def effective(plan: BatchPlan, steps_per_epoch: int, num_train: int | None = None) -> dict:
    """What the run does, after scaling and stretching: the `plan` that config.yaml, the
    loggers' config and summary.json record next to the base regime they came from."""
    milestones, _ = plan.decays(steps_per_epoch, num_train)
    total = [plan.epochs * steps_per_epoch] if plan.epochs > 0 else []
    schedule = {}
    if plan.phases:
        rows = plan.phase_steps(num_train)
        schedule = {"batch_schedule": rows}
        total = [sum(r["steps"] for r in rows)]
    total += [plan.max_steps] if plan.max_steps > 0 else []
    return {
        "batch_size": plan.batch_size,
        "per_device_batch": plan.per_device_batch,
        "micro_batch": plan.micro_batch,
        "ghost_batch_size": plan.ghost_batch_size,
        "lr": plan.lr,
        "regime_stretch": plan.stretch,
        "epochs": plan.epochs,
        "max_steps": plan.max_steps,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": min(total),
        "milestones_steps": milestones,
        "warmup_steps": plan.to_steps(plan.warmup, steps_per_epoch),
        "optimizer": plan.optimizer,
        "batch_augment": plan.batch_augment,
        "samples_per_step": plan.batch_size * plan.batch_augment,
        **schedule,
        **({"betas": list(plan.betas), "eps": plan.eps} if plan.adaptive else {}),
        **({"weight_decay": plan.weight_decay} if plan.fixed_timescale else {}),
        **(timescales(plan, steps_per_epoch, num_train) if plan.timescale else {}),
    }


def timescales(plan: BatchPlan, steps_per_epoch: int, num_train: int | None) -> dict:
    """AdamW's weights as an EMA (Wang & Aitchison 2024): its timescale in optimizer steps,
    1 / (lr wd) at the peak lr, and in epochs, x B / N."""
    per_epoch = num_train / plan.batch_size if num_train else steps_per_epoch
    return {"timescale_steps": plan.timescale, "timescale_epochs": plan.timescale / per_epoch}


def describe(plan: BatchPlan) -> str:
    """The run's arithmetic in one log line."""
    p = plan
    devices = f"{p.world_size} device{'s' if p.world_size > 1 else ''}"
    parts = [f"batch {p.batch_size} = {devices} x {p.per_device_batch}"]
    if p.accumulate > 1:
        parts[0] += f" ({p.accumulate} micro-batches of {p.micro_batch})"
    if p.batch_augment > 1:
        parts.append(
            f"batch augmentation x{p.batch_augment}: {p.batch_size * p.batch_augment}"
            f" samples per step ({p.batch_size} distinct)"
        )
    if p.ghost_batch_size:
        ghosts = math.ceil(p.micro_batch * p.batch_augment / p.ghost_batch_size)
        parts.append(f"ghost {p.ghost_batch_size} ({ghosts} ghosts per forward)")
    ratio = f"{p.batch_size}/{p.base_batch_size}"
    rule = {"none": "", "linear": f" x {ratio}", "sqrt": f" x sqrt({ratio})"}
    parts.append(f"lr {p.base_lr:g}{rule[p.lr_scaling]} = {p.lr:.4g}")
    if p.optimizer != "sgd":
        parts[-1] += f" ({p.optimizer})"
    rule = resolved_adam_rule(p.optimizer, p.lr_scaling, p.adam_rule) if p.adaptive else None
    (b1, b2), (c1, c2) = p.base_betas, p.betas
    if rule == "sde":  # Malladi et al.
        parts.append(
            f"betas 1 - {ratio} x (1 - ({b1:g}, {b2:g})) = ({c1:.4g}, {c2:.6g}), "
            f"eps {p.base_eps:g} / sqrt({ratio}) = {p.eps:.3g}"
        )
    elif rule == "halflife":  # Marek et al.
        parts.append(f"beta2 {b2:g} ** ({ratio}) = {c2:.6g} (half-life fixed in samples)")
    if p.fixed_timescale:
        parts.append(
            f"weight decay {p.base_weight_decay:g} x {ratio} x {p.base_lr:g}/{p.lr:.4g} = "
            f"{p.weight_decay:.4g} (timescale fixed in epochs)"
        )
    if p.timescale:
        parts.append(f"timescale 1/(lr x wd) = {p.timescale:.4g} steps")
    if p.warmup:
        parts.append(f"warmup {p.warmup:g} {p.unit}s from lr {p.base_lr:g}")
    budget = [plural(p.epochs, "epoch")] if p.epochs > 0 else []
    budget += [plural(p.max_steps, "step")] if p.max_steps > 0 else []
    if p.phases:  # Smith et al.: the milestones grow the batch instead
        grows = ", ".join(
            f"{ph.batch_size} from epoch {ph.start_epoch}"
            + (f" (lr x{ph.lr_factor:.3g})" if ph.lr_factor != 1 else "")
            for ph in p.phases[1:]
        )
        parts.append(f"regime x{p.stretch:g}: {' or '.join(budget)}, batch grows to {grows}")
        return "; ".join(parts)
    parts.append(
        f"regime x{p.stretch:g}: {' or '.join(budget)}, "
        f"lr decays at {p.unit}s {[round(m, 2) for m in p.milestones]}"
    )
    end = p.epochs if p.unit == "epoch" else p.max_steps
    if end > 0 and (past := [round(m, 2) for m in p.milestones if m >= end]):
        which = "all" if len(past) == len(p.milestones) else f"{past}"
        parts[-1] += (
            f" ({which} past the run's end at {p.unit} {end}: never reached; shorten "
            "optim.milestones too)"
        )
    return "; ".join(parts)


def plural(n: float, unit: str) -> str:
    """`1 epoch`, `30 epochs`."""
    return f"{n:g} {unit}{'' if n == 1 else 's'}"


def make_plan(cfg, world_size: int) -> BatchPlan:
    """The run's batch plan from its validated config and the trainer's world size."""
    batch = cfg.batch_size
    accumulate = cfg.trainer.accumulate_grad_batches
    if batch % world_size:
        raise ValueError(
            f"batch_size={batch} is not divisible by the {world_size} devices "
            f"(trainer.devices x trainer.num_nodes); use a multiple of {world_size}"
        )
    if (batch // world_size) % accumulate:
        raise ValueError(
            f"trainer.accumulate_grad_batches={accumulate} does not divide the per-device "
            f"batch {batch // world_size}; use a divisor of it"
        )
    optim = cfg.optim
    gamma, milestones = optim.gamma, tuple(optim.milestones)
    plan = BatchPlan(
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
        stretch=regime_factor(cfg.regime, cfg.regime_multiplier, batch, optim.base_batch_size),
        gammas=tuple([gamma] * len(milestones) if isinstance(gamma, int | float) else gamma),
        phases=(),
        optimizer=optim.optimizer,
        adaptive=OPTIMIZERS.facts[optim.optimizer]["adaptive"],
        batch_augment=cfg.batch_augment,
        base_betas=tuple(optim.betas),
        base_eps=optim.eps,
        adam_rule=optim.adam_rule,
        base_weight_decay=optim.weight_decay,
        fixed_timescale=optim.fixed_timescale,
        decoupled_decay=OPTIMIZERS.facts[optim.optimizer]["decoupled_decay"],
    )
    return replace(plan, phases=batch_phases(cfg, plan)) if cfg.batch_schedule != "none" else plan


def batch_phases(cfg, plan: BatchPlan) -> tuple[Phase, ...]:
    """The phases of a batch-size schedule, from the plan's stretched epochs and milestones."""
    p = plan
    if cfg.batch_schedule == "grow":
        return grow_phases(p.batch_size, cfg.batch_schedule_cap, p.milestones, p.gammas,
                           p.world_size)  # fmt: skip
    points = [list(point) for point in cfg.batch_schedule_points]
    for epoch, grown in points:
        if grown % p.world_size or epoch >= p.epochs:
            raise ValueError(
                f"batch_schedule_points: [{epoch}, {grown}] must start within the run's "
                f"{p.epochs} epochs with a batch that divides across its {p.world_size} devices"
            )
    return warmup_phases(p.batch_size, points, p.milestones, p.gammas,
                         LR_SCALING_POWERS[p.lr_scaling])  # fmt: skip


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
