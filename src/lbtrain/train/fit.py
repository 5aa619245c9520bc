"""One run from its validated config: build the trainer, the module and the data (checking
what only built things can tell), then fit and summarise. `lbtrain.run` imports this, with
torch, Lightning and W&B, only once the config has passed `config.validate`."""

import hashlib
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from lbtrain.callbacks.checkpoint import LastCheckpoint
from lbtrain.callbacks.preemption import Preemption
from lbtrain.callbacks.summary import RunSummary
from lbtrain.config.validate import check_registered
from lbtrain.data import DATAMODULES
from lbtrain.data.in_memory import InMemoryDataModule
from lbtrain.errors import ConfigError, names_a_key, one_line, unexpected_option
from lbtrain.launch import distributed
from lbtrain.launch.notices import FILE_ONLY, MID_EPOCH_RESUME
from lbtrain.launch.run_dir import (
    REQUEUE_CHECKPOINT,
    check_run_dir,
    check_same_run,
    checkpoints,
    keep_run_record,
    recorded_overrides,
    shown,
)
from lbtrain.launch.run_dir import restore as restore_run_dir
from lbtrain.measure.step_series import MeasurementLog, StepSeries
from lbtrain.models import create_model
from lbtrain.train.batch_schedule import check_fits
from lbtrain.train.branch import check_branch, start_from
from lbtrain.train.gbn import GhostBatchNorm, convert_to_ghost_batchnorm
from lbtrain.train.loggers import forget_after
from lbtrain.train.module import Classifier
from lbtrain.train.optimizers import OptimizerSpec
from lbtrain.train.plan import BatchPlan, describe, make_plan

log = logging.getLogger("lbtrain")
# Lightning 2.6 trips over its own pytree deprecation on every run; nothing for users to act on.
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def build_model(cfg: DictConfig, num_classes: int, input_shape: tuple[int, ...]) -> torch.nn.Module:
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    name = kwargs.pop("name")
    try:
        model = create_model(name, num_classes, input_shape, **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        if isinstance(e, ValueError) and names_a_key(e):  # a model's own rule
            raise ConfigError(one_line(e)) from None
        raise ConfigError(
            f"model={name} cannot be built for data={cfg.data.name} (samples of shape "
            f"{tuple(input_shape)}, {num_classes} classes, model options {kwargs}): {one_line(e)}"
        ) from None
    check_input_shape(model, input_shape, cfg)
    return model


def check_input_shape(model: torch.nn.Module, input_shape: tuple[int, ...], cfg) -> None:
    """One sample through the fresh model (eval mode: no statistics change, no randomness),
    so that a model that cannot take the data fails here, in one line, not in training."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    except (RuntimeError, ValueError) as e:
        raise ConfigError(
            f"model={cfg.model.name} cannot take data={cfg.data.name}'s samples of shape "
            f"{tuple(input_shape)} ({one_line(e)}); pick a model made for this data"
        ) from None
    finally:
        model.train(was_training)


def build_datamodule(cfg: DictConfig, plan: BatchPlan) -> L.LightningDataModule:
    data_kwargs = OmegaConf.to_container(cfg.data, resolve=True)
    name = data_kwargs.pop("name")
    if cfg.batch_augment > 1:  # only data modules that augment on the device take it
        data_kwargs["batch_augment"] = cfg.batch_augment
    try:  # a data module's options are its constructor's: Python refuses any other
        return DATAMODULES[name](batch_size=plan.micro_batch, shuffle_seed=cfg.seed, **data_kwargs)
    except TypeError as e:
        if (option := unexpected_option(e)) == "batch_augment":
            raise ConfigError(
                f"batch_augment={cfg.batch_augment}: data={name} has no batch augmentation (it "
                "needs an in-memory set augmented on the device: mnist1d, cifar10, cifar100)"
            ) from None
        if option is not None:
            raise ConfigError(f"data.{option}: data={name} has no such option") from None
        raise


def _instantiate_group(cfg: DictConfig, group: str) -> list:
    built = []
    for name, node in (cfg.get(group) or {}).items():
        if node is None:  # switched off on the command line, e.g. callbacks.sharpness=null
            continue
        try:
            built.append(instantiate(node))
        except InstantiationException as e:  # bad arguments: say which entry, in one line
            cause = e.__cause__ or e
            raise ConfigError(f"{group}.{name}: {one_line(cause)}") from None
    return built


def build_trainer(cfg: DictConfig, run_dir: Path) -> L.Trainer:
    loggers = _instantiate_group(cfg, "logger")
    # Preemption, then the last checkpoint, first: a step they save before must have left no
    # trace in any logger or callback
    configured = _instantiate_group(cfg, "callbacks")
    configured.sort(key=lambda c: not isinstance(c, LastCheckpoint))  # stable: the rest in order
    callbacks = [Preemption(checkpoints(run_dir)), *configured]
    rows = MeasurementLog()  # the measurements' values of a step, in one row per step
    for series in callbacks:
        if isinstance(series, StepSeries):
            series.rows = rows
    callbacks += [rows, RunSummary(run_dir)]  # after the series: runs after them in each hook
    try:
        trainer = L.Trainer(
            **OmegaConf.to_container(cfg.trainer, resolve=True),
            logger=loggers or False,
            callbacks=callbacks,
            plugins=distributed.cluster_plugins(),
            default_root_dir=run_dir,
        )
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError) as e:
        raise ConfigError(f"trainer: {one_line(e)}") from None
    return trainer


@contextmanager
def refusals_as_config_errors() -> Iterator[None]:
    """Lower layers (models, data modules, the plan, optimizers, branches, measurements) raise
    ValueError for a value they cannot take, in one line that starts with its key; built from
    a config, that is bad input: one ConfigError line, before anything trains or is written.
    Any other ValueError is a bug, and passes on with its traceback."""
    try:
        yield
    except ValueError as e:
        if isinstance(e, ConfigError) or not names_a_key(e):  # not a refusal: a bug, in full
            raise
        raise ConfigError(one_line(e)) from None


def build(
    cfg: DictConfig, run_dir: str | Path
) -> tuple[L.Trainer, Classifier, L.LightningDataModule]:
    """Trainer, module and data of one run, from its validated config (`config.validate`
    checked its values); `check_data` and `check_model` check what only built things can
    tell, each as soon as its things are built, before anything trains or is written."""
    with refusals_as_config_errors():
        check_registered(cfg)
        branch_from = check_branch(cfg)
        run_dir = Path(run_dir)
        trainer = build_trainer(cfg, run_dir)
        plan = make_plan(cfg, trainer.world_size)
        trainer.fit_loop.max_epochs = plan.epochs  # the stretched regime
        trainer.fit_loop.epoch_loop.max_steps = plan.max_steps
        log.info(describe(plan))
        if plan.warmup and plan.lr == plan.base_lr:  # e.g. recipe=lb with optim=goyal
            log.warning(
                "optim.warmup=%g does nothing in this run: it ramps the LR from optim.lr up to the "
                "scaled LR, and lr_scaling=%s at batch_size=%d leaves that at optim.lr=%g",
                cfg.optim.warmup, cfg.lr_scaling, cfg.batch_size, plan.base_lr,
            )  # fmt: skip
        L.seed_everything(cfg.seed, workers=True)
        datamodule = build_datamodule(cfg, plan)
        check_data(cfg, plan, trainer, datamodule)  # before any model is built
        model = build_model(cfg, datamodule.num_classes, datamodule.input_shape)
        model = convert_to_ghost_batchnorm(model, cfg.ghost_batch_size)  # +GBN; None: unchanged
        optimizer = OptimizerSpec.from_config(cfg.optim, plan)
        check_model(cfg, model, optimizer, plan, trainer)
        if plan.phases:
            use_batch_schedule(trainer, datamodule, plan)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model = torch.compile(model) if cfg.compile else model
        module = Classifier(model, plan, datamodule.num_classes, optimizer, cfg.stop_on_divergence)
        if branch_from:
            start_from(module, branch_from)
        return trainer, module, datamodule


def check_data(cfg: DictConfig, plan: BatchPlan, trainer: L.Trainer, datamodule) -> None:
    """What needs the world size and the built data module: the ghost batch against the
    micro-batch, the data on disk, a batch-size schedule and each measurement against both."""
    ghost, micro = cfg.ghost_batch_size, plan.micro_batch
    if ghost and ghost > micro:  # GBN would quietly be plain BatchNorm: not what was asked
        raise ConfigError(
            f"ghost_batch_size={ghost} exceeds the per-device batch {micro}; GBN would be "
            f"plain BatchNorm. Use a ghost size <= {micro} or ghost_batch_size=null"
        )
    if hasattr(datamodule, "check"):  # its files on disk (a data module of yours may not say)
        datamodule.check()
    if plan.phases:
        key = f"batch_schedule={cfg.batch_schedule} with data={cfg.data.name}"
        if not isinstance(datamodule, InMemoryDataModule):
            raise ConfigError(f"{key}: needs an in-memory data set (mnist1d, mnist, cifar10/100)")
        if cfg.trainer.get("limit_train_batches") is not None:
            raise ConfigError(f"{key}: trainer.limit_train_batches would cut its epochs; use null")
        datamodule.setup("fit")  # the number of training samples
        check_fits(plan.phases, datamodule.num_train_samples, key.split(" ")[0])
    for callback in trainer.callbacks:
        if isinstance(callback, StepSeries):  # a measurement: this data, plan and trainer
            callback.check_data(datamodule)
            callback.check_plan(plan, trainer)


def check_model(cfg: DictConfig, model: torch.nn.Module, optimizer: OptimizerSpec, plan,
                trainer: L.Trainer) -> None:  # fmt: skip
    """What needs the built model: ghost batches need BatchNorm to split, a measurement rank 0
    takes alone in training mode no SyncBatchNorm (it would wait for the other ranks for ever),
    and the optimizer must take its options (the input shape was tried as it was built)."""
    sync = trainer.world_size > 1 and (cfg.trainer.get("sync_batchnorm") or any(
        isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()))  # fmt: skip
    for callback in trainer.callbacks if sync else ():
        if isinstance(callback, StepSeries) and callback.trains_batchnorm:
            key = f"callbacks.{callback.sub_prefix or callback.name}"
            raise ConfigError(
                f"{key}: measures in training mode on rank 0 alone, where SyncBatchNorm would "
                "wait for the other ranks; use trainer.sync_batchnorm=false"
                + (f" or {key}.bn_mode=eval" if key == "callbacks.sharpness" else "")
            )
    if cfg.ghost_batch_size and not any(isinstance(m, GhostBatchNorm) for m in model.modules()):
        raise ConfigError(
            f"ghost_batch_size={cfg.ghost_batch_size}: model={cfg.model.name} has no BatchNorm "
            "to split into ghost batches; use ghost_batch_size=null"
        )
    optimizer.build(model, plan.lr)  # an option it does not take fails here, not in fit()


def use_batch_schedule(trainer: L.Trainer, datamodule: InMemoryDataModule, plan) -> None:
    """Hand the data module the batch of each epoch, re-made each epoch."""
    datamodule.batch_size_at = plan.per_device_batch_at
    trainer.reload_dataloaders_every_n_epochs = 1  # a phase's new batch size


def check_checkpoint(path: str, module: Classifier, key: str = "ckpt_path") -> dict:
    """A checkpoint to resume from must exist, load, and hold this run's model. Returns
    it (memory-mapped: nothing is read but what is looked at)."""
    if not Path(path).is_file():
        raise ConfigError(f"{key}={path}: no such checkpoint file")
    try:
        # mmap: only the shapes are compared here; fit() reads the tensors once, later
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        state = checkpoint["state_dict"]
    except Exception as e:  # truncated, not a checkpoint, not a Lightning one
        raise ConfigError(
            f"{key}={path}: not a readable lbtrain checkpoint ({type(e).__name__}: "
            f"{one_line(e)[:200]})"
        ) from None
    for name, tensor in module.state_dict().items():
        if name.startswith("model.") and (name not in state or state[name].shape != tensor.shape):
            found = f"shape {tuple(state[name].shape)}" if name in state else "missing"
            raise ConfigError(
                f"{key}={path}: holds another model ({name} is {found}; this run's model "
                f"needs {tuple(tensor.shape)}); resume with the config it was trained with"
            )
    return checkpoint


def nothing_left(checkpoint: dict, trainer: L.Trainer) -> bool:
    """Whether fit() from this checkpoint would train nothing: its steps or epochs already
    reach this run's (Lightning's own test, FitLoop.done)."""
    loop = trainer.fit_loop
    try:
        epochs = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
    except (KeyError, TypeError):  # no loop state (not saved by Trainer.fit): let fit() decide
        return False
    steps = loop.epoch_loop.max_steps
    return (steps != -1 and checkpoint["global_step"] >= steps) or epochs >= loop.max_epochs


def train(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    requeue = checkpoints(run_dir) / REQUEUE_CHECKPOINT
    log.info(distributed.set_threads(cfg.threads))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if rank_zero_only.rank == 0:
        check_run_dir(run_dir, cfg.ckpt_path)
    trainer, module, datamodule = build(cfg, run_dir)
    ckpt_path, finished = resume_from(cfg, run_dir, requeue, trainer, module, resolved)
    if finished:
        return {}
    config_hash = record(run_dir, resolved, trainer)
    if isinstance(datamodule, InMemoryDataModule):  # an exact mid-epoch resume (notices.py)
        warnings.filterwarnings("ignore", message=MID_EPOCH_RESUME)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        log.info(
            "rank %d of %d done, config %s", trainer.global_rank, trainer.world_size, config_hash
        )
    finally:
        if any(isinstance(lg, WandbLogger) for lg in trainer.loggers):
            import wandb

            wandb.finish()  # each multirun job is its own W&B run

    if not trainer.is_global_zero:
        return {}
    requeue.unlink(missing_ok=True)  # finished: last.ckpt holds the final state
    summary = json.loads((run_dir / "summary.json").read_text())  # see RunSummary
    if "diverged_at_step" in summary:
        log.info("diverged at step %d: no result (%d optimizer steps); its logs in %s",
                 summary["diverged_at_step"], summary["global_step"], shown(run_dir))  # fmt: skip
    elif "val/acc" in summary:
        log.info(
            "final val/acc = %.4f (%d optimizer steps); results in %s",
            summary["val/acc"], summary["global_step"], shown(run_dir),
        )  # fmt: skip
    return summary


def resume_from(cfg, run_dir: Path, requeue: Path, trainer, module, resolved: dict):
    """The checkpoint fit() resumes from (None: a fresh run), and whether the run it holds
    has nothing left to train (then nothing on disk changes). A preempted job carries on from
    its requeue checkpoint; an in-place resume must continue the run as it was."""
    ckpt_path = cfg.ckpt_path
    if ckpt_path is None and requeue.exists():  # this job was preempted: carry on
        ckpt_path = str(requeue)
        log.info("resuming the preempted run from %s", requeue)
    if ckpt_path is None:
        return None, False
    key = "ckpt_path" if cfg.ckpt_path else "requeue checkpoint"
    origin = Path(ckpt_path).resolve().parent.parent  # the run dir that saved the checkpoint
    try:
        checkpoint = check_checkpoint(ckpt_path, module, key)
    except ConfigError as e:  # say how the checkpoint's run was started
        trained = recorded_overrides(origin, run_dir)
        if trained is None:
            raise
        given = " ".join(trained) or "(the defaults)"
        raise ConfigError(f"{e}; it was trained with: {given}") from None
    if nothing_left(checkpoint, trainer):  # resuming would rewrite its results: leave it
        if rank_zero_only.rank == 0 and not restore_run_dir(run_dir):
            print(f"lbtrain: {run_dir} keeps this invocation's .hydra/ (named in a config "
                  "file, not on the command line)")  # fmt: skip
        print(f"lbtrain: {origin} already finished at step {checkpoint['global_step']}; "
              "nothing to resume")  # fmt: skip
        return ckpt_path, True
    check_same_run(run_dir, resolved)  # in place: the run it continues, as it was
    if rank_zero_only.rank == 0:  # rows logged after the checkpoint: logged again
        forget_after(trainer.loggers, checkpoint["global_step"])
    if rank_zero_only.rank == 0 and (kept := keep_run_record(run_dir)):
        log.info("this resume's config and overrides: %s (the run's own stay in .hydra/)", kept)
    return ckpt_path, False


def record(run_dir: Path, resolved: dict, trainer: L.Trainer) -> str:
    """The resolved config into run.log, config.yaml and every logger; returns its hash."""
    text = OmegaConf.to_yaml(resolved)
    config_hash = hashlib.sha1(text.encode()).hexdigest()[:12]
    log.info("config %s:\n%s", config_hash, text, extra=FILE_ONLY)  # run.log, not the console
    if rank_zero_only.rank == 0:  # extra DDP ranks run this too, in the same dir
        (run_dir / "config.yaml").write_text(text)  # RunSummary adds the effective plan
    for logger in trainer.loggers:
        logger.log_hyperparams(resolved)
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            run = logger.experiment
            group = f", group {run.group}" if run.group else ""
            log.info("W&B run %s (%s): name %s%s, tags %s", run.id, run.settings.mode, run.name,
                     group, list(run.tags))  # fmt: skip
    return config_hash
