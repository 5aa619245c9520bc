"""`python -m lbtrain.run`: compose -> validate -> build -> fit -> summarise.

python -m lbtrain.run                                  # SB on MNIST-1D
python -m lbtrain.run -m batch_size=32,1024            # a sweep, one job per batch size
python -m lbtrain.run -m recipe=sb,lb,lb_lr,lb_lr_gbn,lb_lr_gbn_ra   # Table 1's columns
"""

import json
import logging
import sys
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from lbtrain import resolvers
from lbtrain.callbacks.weight_distance import WeightDistance
from lbtrain.config import ConfigError, check_group_choices, validate
from lbtrain.data import DATAMODULES
from lbtrain.diffusion import fit_diffusion
from lbtrain.gbn import check_ghost_batch_size, convert_to_ghost_batchnorm
from lbtrain.models import create_model
from lbtrain.module import Classifier
from lbtrain.scaling import make_plan

log = logging.getLogger("lbtrain")
resolvers.register()
# Lightning 2.6 trips over its own pytree deprecation on every run; nothing for users to act on.
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def build_model(cfg: DictConfig, num_classes: int, input_shape: tuple[int, ...]) -> torch.nn.Module:
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    model = create_model(kwargs.pop("name"), num_classes, input_shape, **kwargs)
    model = convert_to_ghost_batchnorm(model, cfg.ghost_batch_size)  # +GBN; None: unchanged
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if cfg.compile else model


def build_trainer(cfg: DictConfig, run_dir: Path) -> L.Trainer:
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    return L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=run_dir,
    )


def build(cfg: DictConfig, run_dir: Path) -> tuple[L.Trainer, Classifier, L.LightningDataModule]:
    """Trainer, module and data of one run, from its validated config."""
    trainer = build_trainer(cfg, run_dir)
    plan = make_plan(cfg, trainer.world_size)
    check_ghost_batch_size(cfg.ghost_batch_size, plan.micro_batch)
    trainer.fit_loop.max_epochs = plan.epochs  # the stretched regime
    log.info(plan.describe())

    L.seed_everything(cfg.seed, workers=True)
    data_kwargs = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = DATAMODULES[data_kwargs.pop("name")](
        batch_size=plan.micro_batch, shuffle_seed=cfg.seed, **data_kwargs
    )
    model = build_model(cfg, datamodule.num_classes, datamodule.input_shape)
    optim = cfg.optim
    module = Classifier(
        model,
        plan,
        num_classes=datamodule.num_classes,
        momentum=optim.momentum,
        weight_decay=optim.weight_decay,
        nesterov=optim.nesterov,
        gamma=optim.gamma,
    )
    return trainer, module, datamodule


def summarise(trainer: L.Trainer, module: Classifier) -> dict[str, float]:
    """Final metrics, steps taken and the diffusion fit over the initial high-LR phase."""
    summary = {k: float(v) for k, v in trainer.callback_metrics.items()}
    summary.update(global_step=trainer.global_step, epochs=trainer.current_epoch)
    distance = next((c for c in trainer.callbacks if isinstance(c, WeightDistance)), None)
    if distance and distance.history:
        steps, values = zip(*distance.history, strict=True)
        summary["weight_distance"] = values[-1]
        milestones = module.plan.milestones
        first_decay = round(milestones[0] * module.steps_per_epoch) if milestones else None
        summary.update(fit_diffusion(steps, values, until_step=first_decay))
    return summary


def train(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    log.info("config:\n%s", OmegaConf.to_yaml(resolved))
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))

    trainer, module, datamodule = build(cfg, run_dir)
    wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
    for logger in trainer.loggers:
        logger.log_hyperparams(resolved)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        summary = summarise(trainer, module)
        for logger in wandb_loggers:
            logger.experiment.summary.update(summary)
    finally:
        if wandb_loggers:
            import wandb

            wandb.finish()  # each multirun job is its own W&B run

    if trainer.is_global_zero:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if "val/acc" in summary:
            log.info(
                "final val/acc = %.4f (%d optimizer steps)",
                summary["val/acc"],
                summary["global_step"],
            )
    return summary


@hydra.main(version_base="1.3", config_path="pkg://lbtrain.conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        validate(cfg)
        return train(cfg).get("val/acc")
    except ConfigError as e:
        print(f"lbtrain: error: {e}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    try:
        check_group_choices([a for a in sys.argv[1:] if not a.startswith("-")])
    except ConfigError as e:
        print(f"lbtrain: error: {e}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
