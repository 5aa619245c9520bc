"""`python -m lbtrain.run`: compose -> validate -> build -> fit -> summarise.

python -m lbtrain.run                                  # SB on MNIST-1D
python -m lbtrain.run -m batch_size=32,1024            # a sweep, one job per batch size
python -m lbtrain.run -m recipe=sb,lb,lb_lr,lb_lr_gbn,lb_lr_gbn_ra   # Table 1's columns

This module imports no torch, Lightning or W&B: a config error or `--help` answers in a
fraction of a second, and `lbtrain.train.fit` pays for them once the config is known good.
"""

import logging
import os
import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from lightning_utilities.core.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lbtrain.config.command_line import (
    check_overrides,
    config_dirs,
    group_options,
    import_extensions,
)
from lbtrain.config.validate import GROUPS, validate
from lbtrain.errors import ConfigError, NotRequeued, Preempted, StoppedAtOnce
from lbtrain.launch import run_dir as run_dirs
from lbtrain.launch.notices import one_console, quiet

log = logging.getLogger("lbtrain")


@hydra.main(version_base="1.3", config_path="pkg://lbtrain.conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    # Here, not at import: launchers (joblib, submitit) run this function in worker
    # processes that never import this module as a script.
    quiet()
    run_dirs.note_start(Path(HydraConfig.get().runtime.output_dir))
    try:
        if global_rank() == 0:  # a sweep's job, or a run in an automatic dir: held from here
            run_dirs.lock(Path(HydraConfig.get().runtime.output_dir))
        import_extensions(cfg.get("imports"))
        validate(cfg)
        from lbtrain.launch import distributed  # torch, Lightning, W&B: the config is good
        from lbtrain.train.fit import train

        one_console()
        distributed.install()
        with distributed.job_scope():
            return train(cfg).get("val/acc")
    except ConfigError as e:
        print(f"lbtrain: error: {e}", file=sys.stderr)
        if global_rank() == 0:  # a refused run leaves nothing behind
            run_dirs.restore(Path(HydraConfig.get().runtime.output_dir))
        sys.exit(2)
    except Preempted as e:
        from lbtrain.callbacks.preemption import (
            EXIT_INTERRUPTED,
            EXIT_PREEMPTED,
            requeue_if_on_slurm,
        )

        paused = e.signal == "SIGINT"  # Ctrl-C: nothing is requeued
        done = requeue_if_on_slurm() if e.requeue else None
        then = f"{done}; it resumes from {run_dirs.shown(e.path)}" if done else (
            f"to continue, run: {resume_command()}" if paused or e.requeue else
            "rank 0 requeues the job"
        )  # fmt: skip
        what = "paused" if paused else "preempted"
        log.warning(f"lbtrain: {what} ({e.signal}) at step {e.step}: {then}")  # console too
        sys.exit(EXIT_INTERRUPTED if paused else EXIT_PREEMPTED)
    except StoppedAtOnce:
        from lbtrain.callbacks.preemption import EXIT_INTERRUPTED

        sys.exit(EXIT_INTERRUPTED)  # the handler said so, at the second Ctrl-C
    except NotRequeued as e:
        log.error(f"lbtrain: job {e}; resume it with: {resume_command()}")  # console too
        raise  # under submitit: the job is recorded as ended, and the sweep returns


def resume_command() -> str:
    """The command that continues this job in its own dir from its requeue checkpoint (the
    dir in full: a SLURM job's working dir need not be the user's)."""
    hydra = HydraConfig.get()
    run_dir = f"hydra.run.dir={Path(hydra.runtime.output_dir).resolve()}"
    return shlex.join(["python", "-m", "lbtrain.run", *hydra.overrides.task, run_dir])


def global_rank() -> int:
    """This process's rank: Lightning's record once Lightning is imported, else read from
    the environment as Lightning reads it (lightning.fabric.utilities.rank_zero)."""
    rank = getattr(rank_zero_only, "rank", None)  # Lightning sets it as it is imported
    if rank is not None:
        return rank
    keys = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "SUBMITIT_LOCAL_GLOBALID")
    return next((int(os.environ[k]) for k in keys if k in os.environ), 0)


def check_explicit_dirs(overrides: list[str], multirun: bool) -> None:
    """Before Hydra writes <dir>/.hydra: an explicit hydra.run.dir / hydra.sweep.dir must
    not hold earlier results (unless this run resumes it)."""
    given = dict(o.split("=", 1) for o in overrides if "=" in o)
    if not multirun and "hydra.run.dir" in given:
        run_dir = Path(given["hydra.run.dir"].strip("'\""))
        run_dirs.note(run_dir)  # before Hydra writes to it: a resume with nothing to do undoes that
        if global_rank() == 0:  # DDP's other ranks run in rank 0's dir
            run_dirs.lock(run_dir)  # before any check: nothing of a live run is touched
        run_dirs.check_run_dir(run_dir, given.get("ckpt_path"))
    if multirun and "hydra.sweep.dir" in given:
        sweep = Path(given["hydra.sweep.dir"].strip("'\""))
        run_dirs.lock(sweep, "hydra.sweep.dir")
        if done := sorted(sweep.glob("*/summary.json")):
            raise ConfigError(
                f"hydra.sweep.dir={sweep} already holds finished jobs ({done[0].parent.name}/"
                "summary.json); pick a new sweep dir"
            )


HELP = """python -m lbtrain.run [-m] [group=option ...] [key=value ...]
Train one run; -m: a sweep over comma-separated values (python -m lbtrain.run -m seed=0,1,2).
Hydra's own flags: --hydra-help. The README's "Config layout" says what each group holds.

== Config groups (group=option) ==
{groups}

== Config{given} (key=value; +key=value adds a key) ==
{config}"""


def print_help(cfg: DictConfig, overrides: list[str]) -> None:
    """`--help`: the config groups and the config as these overrides compose it. lbtrain's
    own, from the config files alone: Hydra's takes seconds to list its groups."""
    dirs = config_dirs(overrides)
    groups = [f"{g}: {', '.join(group_options(g, dirs))}" for g in (*GROUPS, "hydra/launcher")]
    launchers = "basic, joblib, submitit_local, submitit_slurm (Hydra's plugins)"
    groups[-1] = f"{groups[-1]}; {launchers}"
    given = f" with {' '.join(overrides)}" if overrides else ""
    print(HELP.format(groups="\n".join(groups), given=given, config=OmegaConf.to_yaml(cfg)))


def main() -> None:
    args = sys.argv[1:]
    try:
        overrides = [a for a in args if not a.startswith("-")]
        cfg = check_overrides(overrides)
        if cfg is not None and ("--help" in args or "-h" in args):
            print_help(cfg, overrides)
            return
        run_dirs.reset()
        check_explicit_dirs(args, multirun="-m" in args or "--multirun" in args)
    except ConfigError as e:
        print(f"lbtrain: error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        _hydra_main()
    finally:
        run_dirs.unlock_all()


if __name__ == "__main__":
    main()
