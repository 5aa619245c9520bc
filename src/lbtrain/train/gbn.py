"""Ghost Batch Normalization (Hoffer et al. 2017) and the converter that puts it in a model.

A large batch of N samples is split into consecutive "ghost" batches of `ghost_batch_size`
samples, and each is normalized with its own mean and variance, so the normalization noise
of large-batch training matches small-batch training: N = 4096 with ghosts of 128 is
32 ghost batches per step, each as noisy as one small-batch step. Evaluation uses the
running statistics exactly as nn.BatchNorm does.

Speed, measured with `python benchmarks/bench_gbn.py` (forward + backward, float32):
- CPU (2 cores): a loop of one F.batch_norm per ghost batch costs about what one
  nn.BatchNorm2d over the whole batch does (median 1.07x over 18 noisy measurements);
  folding the ghosts into channels costs 1.9-3.3x (two transposing copies each way) and
  mean/var written with torch ops 2.8-4.9x. So CPU loops.
- CUDA: a per-ghost loop launches a kernel per ghost batch per direction, so the fold (one
  kernel whatever the number of ghosts) is used there: on an H200, 1.06x BatchNorm or
  faster, and 2.4-4x faster than the loop (`make bench-gpu`; the README's Benchmarks).
"""

from numbers import Integral
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

Implementation = Literal["auto", "fold", "loop"]
IMPLEMENTATIONS: tuple[str, ...] = ("auto", "fold", "loop")


def _check_positive_int(ghost_batch_size: object) -> int:
    # bool is an int subclass; `ghost_batch_size=True` is a config mistake, not a size of 1
    positive = isinstance(ghost_batch_size, Integral) and ghost_batch_size > 0
    if not positive or isinstance(ghost_batch_size, bool):
        raise ValueError(f"ghost_batch_size={ghost_batch_size!r} must be a positive integer")
    return int(ghost_batch_size)


def auto_implementation(device: torch.device) -> str:
    """The path implementation="auto" takes: "loop" on CPU, where it costs about what one
    BatchNorm call does and the fold's transposing copies cost ~2x; "fold" elsewhere, where
    one kernel beats 2 launches per ghost batch and direction."""
    return "loop" if device.type == "cpu" else "fold"


class GhostBatchNorm(_BatchNorm):
    """BatchNorm over (N, C, *spatial) inputs (what BatchNorm1d/2d/3d take) that, whenever it
    normalizes with batch statistics, does so per consecutive ghost batch of
    `ghost_batch_size` samples along dim 0.

    - Each ghost batch gets its own mean and biased variance; weight and bias are shared.
      A short last ghost batch (N not divisible by the ghost size) is normalized on its own.
    - A batch of at most `ghost_batch_size` samples is plain BatchNorm, as is evaluation
      with running statistics. Parameters and buffers are those of nn.BatchNorm, so state
      dicts load either way.
    - Running statistics follow the authors' code, which ran the model once per ghost batch:
      each ghost batch makes its own update, in order, with its unbiased variance, exactly as
      nn.BatchNorm applied to each ghost batch in turn. So `num_batches_tracked` grows by
      the number of ghost batches per step, and with momentum m a step of K ghost batches
      gives r <- (1-m)^K r + sum_k m (1-m)^(K-1-k) stat_k (computed in closed form, on
      device, without a host sync). momentum=None is the cumulative average over all ghost
      batches seen: r <- (n r + sum_k stat_k) / (n + K), n = `num_batches_tracked`.
      With momentum 0.1 and 32 ghosts a step, the running statistics thus weigh mostly the
      last ~10 ghost batches, as small-batch BN weighs its last ~10 steps.

    `implementation` picks how the ghost batches are normalized ("auto" picks by device):
    "loop" calls F.batch_norm once per ghost batch (fastest on CPU); "fold" reshapes
    (G*g, C, *S) to (g, G*C, *S) so one F.batch_norm call normalizes every (ghost, channel)
    pair (one kernel on accelerators, whatever the number of ghosts G).
    """

    def __init__(
        self,
        num_features: int,
        ghost_batch_size: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        implementation: Implementation = "auto",
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.ghost_batch_size = _check_positive_int(ghost_batch_size)
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation={implementation!r} is not one of: {', '.join(IMPLEMENTATIONS)}"
            )
        self.implementation = implementation

    def _check_input_dim(self, input: Tensor) -> None:
        if not 2 <= input.dim() <= 5:
            raise ValueError(f"expected a (N, C, *spatial) input of 2 to 5 dims, got {input.dim()}")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_batch_size={self.ghost_batch_size}"

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        # nn.BatchNorm normalizes with batch statistics in training, and in eval when it keeps
        # no running statistics; only then are there ghost batches to split into
        uses_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not uses_batch_stats or input.shape[0] <= self.ghost_batch_size:
            return super().forward(input)

        num_ghosts = -(-input.shape[0] // self.ghost_batch_size)  # the short last one counts
        update = self.training and self.track_running_stats
        # Each ghost's mean and unbiased variance land in a row of these: with momentum=1
        # F.batch_norm overwrites its "running" buffers with the batch statistics
        means = vars_ = None
        if update:
            means = self.running_mean.new_zeros(num_ghosts, self.num_features)
            vars_ = torch.zeros_like(means)

        impl = self.implementation
        impl = auto_implementation(input.device) if impl == "auto" else impl
        normalize = self._normalize_loop if impl == "loop" else self._normalize_fold
        out = normalize(input, means, vars_)
        if update:
            self._update_running_stats(means, vars_)
        return out

    def _batch_norm(
        self, x: Tensor, mean: Tensor | None, var: Tensor | None, num_ghosts: int = 1
    ) -> Tensor:
        """F.batch_norm with batch statistics, recording them into `mean`/`var` if given.

        With `num_ghosts` ghost batches folded into channels, weight and bias are repeated
        once per ghost; autograd sums their gradients back over the ghosts."""
        weight, bias = self.weight, self.bias
        if num_ghosts > 1:
            weight = weight.repeat(num_ghosts) if weight is not None else None
            bias = bias.repeat(num_ghosts) if bias is not None else None
        return F.batch_norm(x, mean, var, weight, bias, True, 1.0, self.eps)

    def _normalize_loop(self, x: Tensor, means: Tensor | None, vars_: Tensor | None) -> Tensor:
        # chunks along dim 0 are views of x: no input copy, one copy in cat (and its backward)
        outs = [
            self._batch_norm(
                chunk, None if means is None else means[k], None if vars_ is None else vars_[k]
            )
            for k, chunk in enumerate(x.split(self.ghost_batch_size))
        ]
        return torch.cat(outs)

    def _normalize_fold(self, x: Tensor, means: Tensor | None, vars_: Tensor | None) -> Tensor:
        g = self.ghost_batch_size
        num_full, rest = divmod(x.shape[0], g)
        n, c, spatial = num_full * g, x.shape[1], x.shape[2:]
        # (G*g, C, *S) -> (g, G*C, *S): ghost k's channel j becomes channel k*C + j, so one
        # call normalizes each (ghost, channel) pair over its g samples and spatial positions.
        # The transposes copy (and return a contiguous, not channels_last, output).
        folded = x[:n].reshape(num_full, g, c, *spatial).transpose(0, 1).reshape(g, -1, *spatial)
        full_means = None if means is None else means[:num_full].view(-1)
        full_vars = None if vars_ is None else vars_[:num_full].view(-1)
        out = self._batch_norm(folded, full_means, full_vars, num_full)
        out = out.reshape(g, num_full, c, *spatial).transpose(0, 1).reshape(n, c, *spatial)
        if rest == 0:
            return out
        # the short last ghost batch cannot share the fold's shape: its own call, last row
        last = self._batch_norm(
            x[n:], None if means is None else means[-1], None if vars_ is None else vars_[-1]
        )
        return torch.cat([out, last])

    @torch.no_grad()
    def _update_running_stats(self, means: Tensor, vars_: Tensor) -> None:
        """Apply the K sequential per-ghost updates of nn.BatchNorm at once (rows in order)."""
        k = means.shape[0]
        if self.momentum is None:
            # cumulative average: n earlier batches plus these k, weighted equally
            n = self.num_batches_tracked
            self.running_mean.mul_(n).add_(means.sum(0)).div_(n + k)
            self.running_var.mul_(n).add_(vars_.sum(0)).div_(n + k)
        else:
            m = self.momentum
            # the newest ghost weighs m, each earlier one (1 - m) times less than the next
            age = torch.arange(k - 1, -1, -1, device=means.device, dtype=means.dtype)
            weights = (m * (1.0 - m) ** age)[:, None]
            # a weighted sum, not `weights @ means`: autocast would run a matmul in bf16
            self.running_mean.mul_((1.0 - m) ** k).add_((weights * means).sum(0))
            self.running_var.mul_((1.0 - m) ** k).add_((weights * vars_).sum(0))
        self.num_batches_tracked.add_(k)


def convert_to_ghost_batchnorm(module: nn.Module, ghost_batch_size: int | None) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d in `module` (the root included) by a GhostBatchNorm.

    Shaped like nn.SyncBatchNorm.convert_sync_batchnorm: returns the converted module, and
    the new layers share the old parameters and buffers (same tensors, so requires_grad,
    device, dtype and an optimizer built earlier all carry over) and training mode.
    `ghost_batch_size=None` means no GBN and returns `module` unchanged."""
    if ghost_batch_size is None:
        return module
    return _convert(module, _check_positive_int(ghost_batch_size), prefix="")


def _convert(module: nn.Module, ghost_batch_size: int, prefix: str) -> nn.Module:
    if isinstance(module, nn.SyncBatchNorm):
        # SyncBatchNorm pools statistics across devices; ghost batches split them further.
        # The two ask for opposite things, so refuse rather than pick one silently.
        raise ValueError(
            f"ghost_batch_size={ghost_batch_size}: ghost batch norm cannot be combined with "
            f"sync_batchnorm: {prefix or 'the model'} is an nn.SyncBatchNorm; use "
            "ghost_batch_size=null or sync_batchnorm=false"
        )
    converted = module
    if isinstance(module, _BatchNorm):
        converted = GhostBatchNorm(
            module.num_features,
            ghost_batch_size,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        # the same Parameter objects (a bias=False BatchNorm of newer torch stays bias-less)
        converted.weight, converted.bias = module.weight, module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.training = module.training
    for name, child in module.named_children():
        child_prefix = f"{prefix}.{name}" if prefix else name
        converted.add_module(name, _convert(child, ghost_batch_size, child_prefix))
    return converted
