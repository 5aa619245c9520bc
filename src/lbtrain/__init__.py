"""lbtrain: reproduce and extend "Train longer, generalize better" (Hoffer et al., 2017)."""

from lbtrain import resolvers as _resolvers

# Registered on any import of lbtrain: launcher workers (joblib, submitit) resolve the
# configs' ${lbtrain.*:} interpolations before they ever call into lbtrain.run.
_resolvers.register()

__version__ = "0.1.0"
