"""lbtrain: reproduce and extend "Train longer, generalize better" (Hoffer et al., 2017)."""

import os

from lbtrain import moved as _moved
from lbtrain.config import resolvers as _resolvers

# Registered on any import of lbtrain: launcher workers (joblib, submitit) resolve the
# configs' ${lbtrain.*:} interpolations before they ever call into lbtrain.run.
_resolvers.register()
_moved.install()  # old module names, for one release
# submitit signals (and handles) USR2 by default; lbtrain's preemption handler listens to
# USR1, as plain SLURM scripts use. Set before submitit is imported: it reads this once.
os.environ.setdefault("SUBMITIT_PREEMPT_SIGNAL", "USR1")

__version__ = "0.1.0"
