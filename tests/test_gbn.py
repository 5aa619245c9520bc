"""Ghost Batch Normalization equals nn.BatchNorm applied to each ghost batch in turn.

The reference is a real nn.BatchNorm1d/2d run on consecutive chunks of the batch, which is
what the authors' code did (one forward per chunk). Every implementation path is forced in
turn, so these CPU tests also cover the fold that CUDA runs."""

import copy
import inspect
import re

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from lbtrain.train.gbn import GhostBatchNorm, convert_to_ghost_batchnorm

PATHS = ["fold", "loop", "auto"]
SHAPES = {  # (input shape, reference BatchNorm class)
    "1d_NC": ((10, 3), nn.BatchNorm1d),
    "1d_NCL": ((10, 3, 5), nn.BatchNorm1d),
    "2d_NCHW": ((10, 3, 4, 4), nn.BatchNorm2d),
}


def make_pair(
    bn_cls: type[nn.Module], ghost: int, path: str = "auto", **kwargs
) -> tuple[nn.Module, GhostBatchNorm]:
    """A reference BatchNorm and a GhostBatchNorm with identical, non-trivial state."""
    gen = torch.Generator().manual_seed(0)
    bn = bn_cls(3, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        if bn.weight is not None:
            bn.weight.copy_(torch.rand(3, generator=gen, dtype=torch.float64) + 0.5)
            bn.bias.copy_(torch.randn(3, generator=gen, dtype=torch.float64))
        if bn.running_mean is not None:
            # earlier training left running stats away from their (0, 1) start
            bn.running_mean.copy_(torch.randn(3, generator=gen, dtype=torch.float64))
            bn.running_var.copy_(torch.rand(3, generator=gen, dtype=torch.float64) + 0.5)
            bn.num_batches_tracked.fill_(5)
    gbn = GhostBatchNorm(3, ghost, dtype=torch.float64, implementation=path, **kwargs)
    gbn.load_state_dict(bn.state_dict())
    return bn, gbn


def forward_backward(
    module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor, ghost: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and input gradient; with `ghost`, `module` runs once per chunk of that size."""
    x = x.clone().requires_grad_(True)
    out = module(x) if ghost is None else torch.cat([module(c) for c in x.split(ghost)])
    out.backward(grad_out)
    return out.detach(), x.grad


def assert_same_state(bn: nn.Module, gbn: GhostBatchNorm) -> None:
    if bn.weight is not None:
        torch.testing.assert_close(gbn.weight.grad, bn.weight.grad)
        torch.testing.assert_close(gbn.bias.grad, bn.bias.grad)
    for name, buf in bn.named_buffers():
        torch.testing.assert_close(getattr(gbn, name), buf, msg=f"buffer {name} differs")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("batch", [12, 10], ids=["divisible", "short_last_ghost"])
@pytest.mark.parametrize("momentum", [0.1, None], ids=["ema", "cumulative"])
def test_gbn_equals_batchnorm_applied_to_each_ghost_batch(
    path: str, shape_name: str, batch: int, momentum: float | None
) -> None:
    shape, bn_cls = SHAPES[shape_name]
    shape = (batch, *shape[1:])
    bn, gbn = make_pair(bn_cls, ghost=4, path=path, momentum=momentum)
    gen = torch.Generator().manual_seed(1)
    for step in range(2):  # the second step starts from the state the first one left
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 1
        grad_out = torch.randn(shape, generator=gen, dtype=torch.float64)
        out_ref, grad_ref = forward_backward(bn, x, grad_out, ghost=4)
        out, grad = forward_backward(gbn, x, grad_out)
        torch.testing.assert_close(out, out_ref)
        torch.testing.assert_close(grad, grad_ref)
        assert_same_state(bn, gbn)
        # the step made one running-stat update per ghost batch, as the reference did
        assert gbn.num_batches_tracked.item() == 5 + (step + 1) * -(-batch // 4)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kwargs", [{"affine": False}, {"track_running_stats": False}])
def test_gbn_without_affine_or_running_stats_still_equals_per_ghost_batchnorm(
    path: str, kwargs: dict
) -> None:
    bn, gbn = make_pair(nn.BatchNorm2d, ghost=4, path=path, **kwargs)
    x = torch.randn(10, 3, 2, 2, dtype=torch.float64)
    grad_out = torch.randn_like(x)
    out_ref, grad_ref = forward_backward(bn, x, grad_out, ghost=4)
    out, grad = forward_backward(gbn, x, grad_out)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(grad, grad_ref)
    assert_same_state(bn, gbn)
    if not gbn.track_running_stats:  # no running stats: eval normalizes with batch stats too
        bn.eval()
        gbn.eval()
        with torch.no_grad():
            torch.testing.assert_close(gbn(x), torch.cat([bn(c) for c in x.split(4)]))


@pytest.mark.parametrize("path", PATHS)
def test_cumulative_average_from_a_fresh_layer_matches_batchnorm(path: str) -> None:
    bn = nn.BatchNorm1d(3, momentum=None, dtype=torch.float64)
    gbn = GhostBatchNorm(3, 4, momentum=None, dtype=torch.float64, implementation=path)
    x = torch.randn(10, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(gbn(x), torch.cat([bn(c) for c in x.split(4)]))
    assert_same_state(bn, gbn)


@pytest.mark.skipif(
    "bias" not in inspect.signature(nn.BatchNorm2d).parameters,
    reason="BatchNorm(bias=False) is newer than this torch",
)
def test_a_biasless_batchnorm_converts_to_a_biasless_ghost_batchnorm() -> None:
    bn = nn.BatchNorm2d(3, bias=False, dtype=torch.float64)
    reference = copy.deepcopy(bn)
    gbn = convert_to_ghost_batchnorm(bn, 4)
    assert gbn.bias is None and list(gbn.state_dict()) == list(reference.state_dict())
    x = torch.randn(10, 3, 2, 2, dtype=torch.float64)
    grad_out = torch.randn_like(x)
    out_ref, grad_ref = forward_backward(reference, x, grad_out, ghost=4)
    out, grad = forward_backward(gbn, x, grad_out)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(grad, grad_ref)
    torch.testing.assert_close(gbn.weight.grad, reference.weight.grad)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("momentum", [0.1, None], ids=["ema", "cumulative"])
def test_a_training_step_needs_no_host_sync(path: str, momentum: float | None) -> None:
    # Meta tensors have no values, so anything that reads one on the host (.item(), float(),
    # a data-dependent branch) raises; plain BatchNorm with momentum=None does, as a control.
    gbn = GhostBatchNorm(3, 4, momentum=momentum, device="meta", implementation=path)
    x = torch.empty(10, 3, 5, 5, device="meta", requires_grad=True)
    gbn(x).sum().backward()
    assert x.grad.shape == x.shape
    with pytest.raises(RuntimeError, match="meta"):
        nn.BatchNorm2d(3, momentum=None, device="meta")(x)


def test_ghost_batches_are_normalized_separately() -> None:
    # Not a tautology of the reference: two ghosts with very different means each come out
    # centred, which whole-batch BatchNorm would not do.
    gbn = GhostBatchNorm(2, ghost_batch_size=8, dtype=torch.float64, implementation="fold")
    x = torch.cat([torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2) + 10])
    out = gbn(x)
    torch.testing.assert_close(out[:8].mean(0), torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(out[8:].mean(0), torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("batch", [4, 3])
def test_batch_no_larger_than_ghost_is_plain_batchnorm(batch: int) -> None:
    bn, gbn = make_pair(nn.BatchNorm2d, ghost=4)
    x = torch.randn(batch, 3, 2, 2, dtype=torch.float64)
    grad_out = torch.randn_like(x)
    out_ref, grad_ref = forward_backward(bn, x, grad_out)
    out, grad = forward_backward(gbn, x, grad_out)
    assert torch.equal(out, out_ref) and torch.equal(grad, grad_ref)
    assert_same_state(bn, gbn)
    assert gbn.num_batches_tracked.item() == 6  # one batch, one update


@pytest.mark.parametrize("path", PATHS)
def test_eval_uses_running_stats_like_batchnorm(path: str) -> None:
    bn, gbn = make_pair(nn.BatchNorm2d, ghost=4, path=path)
    x = torch.randn(12, 3, 2, 2, dtype=torch.float64)
    bn.eval()
    gbn.eval()
    assert torch.equal(gbn(x), bn(x))
    assert gbn.num_batches_tracked.item() == 5  # evaluation leaves the statistics alone


def test_state_dict_is_batchnorms() -> None:
    bn, gbn = make_pair(nn.BatchNorm2d, ghost=4)
    assert list(gbn.state_dict()) == list(bn.state_dict())
    assert "ghost_batch_size=4" in repr(gbn)


def test_converted_resnet18_predicts_as_before_and_every_bn_is_ghost() -> None:
    torch.manual_seed(0)
    model = resnet18(num_classes=10)
    model.train()
    with torch.no_grad():  # a few training steps move the running stats off (0, 1)
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32))
    model.eval()
    model.layer1[0].bn1.weight.requires_grad_(False)
    x = torch.randn(4, 3, 32, 32)
    before = model(x)
    num_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    first_bn_weight = model.bn1.weight

    converted = convert_to_ghost_batchnorm(model, ghost_batch_size=4)

    assert torch.equal(converted(x), before)
    ghosts = [m for m in converted.modules() if isinstance(m, GhostBatchNorm)]
    assert len(ghosts) == num_bn == 20
    assert not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    assert all(m.ghost_batch_size == 4 and not m.training for m in ghosts)
    assert converted.bn1.weight is first_bn_weight  # an optimizer built earlier still works
    assert not converted.layer1[0].bn1.weight.requires_grad
    assert converted.bn1.num_batches_tracked.item() == 3


def test_convert_keeps_a_root_batchnorms_settings_and_mode() -> None:
    bn = nn.BatchNorm1d(3, eps=1e-3, momentum=None, dtype=torch.float64)
    bn.running_mean.fill_(2.0)
    converted = convert_to_ghost_batchnorm(bn, 2)
    assert isinstance(converted, GhostBatchNorm)
    assert (converted.eps, converted.momentum, converted.training) == (1e-3, None, True)
    assert converted.running_mean.dtype == torch.float64
    assert torch.equal(converted.running_mean, torch.full((3,), 2.0, dtype=torch.float64))


def test_convert_with_no_ghost_size_returns_the_module_unchanged() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    assert convert_to_ghost_batchnorm(model, None) is model
    assert type(model[1]) is nn.BatchNorm1d


def test_convert_refuses_sync_batchnorm() -> None:
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.SyncBatchNorm(3))
    with pytest.raises(ValueError, match=r"cannot be combined with sync_batchnorm: 1 is"):
        convert_to_ghost_batchnorm(model, 4)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_ghost_batch_size_must_be_a_positive_integer(bad: object) -> None:
    message = rf"^ghost_batch_size={re.escape(repr(bad))} must be a positive integer$"
    with pytest.raises(ValueError, match=message):
        GhostBatchNorm(3, bad)
    with pytest.raises(ValueError, match="must be a positive integer"):
        convert_to_ghost_batchnorm(nn.BatchNorm1d(3), bad)


def test_unknown_implementation_is_refused() -> None:
    with pytest.raises(ValueError, match=r"implementation='cuda' is not one of: auto, fold"):
        GhostBatchNorm(3, 4, implementation="cuda")


def test_input_must_be_n_c_and_spatial_dims() -> None:
    with pytest.raises(ValueError, match="2 to 5 dims, got 1"):
        GhostBatchNorm(3, 4)(torch.randn(3))


@pytest.mark.parametrize("path", ["fold", "loop"])
def test_running_statistics_under_bf16_autocast_match_float32(path):
    """bf16-mixed training must not round the running statistics: under CPU bf16 autocast
    they equal the float32 ones to 1e-6."""
    x = torch.randn(256, 16, 4, 4) * 3 + 5
    reference, under_autocast = (GhostBatchNorm(16, 8, implementation=path) for _ in range(2))
    reference(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast(x)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(
            getattr(under_autocast, name), getattr(reference, name), rtol=1e-6, atol=1e-6
        )


def test_gbn_imports_nothing_from_the_config_layer():
    """gbn.py is the piece researchers copy into their own code: importing it loads neither
    lbtrain's config layer nor its registries."""
    import subprocess
    import sys

    code = "import sys, lbtrain.train.gbn; print(*(m for m in sys.modules if 'lbtrain' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "lbtrain.train.gbn" in loaded
    assert not loaded & {"lbtrain.config.validate", "lbtrain.models", "lbtrain.data", "lbtrain.run"}
