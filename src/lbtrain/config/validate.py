"""The values of a run's configuration, checked before anything is built: `validate` checks a
composed config against typed schemas (types only: the values live in conf/) and ranges, topic
by topic, in one line that names the key, the bad value and what is allowed. The command line
calls it for every point of a sweep before Hydra starts (`command_line.check_overrides`).
What only built things can tell (devices, data on disk, the model against the data, a
checkpoint) is checked in `train/fit.py` right after building, still before training.
"""

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lbtrain.errors import ConfigError

GROUPS = ("data", "model", "optim", "trainer", "logger", "callbacks", "recipe", "experiment")
# Keys added to conf/train.yaml after runs were written, with the value that does what those
# runs did: a run whose config lacks one reads as having it (the report pools it with new
# runs; an in-place resume of it is no change)
ADDED_KEYS = {"optim.adam_rule": None, "optim.fixed_timescale": False, "branch.base_run": None,
              "branch.step": None, "branch.samples": None, "batch_schedule_points": [],
              "stop_on_divergence": True, "threads": "auto",
              "trainer.enable_checkpointing": False}  # fmt: skip


@dataclass
class OptimSchema:
    """The base regime: what the LR was tuned for, at `base_batch_size`. Types only: every
    value, and what it means, is in conf/train.yaml (the one place for defaults)."""

    lr: float = MISSING
    base_batch_size: int = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    nesterov: bool = MISSING
    milestones: list[float] = MISSING
    gamma: Any = MISSING  # a factor, or one per milestone
    warmup: float = MISSING
    schedule_unit: str = MISSING
    optimizer: str = MISSING
    betas: list[float] = MISSING
    eps: float = MISSING
    trust_coeff: float = MISSING
    max_grad_norm: float | None = MISSING
    exclude_norm_and_bias: bool | None = MISSING
    options: dict[str, Any] = MISSING
    adam_rule: str | None = MISSING
    fixed_timescale: bool = MISSING


@dataclass
class TrainerSchema:
    """The Trainer arguments lbtrain itself reads (conf/trainer/default.yaml sets them); any
    other key passes through to Lightning."""

    max_epochs: Any = MISSING  # types: validate's range checks, which name what is allowed
    max_steps: Any = MISSING
    accumulate_grad_batches: Any = MISSING
    log_every_n_steps: Any = MISSING


@dataclass
class RunSchema:
    """Types only, as OptimSchema: the values are in conf/train.yaml."""

    batch_size: int = MISSING
    batch_augment: int = MISSING
    batch_schedule: str = MISSING
    batch_schedule_cap: int = MISSING
    seed: int = MISSING
    lr_scaling: str = MISSING
    ghost_batch_size: int | None = MISSING
    regime: str = MISSING
    regime_multiplier: float = MISSING
    large_batch_size: int = MISSING
    ckpt_path: str | None = MISSING
    imports: list[str] = MISSING
    compile: bool = MISSING
    stop_on_divergence: bool = MISSING
    threads: Any = MISSING  # "auto" or an int: validate says which
    channels_last: bool = MISSING
    optim: OptimSchema = field(default_factory=OptimSchema)  # structure, no values
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    data: Any = MISSING
    model: Any = MISSING
    logger: Any = MISSING
    callbacks: Any = MISSING
    paths: Any = MISSING
    report: Any = MISSING
    branch: Any = MISSING
    batch_schedule_points: Any = MISSING


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: {allowed}")


# report and branch have lines of their own (validate)
MAPPINGS = ("data", "model", "optim", "trainer", "logger", "callbacks", "paths")


def check_mappings(cfg: DictConfig) -> None:
    """A string where a mapping belongs (`logger: csv` in an experiment file: a config group
    picked as if it were a value) in one line naming the key and, where known, the file."""
    for key in MAPPINGS:
        value = cfg.get(key)
        if isinstance(value, DictConfig) or (value is None and key in ("logger", "callbacks")):
            continue
        where = f" (set in {file})" if (file := _file_setting(key)) else ""
        pick = (f"; to pick the {key} config {value!r}, write `- override /{key}: {value}` in "
                "that file's defaults list") if key in GROUPS else ""  # fmt: skip
        raise ConfigError(f"{key}={value}{where}: must be a mapping of {key} settings{pick}")


def _file_setting(key: str) -> str | None:
    """The config file that sets top-level `key` to a plain value: the primary config, or
    the chosen experiment or recipe (`# @package _global_`), in lbtrain's or your config
    dirs. None outside a Hydra job or where no such file is found."""
    import yaml
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    dirs = [files("lbtrain.conf"), *(Path(d.removeprefix("file://")) for d in hydra.searchpath)]
    chosen = [(g, hydra.runtime.choices.get(g)) for g in ("experiment", "recipe")]
    names = ["train.yaml"] + [f"{group}/{option}.yaml" for group, option in chosen if option]
    for name in names:
        for folder in dirs:
            path = folder / name
            if path.is_file() and not isinstance((yaml.safe_load(path.read_text()) or {})
                                                 .get(key, {}), dict | list | None):  # fmt: skip
                return str(path)
    return None


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (one line) for the first bad value in a composed run config."""
    check_mappings(cfg)
    schema = OmegaConf.structured(RunSchema)
    OmegaConf.set_struct(schema.trainer, False)  # Lightning's other arguments pass through
    try:
        merged = OmegaConf.merge(schema, cfg)
    except OmegaConfBaseException as e:
        msg = str(e.msg or e).splitlines()[0]  # OmegaConf's own line, else its whole text
        raise ConfigError(f"{e.full_key or 'config'}: {msg}") from None
    if missing := sorted(OmegaConf.missing_keys(merged)):
        raise ConfigError(
            f"{missing[0]}: missing from the config; lbtrain reads it (conf/train.yaml and "
            "conf/trainer/default.yaml set every key lbtrain reads: compose from them)"
        )
    for check in TOPICS:  # the first bad value, topic by topic
        check(cfg)


def _int_at_least(low: int):
    return lambda v: _is_int(v) and v >= low


def _choices(key: str, options) -> tuple:
    return key, lambda v: v in options, f"use {', '.join(options)}"


def ranges() -> tuple:
    """(key, whether its value is allowed, what is allowed): each key on its own, checked in
    this order before the topics that relate keys to each other."""
    from lbtrain.train.optimizers import OPTIMIZERS
    from lbtrain.train.plan import ADAM_BATCH_RULES, LR_SCALING_POWERS, REGIMES

    positive, at_least_0 = (lambda v: v > 0, "must be > 0"), (lambda v: v >= 0, "must be >= 0")
    positive_or_null = (lambda v: v is None or v > 0, "must be > 0 or null")
    # a table, one key a row
    # fmt: off
    return (
        ("batch_size", lambda v: v > 0, "must be a positive integer"),
        ("threads", lambda v: v == "auto" or _int_at_least(1)(v), "must be auto or an int >= 1"),
        # Lightning's seed_everything would replace a seed outside numpy's range by 0, silently
        ("seed", lambda v: 0 <= v < 2**32, "must be >= 0 and < 2**32"),
        ("large_batch_size", *positive),
        ("batch_augment", lambda v: v >= 1, "must be an integer >= 1"),
        _choices("batch_schedule", ("none", "grow", "warmup")),
        _choices("lr_scaling", LR_SCALING_POWERS),
        _choices("regime", REGIMES),
        ("regime_multiplier", *positive),
        ("ghost_batch_size", *positive_or_null),
        ("optim.lr", *at_least_0),
        ("optim.base_batch_size", *positive),
        _choices("optim.optimizer", OPTIMIZERS),
        ("optim.momentum", lambda v: 0 <= v < 1, "must be in [0, 1)"),
        ("optim.betas", lambda v: len(v) == 2 and all(0 <= b < 1 for b in v),
         "must be two values in [0, 1)"),
        ("optim.eps", *positive),
        ("optim.trust_coeff", *positive),
        ("optim.max_grad_norm", *positive_or_null),
        ("optim.adam_rule", lambda v: v is None or v in ADAM_BATCH_RULES,
         f"use null, {', '.join(ADAM_BATCH_RULES)}"),
        ("optim.weight_decay", *at_least_0),
        ("optim.warmup", *at_least_0),
        _choices("optim.schedule_unit", ("epoch", "step")),
        ("trainer.accumulate_grad_batches", _int_at_least(1), "must be an int >= 1"),
        ("trainer.log_every_n_steps", _int_at_least(1), "must be an int >= 1"),
        ("trainer.gradient_clip_val", lambda v: v is None or isinstance(v, int | float) and v >= 0,
         "must be >= 0 or null"),
        ("trainer.max_steps", lambda v: _is_int(v) and (v == -1 or v > 0),
         "must be -1 (no step budget) or an int > 0"),
        ("report.order", lambda v: v is None or _is_int(v),
         "must be an integer or null (rows sort by it)"),
    )
    # fmt: on


def _check_ranges(cfg: DictConfig) -> None:
    """Each key of `ranges` on its own; a data module's or logger's keys where it has them."""
    report = cfg.report
    _check(isinstance(report, DictConfig) and set(report) == {"label", "order"}, "report",
           report, "must be {label: <text or null>, order: <int or null>}")  # fmt: skip
    for key, ok, allowed in ranges():
        value = OmegaConf.select(cfg, key)
        _check(ok(list(value) if isinstance(value, ListConfig) else value), key, value, allowed)
    d = cfg.data
    if "eval_batch_size" in d:
        _check(_int_at_least(1)(d.eval_batch_size), "data.eval_batch_size", d.eval_batch_size,
               "must be a positive integer")  # fmt: skip
    wandb = (cfg.get("logger") or {}).get("wandb")
    if wandb is not None and "mode" in wandb:
        modes = ("online", "offline", "disabled")
        _check(wandb.mode in modes, "logger.wandb.mode", wandb.mode, f"use {', '.join(modes)}")


def _check_batch_schedule(cfg: DictConfig) -> None:
    """Batch augmentation against the data; a batch-size schedule and its points."""
    from lbtrain.train.plan import regime_factor

    d = cfg.data  # keys a data module may not have: checked where it has them
    _check(cfg.batch_augment == 1 or "augment" not in d or d.augment, "batch_augment",
           cfg.batch_augment, "the copies would be identical without augmentation; set "
           "data.augment=true")  # fmt: skip
    points = cfg.batch_schedule_points
    pairs = OmegaConf.to_container(points) if isinstance(points, ListConfig) else points
    _check(
        isinstance(pairs, list) and all(isinstance(p, list) and len(p) == 2
                                        and all(_is_int(v) for v in p) for p in pairs)
        and all(e >= 0 for e, _ in pairs) and all(b >= cfg.batch_size for _, b in pairs)
        and [e for e, _ in pairs] == sorted({e for e, _ in pairs}),
        "batch_schedule_points", pairs,
        f"must be [[epoch, batch], ...] with increasing epochs >= 0 and batches >= batch_size "
        f"({cfg.batch_size})",
    )  # fmt: skip
    _check(bool(pairs) == (cfg.batch_schedule == "warmup"), "batch_schedule_points", pairs,
           "are what batch_schedule=warmup follows, and only it: give both or neither")  # fmt: skip
    if cfg.batch_schedule == "none":
        return
    _check(cfg.trainer.accumulate_grad_batches == 1 and cfg.optim.schedule_unit == "epoch",
           "batch_schedule", cfg.batch_schedule, "needs real batches changing between epochs "
           "(trainer.accumulate_grad_batches=1, optim.schedule_unit=epoch)")  # fmt: skip
    cap = cfg.batch_schedule_cap
    _check(cfg.batch_schedule != "grow" or cap >= cfg.batch_size, "batch_schedule_cap", cap,
           f"must be >= batch_size={cfg.batch_size}")  # fmt: skip
    # the milestones as the plan stretches them: where the batch and LR change, between epochs
    stretch = regime_factor(cfg.regime, cfg.regime_multiplier, cfg.batch_size,
                            cfg.optim.base_batch_size)  # fmt: skip
    stretched = [m * stretch for m in cfg.optim.milestones]
    _check(all(m == int(m) for m in stretched), "batch_schedule", cfg.batch_schedule,
           f"the milestones {stretched} must be whole epochs (the batch changes between "
           "epochs); use integer optim.milestones and regime stretch")  # fmt: skip


def _check_trainer(cfg: DictConfig) -> None:
    """What Lightning may not do; the epoch budget against the step budget."""
    fast = cfg.trainer.get("fast_dev_run")
    _check(not fast, "trainer.fast_dev_run", fast,
           "lbtrain sets the epochs and steps from its batch plan, so it would train whole "
           "epochs of 1 batch and write results; for a quick check use trainer.max_epochs=1 "
           "trainer.limit_train_batches=1 trainer.limit_val_batches=1 logger=none")  # fmt: skip
    sync_bn = cfg.trainer.get("sync_batchnorm")
    _check(
        not (cfg.ghost_batch_size and sync_bn),
        "trainer.sync_batchnorm",
        sync_bn,
        "cannot be combined with ghost_batch_size (GBN normalises each ghost batch on its own)",
    )
    epochs, steps = cfg.trainer.max_epochs, cfg.trainer.max_steps
    step_based = cfg.optim.schedule_unit == "step" and steps > 0
    _check(
        _is_int(epochs) and (epochs > 0 or (epochs == -1 and step_based)),
        "trainer.max_epochs",
        epochs,
        "must be an int > 0 (or -1 with trainer.max_steps > 0 and optim.schedule_unit=step)",
    )


def _check_optimizer(cfg: DictConfig) -> None:
    """The LR rules the optimizer has; Adam's batch rules and AdamW's timescale."""
    from lbtrain.train.optimizers import OPTIMIZERS
    from lbtrain.train.plan import adam_sqrt_rule, resolved_adam_rule

    o, betas = cfg.optim, list(cfg.optim.betas)
    facts = OPTIMIZERS.facts[o.optimizer]
    _check(cfg.lr_scaling in facts["lr_rules"], "lr_scaling", cfg.lr_scaling,
           f"has no defined rule for optim.optimizer={o.optimizer}; use "
           f"{', '.join(facts['lr_rules'])}")  # fmt: skip
    adaptive = ", ".join(name for name in OPTIMIZERS if OPTIMIZERS.facts[name]["adaptive"])
    _check(o.adam_rule is None or facts["adaptive"], "optim.adam_rule", o.adam_rule,
           f"optim.optimizer={o.optimizer} has no Adam moments; use null, or one of "
           f"{adaptive}")  # fmt: skip
    _check(o.adam_rule != "sde" or cfg.lr_scaling == "sqrt", "optim.adam_rule", o.adam_rule,
           f"Malladi et al.'s rule scales the lr by sqrt(batch_size / optim.base_batch_size) "
           f"too; set lr_scaling=sqrt (lr_scaling={cfg.lr_scaling})")  # fmt: skip
    if resolved_adam_rule(o.optimizer, cfg.lr_scaling, o.adam_rule) == "sde":
        kappa = cfg.batch_size / o.base_batch_size
        scaled, _ = adam_sqrt_rule(tuple(betas), o.eps, kappa)
        key, value = ("optim.adam_rule", o.adam_rule) if o.adam_rule else ("lr_scaling", "sqrt")
        _check(
            min(scaled) >= 0,
            key,
            value,
            f"with optim.optimizer={o.optimizer} scales 1 - beta by batch_size / "
            f"optim.base_batch_size = {kappa:g} (Malladi et al.), which takes "
            f"optim.betas={betas} below 0; use a base batch within "
            f"{min(1 / (1 - b) for b in betas):g}x of batch_size",
        )
    for key, value in (
        ("optim.adam_rule", o.adam_rule),
        ("optim.fixed_timescale", o.fixed_timescale),
    ):
        _check(not value or cfg.batch_schedule == "none", key, value,
               f"follows one batch; under batch_schedule={cfg.batch_schedule} the batch "
               "changes each phase and it would keep the first phase's values; use one or "
               "the other")  # fmt: skip
    decoupled = ", ".join(n for n in OPTIMIZERS if OPTIMIZERS.facts[n]["decoupled_decay"])
    _check(not o.fixed_timescale or facts["decoupled_decay"], "optim.fixed_timescale",
           o.fixed_timescale, f"optim.optimizer={o.optimizer} does not shrink the weights by "
           f"lr x weight_decay each step, so has no such timescale; use {decoupled}")  # fmt: skip
    _check(not o.fixed_timescale or o.weight_decay > 0, "optim.fixed_timescale",
           o.fixed_timescale, "needs optim.weight_decay > 0 (no decay, no timescale)")  # fmt: skip


def _check_lr_schedule(cfg: DictConfig) -> None:
    """Decays and milestones."""
    o = cfg.optim
    one_factor = isinstance(o.gamma, int | float)
    gammas = [o.gamma] if one_factor else list(o.gamma)
    _check(
        all(isinstance(g, int | float) and 0 < g <= 1 for g in gammas)
        and (one_factor or len(gammas) == len(o.milestones)),
        "optim.gamma",
        o.gamma,
        f"must be a factor in (0, 1], or a list of one such factor per milestone "
        f"({len(o.milestones)} milestones: {list(o.milestones)})",
    )
    _check(
        all(m > 0 for m in o.milestones) and list(o.milestones) == sorted(o.milestones),
        "optim.milestones",
        list(o.milestones),
        f"must be increasing positive {o.schedule_unit}s (optim.schedule_unit)",
    )


def _check_branch(cfg: DictConfig) -> None:
    """A branch from a base run's checkpoint."""
    b = cfg.branch
    _check(isinstance(b, DictConfig) and set(b) == {"base_run", "step", "samples"}, "branch", b,
           "must be {base_run: <run dir or null>, step: <int>, samples: <int>}")  # fmt: skip
    _check(b.base_run is not None or (b.step is None and b.samples is None), "branch.base_run",
           None, "a branch (branch.step, branch.samples) starts from a base run: give its "
           "dir")  # fmt: skip
    if b.base_run is not None:
        _check(_is_int(b.step) and b.step > 0, "branch.step", b.step,
               "must be the optimizer step of a checkpoint the base run saved")  # fmt: skip
        _check(_is_int(b.samples) and b.samples > 0, "branch.samples", b.samples,
               "must be a positive number of training samples")  # fmt: skip


TOPICS = (_check_ranges, _check_batch_schedule, _check_optimizer, _check_lr_schedule,
          _check_branch, _check_trainer)  # fmt: skip


def check_registered(cfg: DictConfig) -> None:
    """`model.name` and `data.name` name registered classes: known once their modules (and
    the config's `imports`) are imported, with torch, so checked as the run is built. A name
    not there is the registry's own one-line refusal."""
    from lbtrain.data import DATAMODULES
    from lbtrain.models import MODELS

    MODELS[cfg.model.name]  # a lookup: an unknown name raises ConfigError
    DATAMODULES[cfg.data.name]
