"""The model registry; importing this package registers every model family."""

from lbtrain.models import mnist1d_cnn, mlp  # noqa: F401  (registration side effect)
from lbtrain.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
