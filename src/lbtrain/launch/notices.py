"""Known third-party notices a run would print on every start, silenced; the run's own
lines stay. LBTRAIN_SHOW_NOTICES=1 shows them again.

- Lightning's "The `srun` command is available on your system but is not used": printed on
  any machine with SLURM's client tools, for every run started outside srun (a submitit job
  runs under srun; a local run is meant to run outside it).
- Lightning's "Tip: For seamless cloud logging ... litlogger": an advertisement.
- Lightning's own console handler on its `lightning` logger, which prints each of its lines a
  second time beside Hydra's (`one_console`).
- Lightning's "resuming from a checkpoint that ended before the epoch ended ... unreliable
  results", for lbtrain's in-memory data (`train.fit.train`): its loader skips the batches
  already trained, so a mid-epoch resume is exact (tests/test_preemption.py).

The resolved config goes to run.log and config.yaml, not the console (`FILE_ONLY`).
"""

import logging
import os
import warnings

FILE_ONLY = {"file_only": True}  # log.info(..., extra=FILE_ONLY): run.log, not the console


# one function: added once, however many runs a process starts (addFilter skips a repeat)
def _no_litlogger(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def _console_only(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)  # set by extra=FILE_ONLY, on some records


def quiet() -> None:
    """Silence the notices above and keep FILE_ONLY records off the console (Hydra's
    console handler, set up before lbtrain's code runs)."""
    if os.environ.get("LBTRAIN_SHOW_NOTICES") == "1":
        return
    warnings.filterwarnings("ignore", message=".*`srun` command is available on your system")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_no_litlogger)
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and _console_only not in handler.filters:
            handler.addFilter(_console_only)


def one_console() -> None:
    """Once Lightning is imported: its lines reach the console through Hydra's handler only."""
    if os.environ.get("LBTRAIN_SHOW_NOTICES") == "1" or not logging.getLogger().handlers:
        return
    lightning = logging.getLogger("lightning")
    for handler in list(lightning.handlers):
        if type(handler) is logging.StreamHandler:
            lightning.removeHandler(handler)


MID_EPOCH_RESUME = "You're resuming from a checkpoint that ended before the epoch ended"
