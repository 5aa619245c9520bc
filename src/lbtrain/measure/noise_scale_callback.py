"""`noise_scale/b_simple` = tr(Sigma) / |G|^2 after steps 1, N + 1, 2N + 1, ... and the last,
with the EMAs it is the ratio of (`noise_scale/trace_sigma`, `noise_scale/grad_sq`) and the
SGD noise temperature of Smith & Le, `noise_scale/temperature` = lr N / (B (1 - momentum)).
The estimator, and why its two averages are kept apart: `lbtrain/measure/noise_scale.py`.

The two batch sizes come from the granularity the run already has (`granularity=auto`):
- "devices" (DDP): b = the per-device batch, B = the global batch. A DDP communication
  hook adds up each device's |g|^2 from the gradient buckets just before they are
  averaged, and one extra all-reduce of that number on measured steps gives their mean:
  almost free.
- "accumulation" (one device, trainer.accumulate_grad_batches > 1): b = the micro-batch, B = the
  accumulated batch; each micro-batch's gradient is read off the growing `.grad`, so the
  only cost is one flat copy of the gradient per micro-batch on measured steps.
- "chunks" (otherwise): before the measured step, a pass over the step's own batch in k
  chunks (b = chunk, B = the batch) takes the chunks' gradients with autograd.grad, so
  `.grad`, the weights, BatchNorm's running statistics and the random streams stay as
  they were: training does not see it. It costs about one more step per measurement.
  Under Ghost BN the chunks are the ghost batches, so the mean of the chunk gradients is
  exactly the gradient training takes. Under plain BatchNorm each chunk is normalised with
  its own statistics, as BN would normalise a batch of b: the estimate is then that of the
  same network trained with ghost batches of b, close to but not the trained network's.
With granularity=chunks under DDP, rank 0 measures with its own share (B = the per-device batch).
With batch augmentation (`batch_augment=M`) a batch holds M copies of each sample: its chunks
are then not independent draws, and the estimate mixes sample noise with augmentation noise.
Values stay on the device until `StepSeries` flushes them: no host sync per step.
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from lbtrain.lightning_internals import ddp_comm_hook, uncompiled
from lbtrain.measure.noise_scale import DebiasedEMA, pooled, two_batch_estimates
from lbtrain.measure.sharpness import buffers_kept
from lbtrain.measure.step_series import StepSeries, require

KEY = "callbacks.noise_scale"


class NoiseScale(StepSeries):
    name, sub_prefix = "noise_scale/b_simple", "noise_scale"
    each_micro_batch = True  # the granularity "accumulation" reads every micro-batch

    def __init__(
        self,
        every_n_steps: int = 200,
        chunks: int = 4,
        ema_decay: float = 0.8,
        granularity: str = "auto",
        pool_last: float = 0.5,
        flush_every_n_steps: int = 10,
    ) -> None:
        super().__init__(flush_every_n_steps, every_n_steps=every_n_steps)
        if granularity not in ("auto", *GRANULARITIES):
            choices = ", ".join(("auto", *GRANULARITIES))
            raise ValueError(f"granularity={granularity!r} is not one of {choices}")
        require(chunks >= 2, f"chunks={chunks} must be >= 2 (two batch sizes)")
        require(0 <= ema_decay < 1, f"ema_decay={ema_decay} must be in [0, 1)")
        require(0 < pool_last <= 1, f"pool_last={pool_last} must be in (0, 1]")
        self.chunks, self.granularity, self.pool_last = chunks, granularity, pool_last
        self.ema = DebiasedEMA(ema_decay)  # of [|G|^2, tr(Sigma)]
        self._ema_state: dict | None = None  # a checkpoint's EMA, until training starts
        self._single: Tensor | None = None  # this step's [|G|^2, tr(Sigma)], before the EMA
        self.singles: list[tuple[int, float, float]] = []  # (step, |G|^2, tr(Sigma)), host
        self.sub_names = ["trace_sigma", "grad_sq", "temperature", "grad_sq_single",
                          "trace_sigma_single"]  # fmt: skip

    def check_data(self, datamodule) -> None:
        # a probe: the data module may be the user's own (README, "Extend lbtrain")
        if not hasattr(type(datamodule), "num_train_samples"):
            raise ValueError(
                f"{KEY}: {type(datamodule).__name__} does not say how many training samples "
                "it has (`num_train_samples`), which the estimate needs"
            )

    def check_plan(self, plan, trainer: L.Trainer) -> None:
        """Refuse, before training, a run whose gradients the granularity cannot read at two
        batch sizes."""
        strategy = self._strategy(plan)
        if strategy.name != "chunks" and str(trainer.precision).startswith("16"):
            raise ValueError(
                f"{KEY}: granularity={strategy.name} reads the gradients fp16 scales; "
                "use trainer.precision=bf16-mixed or 32-true, or granularity=chunks"
            )
        strategy.check(plan, trainer)

    def _strategy(self, plan) -> "Granularity":
        name = self.granularity
        if name == "auto":
            name = "devices" if plan.world_size > 1 else "chunks"
            name = "accumulation" if plan.world_size == 1 and plan.accumulate > 1 else name
        return GRANULARITIES[name](self, plan)

    # --- set-up and what is logged ------------------------------------------------------
    def start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_data(trainer.datamodule)
        self.num_train = trainer.datamodule.num_train_samples
        self.check_plan(pl_module.plan, trainer)
        self.strategy = self._strategy(pl_module.plan)
        self.model = uncompiled(pl_module.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = trainer.optimizers[0]
        self._temperature = torch.zeros((), device=pl_module.device)
        self.every_rank = self.strategy.every_rank
        self.strategy.start(trainer, pl_module.device)
        if self._ema_state is not None:
            self.ema.load_state_dict(self._ema_state, pl_module.device)
            self._ema_state = None

    def measure(self, pl_module: L.LightningModule) -> Tensor:
        averages = self.ema.value()
        if averages is None:  # nothing measured yet (a step that could not be split)
            averages = torch.full((2,), float("nan"), device=pl_module.device)
        grad_sq, trace = averages
        single = self._single if self._single is not None else torch.full_like(averages, torch.nan)
        self._single = None  # the last step's value is the EMA's alone (on_train_end)
        return torch.stack([trace / grad_sq, trace, grad_sq, self._temperature, *single])

    def received(self, step: int, row: list[float]) -> None:
        if math.isfinite(row[4]) and math.isfinite(row[5]):
            self.singles.append((step, row[4], row[5]))

    def summary_entries(self, pl_module: L.LightningModule) -> dict:
        entries = super().summary_entries(pl_module)
        if not entries:
            return entries
        from_step = self.history[-1][0] * (1 - self.pool_last)
        window = [(g, t) for step, g, t in self.singles if step > from_step]
        pool = {f"noise_scale/pooled_{k}": v for k, v in pooled(window).items()} if window else {}
        return entries | pool | {"noise_scale/pooled_after_step": from_step,
                                 "noise_scale/granularity": self.strategy.name}  # fmt: skip

    def extra_state(self) -> dict:
        return {"ema": self.ema.state_dict(), "singles": list(self.singles)}

    def load_extra_state(self, state: dict) -> None:
        self._ema_state = state.get("ema")  # placed on the device when training starts
        self.singles = list(state.get("singles", []))  # none in a checkpoint from before

    # --- the measurement: the strategy reads the gradients, `update` averages -----------
    def takes(self, step: int) -> bool:
        # steps 1, N + 1, 2N + 1, ...: a run shorter than N steps still has a measurement
        return (step - 1) % self.every_n_steps == 0

    def before_step(self, trainer: L.Trainer, pl_module, batch) -> None:
        group = self.optimizer.param_groups[0]  # the LR and momentum of the coming update
        batch_size = len(batch[1]) * trainer.world_size * trainer.accumulate_grad_batches
        temperature = group["lr"] * self.num_train / (batch_size * (1 - group.get("momentum", 0)))
        self._temperature.fill_(temperature)  # a host number into a device tensor: no sync
        self.strategy.batch_start(*batch)

    def on_after_backward(self, trainer: L.Trainer, pl_module) -> None:
        self.strategy.after_backward(trainer)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module, optimizer) -> None:
        self.strategy.before_optimizer_step(trainer)

    def update(self, sq_small: Tensor, sq_big: Tensor, small: int, big: int) -> None:
        """One measurement: |g_b|^2 (averaged over the small batches) and |g_B|^2."""
        grad_sq, trace = two_batch_estimates(sq_small, sq_big, small, big, self.num_train)
        self._single = torch.stack([grad_sq, trace]).detach()
        self.ema.update(self._single)


class Granularity:
    """Where a measured step's gradients are read at two batch sizes (the module docstring
    says how each does it); each hands them to `NoiseScale.update`."""

    name: str
    every_rank = False  # whether every DDP rank takes part in a measurement (else rank 0)

    def __init__(self, noise: NoiseScale, plan) -> None:
        self.noise, self.plan = noise, plan
        self.micro: list[tuple[int, Tensor | None]] = []  # (size, |g_micro|^2) this step

    def check(self, plan, trainer: L.Trainer) -> None:
        """Raise ValueError (one line) where this run cannot be measured this way."""

    def start(self, trainer: L.Trainer, device: torch.device) -> None:
        """When training starts (again, after a resume), the model on `device`."""

    def batch_start(self, x: Tensor, y: Tensor) -> None:
        """A measured step's batch (each micro-batch's, under accumulation), before training."""
        self.micro.append((len(y), None))

    def after_backward(self, trainer: L.Trainer) -> None:
        """After each backward pass (each micro-batch's, under accumulation)."""

    def before_optimizer_step(self, trainer: L.Trainer) -> None:
        """Before the optimizer step, the step's gradient whole in `.grad`."""


class Chunks(Granularity):
    name = "chunks"

    @property
    def ghost(self) -> int | None:
        """Under GBN the chunks are the ghost batches: their gradients average to training's."""
        ghost = self.plan.ghost_batch_size
        return ghost if ghost and self.plan.micro_batch // ghost >= 2 else None

    def check(self, plan, trainer: L.Trainer) -> None:
        chunks = self.noise.chunks
        if plan.micro_batch < chunks:
            raise ValueError(
                f"{KEY}.chunks={chunks}: the per-device batch {plan.micro_batch} has fewer "
                "samples; use a larger batch_size or fewer chunks"
            )
        per_device = {plan.per_device_batch_at(p.start_epoch) for p in plan.phases}
        for batch in sorted(per_device or {plan.micro_batch}):
            size = batch * plan.batch_augment  # the samples a step's batch holds
            chunk = self.ghost or size // chunks
            if size % chunk:  # every measurement would be skipped: a series of NaN
                what = "ghost batches of" if self.ghost else f"{chunks} chunks of"
                raise ValueError(
                    f"{KEY}.chunks={chunks}: a per-device batch of {size} does not split "
                    f"into {what} {chunk}; use a batch_size it divides"
                )

    def batch_start(self, x: Tensor, y: Tensor) -> None:
        # the ghost batches, or `chunks` equal parts of this batch (which a batch-size
        # schedule grows: the chunks grow with it)
        chunk = self.ghost or len(y) // self.noise.chunks
        if len(y) % chunk or len(y) // chunk < 2:
            return  # e.g. the short last batch of an epoch: no two batch sizes
        model, params = self.noise.model, self.noise.params
        sq_small, total = 0.0, None
        with _untouched(model), torch.enable_grad():
            for xc, yc in zip(x.split(chunk), y.split(chunk), strict=True):
                loss = F.cross_entropy(model(xc), yc)
                g = _flat(torch.autograd.grad(loss, params, materialize_grads=True))
                sq_small = sq_small + g.square().sum()
                total = g if total is None else total + g
        k = len(y) // chunk
        self.noise.update(sq_small / k, (total / k).square().sum(), chunk, len(y))


class Accumulation(Granularity):
    name = "accumulation"

    def check(self, plan, trainer: L.Trainer) -> None:
        if plan.world_size > 1:
            raise ValueError(
                f"{KEY}.granularity=accumulation: under DDP the micro-batch gradients are per "
                "device and the last one global; use devices or chunks"
            )

    def start(self, trainer: L.Trainer, device: torch.device) -> None:
        self.previous: Tensor | None = None

    def after_backward(self, trainer: L.Trainer) -> None:
        if not self.micro:
            return
        # Lightning divides each micro-batch's loss by accumulate_grad_batches, so .grad
        # grows by g_micro / A per micro-batch and ends at the mean of the micro gradients
        params = self.noise.params
        now = _flat([p.grad if p.grad is not None else torch.zeros_like(p) for p in params])
        step = now if self.previous is None else now - self.previous
        self.previous = now
        size, _ = self.micro[-1]
        self.micro[-1] = (size, (trainer.accumulate_grad_batches * step).square().sum())

    def before_optimizer_step(self, trainer: L.Trainer) -> None:
        if not self.micro:
            return
        micro, self.micro, accumulated, self.previous = self.micro, [], self.previous, None
        sizes = {size for size, _ in micro}
        if len(micro) < 2 or len(sizes) > 1:  # one micro-batch, or unequal ones (epoch's end)
            return
        # a short accumulation at the epoch's end still divides by A: rescale to the mean
        mean = accumulated * (trainer.accumulate_grad_batches / len(micro))
        sq_small = torch.stack([sq for _, sq in micro]).mean()
        (size,) = sizes
        self.noise.update(sq_small, mean.square().sum(), size, size * len(micro))


class Devices(Granularity):
    name, every_rank = "devices", True

    def check(self, plan, trainer: L.Trainer) -> None:
        if plan.world_size == 1:
            raise ValueError(
                f"{KEY}.granularity=devices needs DDP on more than one device; use auto, "
                "chunks or accumulation"
            )
        if (hook := ddp_comm_hook(trainer.strategy)) is not None:
            # torch's DDP takes one hook, and this mode measures through one; the user's hook
            # may be any callable (a functools.partial has no __qualname__)
            raise ValueError(
                f"{KEY}.granularity=devices: the DDP strategy already has a communication hook "
                f"({getattr(hook, '__qualname__', hook)}), and DDP takes only one; use "
                f"{KEY}.granularity=chunks"
            )

    def start(self, trainer: L.Trainer, device: torch.device) -> None:
        self.local_sq = torch.zeros((), device=device)  # this device's |g|^2
        trainer.strategy.model.register_comm_hook(self, _sum_local_squares)

    def before_optimizer_step(self, trainer: L.Trainer) -> None:
        if not self.micro:
            return
        micro, self.micro = self.micro, []
        local = sum(size for size, _ in micro)  # this device's samples in this step
        # the mean over devices of each one's |g_b|^2: a collective enqueued on every rank
        # (no barrier, no host sync; Lightning's strategy.reduce would add a barrier)
        sq_small = self.local_sq.clone()
        dist.all_reduce(sq_small)
        sq_small /= trainer.world_size
        self.local_sq.zero_()
        params = self.noise.params
        sq_big = _flat([p.grad for p in params if p.grad is not None]).square().sum()
        self.noise.update(sq_small, sq_big, local, local * trainer.world_size)


GRANULARITIES = {g.name: g for g in (Devices, Chunks, Accumulation)}


def _sum_local_squares(devices: Devices, bucket: dist.GradBucket) -> torch.futures.Future[Tensor]:
    """DDP communication hook: on measured steps, add this device's squared gradient norm
    (the bucket before averaging) to `local_sq`; then average as DDP always does."""
    if devices.micro:
        devices.local_sq += bucket.buffer().square().sum()
    return default_hooks.allreduce_hook(None, bucket)


def _flat(tensors) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


@contextmanager
def _untouched(model: nn.Module) -> Iterator[None]:
    """Runs a measurement pass without a trace in training: BatchNorm's running statistics
    (and any other buffer) are restored afterwards, and the random streams (dropout) are
    forked, so a run with the measurement trains bit for bit as one without it."""
    device = next(model.parameters()).device
    with buffers_kept(model), torch.random.fork_rng([device] if device.type == "cuda" else []):
        yield
