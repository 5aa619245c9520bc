"""The paper's networks: published sizes, output shapes, one trainable SGD step, BN everywhere.

Parameter counts are the claims a reader can check against the papers: He et al.'s ResNet
table (0.27M / 0.66M / 0.85M), the WRN paper's 2.7M for WRN-16-4, torchvision's 25.6M for
ResNet-50; the nets without a published count (F1, C1, C3, VGG-16-BN, AlexNet-BN) are
counted by hand below, so any change of layout shows up as a failing number.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

# importing the family modules registers them (the package __init__ may not list them yet)
import lbtrain.models.alexnet  # noqa: F401
import lbtrain.models.imagenet_resnet  # noqa: F401
import lbtrain.models.keskar_f1  # noqa: F401
import lbtrain.models.resnet_cifar  # noqa: F401
import lbtrain.models.shallow  # noqa: F401
import lbtrain.models.vgg  # noqa: F401
import lbtrain.models.wide_resnet  # noqa: F401
from lbtrain.models import create_model, list_models

MNIST, CIFAR, IMAGENET = (1, 28, 28), (3, 32, 32), (3, 224, 224)

# (registry name, num_classes, one sample's shape): each model on the data it is trained on
MODELS = [
    ("f1", 10, MNIST),
    ("c1", 10, CIFAR),
    ("c3", 100, CIFAR),
    ("resnet20", 10, CIFAR),
    ("resnet44", 10, CIFAR),
    ("resnet56", 10, CIFAR),
    ("resnet110", 10, CIFAR),
    ("resnet_cifar", 10, CIFAR),
    ("vgg16_bn", 10, CIFAR),
    ("wrn16_4", 100, CIFAR),
    ("wide_resnet", 100, CIFAR),
    ("alexnet_bn", 1000, IMAGENET),
    ("resnet50", 1000, IMAGENET),
]
IDS = [f"{name}-{classes}" for name, classes, _ in MODELS]

# Batch of 4, not 2: with 2 samples BatchNorm1d maps every feature to about +-1 whatever the
# input, so what reaches the layers below an FC+BN (C1, AlexNet, F1) is only an eps artefact.
BATCH = 4

# Hand counts (weights; convs/FCs followed by BN have no bias; a BN layer has 2 x channels).
# F1: 784*512 + 4*512*512 (Linear) + 5*2*512 (BN) + 512*10 + 10 (classifier)
#   = 401,408 + 1,048,576 + 5,120 + 5,130 = 1,460,234
F1_PARAMS = 1_460_234
# C1: conv 3*64*25 = 4,800 and 64*64*25 = 102,400, BN 2*128; 32 -> pool 15 -> pool 7, so
#   FC 64*7*7*384 = 1,204,224, 384*192 = 73,728, BN 768 + 384; classifier 192*10 + 10 = 1,930
#   = 4,800 + 102,400 + 256 + 1,204,224 + 73,728 + 1,152 + 1,930 = 1,388,490
C1_PARAMS = 1_388_490
C3_PARAMS = C1_PARAMS - 1_930 + 192 * 100 + 100  # only the classifier grows: 1,405,860
# VGG-16-BN: 3x3 convs 9*(3*64 + 64*64 + 64*128 + 128*128 + 128*256 + 2*256*256 + 256*512
#   + 5*512*512) = 14,710,464; BN 2*(2*64 + 2*128 + 3*256 + 6*512) = 8,448; FC 512*10 + 10
#   = 14,710,464 + 8,448 + 5,130 = 14,724,042
VGG16_BN_PARAMS = 14_724_042
# AlexNet-BN: convs 3*64*121 + 64*192*25 + 192*384*9 + 384*256*9 + 256*256*9 = 2,468,544,
#   conv BN 2*(64+192+384+256+256) = 2,304; FC 9216*4096 + 4096*4096 + 4096*1000 + 1000
#   = 58,622,952, FC BN 2*2*4096 = 16,384; total 61,110,184
ALEXNET_BN_PARAMS = 61_110_184


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "num_classes", "input_shape", "kwargs", "expected", "rel"),
    [
        ("f1", 10, MNIST, {}, F1_PARAMS, 0.0),
        ("c1", 10, CIFAR, {}, C1_PARAMS, 0.0),
        ("c3", 100, CIFAR, {}, C3_PARAMS, 0.0),
        ("vgg16_bn", 10, CIFAR, {}, VGG16_BN_PARAMS, 0.0),
        ("alexnet_bn", 1000, IMAGENET, {}, ALEXNET_BN_PARAMS, 0.0),
        # He et al. 2016, Table 6: ResNet-20 0.27M, -44 0.66M, -56 0.85M, -110 1.7M
        ("resnet20", 10, CIFAR, {}, 0.27e6, 0.02),
        ("resnet44", 10, CIFAR, {}, 0.66e6, 0.02),
        ("resnet56", 10, CIFAR, {}, 0.85e6, 0.02),
        ("resnet110", 10, CIFAR, {}, 1.7e6, 0.02),
        ("resnet_cifar", 10, CIFAR, {"depth": 44}, 0.66e6, 0.02),
        # Zagoruyko & Komodakis 2016: WRN-16-4 2.7M (2.75M measured by others), WRN-28-10 36.5M
        ("wrn16_4", 10, CIFAR, {}, 2.75e6, 0.03),
        ("wide_resnet", 10, CIFAR, {"depth": 28, "widen_factor": 10}, 36.5e6, 0.01),
        # torchvision's ResNet-50: 25,557,032
        ("resnet50", 1000, IMAGENET, {}, 25_557_032, 0.0),
    ],
)
def test_parameter_count_matches_published_size(
    name, num_classes, input_shape, kwargs, expected, rel
):
    count = n_params(create_model(name, num_classes, input_shape, **kwargs))
    assert count == pytest.approx(expected, rel=rel, abs=0)


@pytest.mark.parametrize(("name", "num_classes", "input_shape"), MODELS, ids=IDS)
def test_forward_gives_one_logit_per_class(name, num_classes, input_shape):
    model = create_model(name, num_classes, input_shape).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, *input_shape))
    assert logits.shape == (2, num_classes)


@pytest.mark.parametrize(("name", "num_classes", "input_shape"), MODELS, ids=IDS)
def test_one_sgd_step_trains_every_parameter(name, num_classes, input_shape):
    torch.manual_seed(0)
    model = create_model(name, num_classes, input_shape).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.0)
    x = torch.randn(BATCH, *input_shape)
    y = torch.randint(num_classes, (BATCH,))
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    # every tensor must move: a frozen one means a layer is cut off from the loss
    frozen = [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not frozen


@pytest.mark.parametrize(("name", "num_classes", "input_shape"), MODELS, ids=IDS)
def test_every_model_has_batchnorm_for_ghost_bn(name, num_classes, input_shape):
    model = create_model(name, num_classes, input_shape)
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_option_a_shortcuts_add_no_parameters():
    """Option A pads the identity with zeros, so ResNet-20's parameters are all convs, BN, FC:
    without projection shortcuts no 1x1 conv may appear."""
    model = create_model("resnet20", 10, CIFAR)
    kernels = {m.kernel_size for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert kernels == {(3, 3)}


def test_cifar_resnet_rejects_depth_not_6n_plus_2():
    with pytest.raises(ValueError, match="model.depth=45"):
        create_model("resnet_cifar", 10, CIFAR, depth=45)


def test_wide_resnet_rejects_depth_not_6n_plus_4():
    with pytest.raises(ValueError, match="model.depth=18"):
        create_model("wide_resnet", 10, CIFAR, depth=18)


def test_c3_on_cifar100_is_c1_on_cifar10_with_a_100_way_classifier():
    c1 = [tuple(p.shape) for p in create_model("c1", 10, CIFAR).parameters()]
    c3 = [tuple(p.shape) for p in create_model("c3", 100, CIFAR).parameters()]
    assert c1[:-2] == c3[:-2]  # every layer below the classifier
    assert (c1[-2:], c3[-2:]) == ([(10, 192), (10,)], [(100, 192), (100,)])


def test_registry_lists_the_papers_networks():
    papers = {"f1", "c1", "c3", "resnet44", "vgg16_bn", "wrn16_4", "alexnet_bn", "resnet50"}
    assert papers <= set(list_models())
