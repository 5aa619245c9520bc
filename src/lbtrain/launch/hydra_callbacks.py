"""Hydra callbacks (conf/train.yaml's hydra.callbacks), run in the process that starts a
sweep: they import no torch, so that a refused launch answers at once. Under the SLURM
launcher they also prepare the submission (`launch/slurm.py`)."""

import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from lbtrain.errors import ConfigError
from lbtrain.launch.run_dir import shown
from lbtrain.launch.slurm import prepare_slurm_submission, slurm_unreachable


def check_launcher_layout(cfg) -> None:
    """Before a submitit launcher submits anything: its processes per node and nodes must be
    the trainer's devices and nodes, and its time limit must leave room for the signal.
    Otherwise Lightning waits for ranks that never start, or trains at a world size other
    than the one the batch arithmetic assumed."""
    launcher = cfg.hydra.launcher
    if "submitit" not in str(launcher.get("_target_", "")):
        return
    delay, limit = launcher.get("signal_delay_s"), launcher.get("timeout_min")
    if delay is not None and limit is not None and delay >= 60 * limit:
        raise ConfigError(
            f"hydra.launcher.signal_delay_s={delay} is not below the time limit "
            f"(hydra.launcher.timeout_min={limit}, {60 * limit} s): SLURM would send the "
            "signal as the job starts, before anything can checkpoint, and kill it"
        )
    swept = [o.split("=", 1)[0] for o in cfg.hydra.overrides.task if "," in o]
    for task_key, trainer_key in (("tasks_per_node", "devices"), ("nodes", "num_nodes")):
        if f"trainer.{trainer_key}" in swept:
            raise ConfigError(
                f"trainer.{trainer_key} is swept, but hydra.launcher.{task_key} is one value for "
                f"the whole sweep; launch one sweep per trainer.{trainer_key}"
            )
        tasks, trainer = launcher.get(task_key), cfg.trainer.get(trainer_key)
        if isinstance(trainer, int) and tasks != trainer:
            raise ConfigError(
                f"hydra.launcher.{task_key}={tasks} but trainer.{trainer_key}={trainer}: SLURM "
                f"would start {tasks} process(es) where Lightning expects {trainer}; set both "
                "alike (the slurm launcher config derives them from the trainer)"
            )


class LauncherLayoutCheck(Callback):
    """Hydra callback (conf/train.yaml): runs `check_launcher_layout` in the submitting
    process, before the launcher submits the sweep's jobs; under the SLURM launcher, checks
    that sbatch reaches a cluster and prepares the submission (`prepare_slurm_submission`)."""

    def on_multirun_start(self, config, **kwargs) -> None:
        try:
            check_launcher_layout(config)
        except ConfigError as e:
            print(f"lbtrain: error: {e}", file=sys.stderr)
            sys.exit(2)
        if str(config.hydra.launcher.get("_target_", "")).endswith(".SlurmLauncher"):
            if problem := slurm_unreachable():
                print(f"lbtrain: error: {problem}", file=sys.stderr)
                sys.exit(1)
            prepare_slurm_submission(Path(config.hydra.sweep.dir))


class AnnounceSweepDir(Callback):
    """Hydra callback (conf/train.yaml): a sweep's last line says where its jobs are."""

    def on_multirun_end(self, config, **kwargs) -> None:
        where = shown(Path(config.hydra.sweep.dir))
        print(f"lbtrain: sweep results in {where} (one dir per job; summarise them with "
              f"python -m lbtrain.report {where})")  # fmt: skip
