"""lbtrain's exceptions: `ConfigError` for bad input, `DataError` for data on disk that
cannot be read, and the ways a run stops early. Dependency-free, so that the data modules can
raise them, and `lbtrain.run` catch them, without importing torch.

Who raises what: `ConfigError` comes from the config layer (values, before Hydra writes), the
launch layer (the run dir), `lbtrain.run`, and `train/fit.py` (what only built things tell).
Lower layers (models, the plan, optimizers, measurements) raise `ValueError` for a value they
cannot take, in one line that names its config key; `fit.py` turns those into `ConfigError`
where it builds them from a config."""

import re
import signal
from pathlib import Path


class ConfigError(ValueError):
    """A bad configuration value; its message is one line: key, bad value, what is allowed."""


class DataError(ConfigError):
    """The files a data module reads are missing, unreadable or cannot be fetched: not a bad
    value but a state of the disk (copy the files, delete a corrupt cache). One line naming
    `data.data_dir`; raised by the data modules, the only ones that know their files."""


def one_line(e: BaseException) -> str:
    """An exception's message on one line (many libraries' span several)."""
    return " ".join(str(e).split()) or type(e).__name__


def names_a_key(e: ValueError) -> bool:
    """Whether a ValueError is lbtrain's refusal of a value: its message starts with the key
    (`model.depth=7 is not ...`, `callbacks.noise_scale: ...`), as every lower layer's does."""
    return re.match(r"[a-z_][\w.]*(=|: )", str(e)) is not None


def unexpected_option(e: TypeError) -> str | None:
    """The keyword a call did not take, from Python's TypeError (None: another TypeError)."""
    match = re.search(r"got an unexpected keyword argument '(\w+)'", str(e))
    return match.group(1) if match else None


class Preempted(Exception):
    """Raised inside fit() once the requeue checkpoint is on disk. `requeue`: whether this
    process is the one to put the job back in the queue (global rank 0; never for Ctrl-C)."""

    def __init__(self, path: Path, step: int, signum: int, requeue: bool) -> None:
        super().__init__(str(path))
        self.path, self.step, self.requeue = path, step, requeue
        self.signal = signal.Signals(signum).name


class NotRequeued(Exception):
    """The launcher refused to requeue a checkpointed job (e.g. submitit, once a job has
    timed out `max_num_timeout` times). An Exception, not an exit: submitit then records the
    job as ended, and the sweep that waits for it returns."""


class StoppedAtOnce(Exception):
    """A second Ctrl-C: the run stops in the step it is in, without a checkpoint."""
