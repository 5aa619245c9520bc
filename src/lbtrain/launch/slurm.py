"""Submitting to SLURM from the process that starts a sweep (Hydra's submitit plugin): a
check that sbatch can reach a cluster before anything is written; a failed sbatch said in one
line with sbatch's own message (submitit raises it as a FailedJobError, which Hydra prints as a
traceback: the plugin's `launch` is wrapped, as Hydra takes launcher classes from hydra_plugins
alone); and submitit's "Bypassing sacct error", which it logs at every poll of a cluster
without accounting (the test cluster of `make slurm-up`), shown once. No torch is imported."""

import contextlib
import functools
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# `make slurm-up`'s cluster (scripts/slurm-cluster.sh), for the hints of an editable install
TEST_CLUSTER_CONF = Path(__file__).resolve().parents[3] / ".slurm" / "slurm.conf"
SACCT_WARNING = "Bypassing sacct error"  # submitit/core/core.py, InfoWatcher.update
# the launcher's keys that make up what a job asks SLURM for, named in sbatch's refusals
REQUEST = ("partition", "account", "qos", "nodes", "tasks_per_node", "gpus_per_node",
           "cpus_per_task", "mem_gb", "timeout_min")  # fmt: skip
# sweep dir -> the names it held as a SLURM sweep of this process started (None: no dir yet),
# so that a sweep whose sbatch failed removes what it wrote there, and no more
_sweep_dirs_found: dict[Path, set[str] | None] = {}


def slurm_unreachable() -> str | None:
    """Why sbatch cannot submit from here, in one line; None where it can. What sbatch
    refuses in a job's request (a partition, GPUs, memory) only its submission tells."""
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        return (f"{' and '.join(missing)}: not found; the SLURM launcher submits with SLURM's "
                "commands: run the sweep where they are (a login node), or start the test "
                "cluster: make slurm-up")  # fmt: skip
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():  # sbatch would retry reading it for 60 s, then fail
        return f"SLURM_CONF={conf}: no such file{set_slurm_conf()}"
    version = subprocess.run(["sbatch", "--version"], capture_output=True, text=True)
    return sbatch_says(version.stderr) if version.returncode else None


def sbatch_says(stderr: str, launcher: dict | None = None, config_name: str | None = None) -> str:
    """A failed sbatch in one line: `sbatch: <its fatal line, else its last line>`, then what
    to change: SLURM_CONF where sbatch found no cluster, else the request of the launcher
    (`hydra/launcher=<config_name>`)."""
    lines = stderr.strip().splitlines() or ["failed, and said nothing"]
    line = next((ln for ln in lines if "fatal:" in ln), lines[-1])
    message = re.sub(r"^(sbatch: )?((error|fatal): )?", "", line.strip())
    if re.search("configuration (source|file)", message):
        return f"sbatch: {message}{set_slurm_conf()}"
    launcher = launcher or {}
    asked = ", ".join(f"{k}={launcher[k]}" for k in REQUEST if launcher.get(k) is not None)
    if not asked:
        return f"sbatch: {message}"
    test = os.environ.get("SLURM_CONF") == str(TEST_CLUSTER_CONF) and config_name != "slurm_test"
    hint = "; on the test cluster: hydra/launcher=slurm_test" if test else ""
    return f"sbatch: {message} (hydra.launcher asked for {asked}){hint}"


def set_slurm_conf() -> str:
    test = TEST_CLUSTER_CONF.is_file()
    where = f"the test cluster's: {TEST_CLUSTER_CONF}" if test else "`make slurm-up` starts one"
    return f"; set SLURM_CONF to the cluster's slurm.conf ({where})"


class _WithoutSbatchEcho:
    """sys.stderr while the SLURM launcher runs: submitit prints a failed sbatch's stderr there
    before it raises (submitit/core/utils.py, CommandFunction), and lbtrain says it in one
    line instead. Everything else passes at once."""

    def __init__(self, stream) -> None:
        self.stream, self.dropped = stream, False

    def write(self, text: str) -> int:
        echo = text.startswith("sbatch: ") or (self.dropped and text == "\n")  # print's end
        self.dropped = text.startswith("sbatch: ")
        return len(text) if echo else self.stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _exit_in_one_line_if_sbatch_fails(launch):
    """The SLURM launcher's `launch`, ending the sweep with one line and exit status 1 where
    sbatch refuses the job array; any other error passes on."""

    @functools.wraps(launch)
    def launch_or_exit(self, job_overrides, initial_job_idx):
        from submitit.core.utils import FailedJobError

        try:
            with contextlib.redirect_stderr(_WithoutSbatchEcho(sys.stderr)):
                return launch(self, job_overrides, initial_job_idx)
        except FailedJobError as e:
            sbatch = e.__cause__
            if not isinstance(sbatch, subprocess.CalledProcessError) or sbatch.cmd[0] != "sbatch":
                raise
            said = sbatch_says(sbatch.stderr, self.params, self.config.hydra.runtime.choices.get(
                "hydra/launcher"))  # fmt: skip
            print(f"lbtrain: error: {said}", file=sys.stderr)
            if initial_job_idx == 0:  # no job of the sweep was submitted
                undo_sweep_dir(Path(str(self.config.hydra.sweep.dir)).resolve())
            sys.exit(1)

    launch_or_exit.lbtrain_one_line = True
    return launch_or_exit


def undo_sweep_dir(sweep_dir: Path) -> None:
    """Remove what this sweep wrote in its dir (Hydra's multirun.yaml, submitit's folder),
    and the dir if the sweep made it."""
    if sweep_dir not in _sweep_dirs_found:
        return
    found = _sweep_dirs_found[sweep_dir]
    if found is None:
        shutil.rmtree(sweep_dir, ignore_errors=True)
        return
    for path in [p for p in sweep_dir.iterdir() if p.name not in found]:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


class SacctWarningOnce(logging.Filter):
    """On submitit's logger: its warning of a failed sacct passes once, its repeats (one per
    poll while sacct fails) do not."""

    shown = False  # set on the instance as the first passes

    def filter(self, record: logging.LogRecord) -> bool:
        if SACCT_WARNING not in record.getMessage():
            return True
        if self.shown:
            return False
        self.shown = True
        record.msg, record.args = f"{record.getMessage()} (shown once a sweep)", None
        return True


def _warnings_below(record: logging.LogRecord) -> bool:
    return record.levelno < logging.WARNING


def prepare_slurm_submission(sweep_dir: Path) -> None:
    """In the submitting process: one line for a failed sbatch (and no sweep dir left where
    this sweep made it); each of submitit's warnings on the console once (it prints them to
    stdout and to stderr, and Hydra's root handler a third time), its sacct warning once a
    sweep. LBTRAIN_SHOW_NOTICES=1 keeps submitit's logging as it is."""
    import submitit  # configures its logger (submitit/core/logger.py)
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    sweep_dir = sweep_dir.resolve()
    found = {p.name for p in sweep_dir.iterdir()} if sweep_dir.is_dir() else None
    _sweep_dirs_found[sweep_dir] = found
    if not getattr(SlurmLauncher.launch, "lbtrain_one_line", False):  # Hydra's: wrapped yet?
        SlurmLauncher.launch = _exit_in_one_line_if_sbatch_fails(SlurmLauncher.launch)
    log = logging.getLogger(submitit.__name__)
    if os.environ.get("LBTRAIN_SHOW_NOTICES") == "1" or not log.handlers:  # NOCONFIG: Hydra's
        return
    log.propagate = False
    for handler in log.handlers:
        if handler.name == "submitit_out" and _warnings_below not in handler.filters:
            handler.addFilter(_warnings_below)  # submitit_err prints them
    for earlier in [f for f in log.filters if isinstance(f, SacctWarningOnce)]:
        log.removeFilter(earlier)
    log.addFilter(SacctWarningOnce())
