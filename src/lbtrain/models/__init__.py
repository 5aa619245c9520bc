"""The model registry; importing this package registers every model family."""

from lbtrain.models import (  # noqa: F401  (registration side effect)
    alexnet,
    imagenet_resnet,
    keskar_f1,
    mlp,
    mnist1d_cnn,
    resnet_cifar,
    shallow,
    vgg,
    wide_resnet,
)
from lbtrain.models.registry import MODELS, create_model, list_models, register_model

__all__ = ["MODELS", "create_model", "list_models", "register_model"]
