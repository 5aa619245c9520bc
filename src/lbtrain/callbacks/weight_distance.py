"""||w_t - w_0||: how far the weights have travelled from their initialisation, every step.

The paper's evidence (Figure 2) is that this distance grows like log t during the high-LR
phase, with a slope that depends on the batch size. The authors logged it once per epoch
for the first layer only; this callback logs it for all trainable parameters after every
optimizer step t (t = 1, 2, ... = `trainer.global_step`), to every logger.
"""

import lightning as L
import torch
from torch import Tensor


class WeightDistance(L.Callback):
    """Logs `weight_distance` (and, with `per_layer`, `weight_distance/<layer>`) per step.

    The values stay on the device and reach the host once every `flush_every_n_steps`
    steps (and at each epoch end and checkpoint), each with its own step: no per-step sync.
    w_0 is saved in checkpoints, so a resumed run keeps measuring from the original
    initialisation. Under DDP the weights are identical on every rank: rank 0 logs.
    """

    def __init__(self, flush_every_n_steps: int = 100, per_layer: bool = False) -> None:
        if not flush_every_n_steps >= 1:
            raise ValueError(f"flush_every_n_steps={flush_every_n_steps} must be >= 1")
        self.flush_every_n_steps = flush_every_n_steps
        self.per_layer = per_layer
        self.w0: Tensor | None = None  # flat copy of the trainable parameters at step 0
        self.history: list[tuple[int, float]] = []  # (t, ||w_t - w_0||) already logged
        self._pending: list[tuple[int, Tensor]] = []  # on the device
        self._unlogged: list[tuple[int, dict]] = []  # in `history`, not yet with the loggers
        self._last_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        named = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]
        # Flat views share storage with the parameters, which optimizers update in place;
        # a channels_last weight has no flat view and is flattened at each step instead.
        self._views = [p.detach().view(-1) if p.is_contiguous() else p.detach() for _, p in named]
        flat = self._flatten()
        if self.w0 is None:
            self.w0 = flat.clone()
        else:  # restored from a checkpoint
            if self.w0.numel() != flat.numel():
                raise RuntimeError("weight_distance: checkpointed w_0 does not match the model")
            self.w0 = self.w0.to(flat.device, flat.dtype)
        self._last_step = trainer.global_step
        if self.per_layer:
            # the layer of a parameter is its module: "model.3.weight" -> "model.3"
            layers = [n.rsplit(".", 1)[0] for n, _ in named]
            self._layer_names = list(dict.fromkeys(layers))
            index = torch.cat(
                [torch.full((p.numel(),), self._layer_names.index(layer)) for (_, p), layer in
                 zip(named, layers, strict=True)]
            )  # fmt: skip
            self._layer_index = index.to(flat.device)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_step or not trainer.is_global_zero:
            return  # a gradient-accumulation micro-batch: no optimizer step was taken
        self._last_step = step
        with torch.no_grad():
            flat = self._flatten()
            if self.per_layer:
                sq = (flat - self.w0).square()
                sums = torch.zeros(len(self._layer_names), device=sq.device, dtype=sq.dtype)
                per_layer = sums.index_add_(0, self._layer_index, sq)
                value = torch.cat([per_layer.sum().view(1), per_layer]).sqrt()
            else:
                value = torch.dist(flat, self.w0)
        self._pending.append((step, value))
        if len(self._pending) >= self.flush_every_n_steps:
            self.flush(trainer)

    def _flatten(self) -> Tensor:
        return torch.cat([v if v.dim() == 1 else v.reshape(-1) for v in self._views])

    def _to_host(self) -> None:
        """Pending device values into the history (the one sync), queued for the loggers."""
        if not self._pending:
            return
        steps = [s for s, _ in self._pending]
        values = torch.stack([v for _, v in self._pending]).cpu().tolist()
        self._pending.clear()
        for step, value in zip(steps, values, strict=True):
            self.history.append((step, value[0] if self.per_layer else value))
            if self.per_layer:
                layers = zip(self._layer_names, value[1:], strict=True)
                metrics = {"weight_distance": value[0]} | {
                    f"weight_distance/{n}": v for n, v in layers
                }
            else:
                metrics = {"weight_distance": value}
            self._unlogged.append((step, metrics))

    def flush(self, trainer: L.Trainer) -> None:
        self._to_host()
        for step, metrics in self._unlogged:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
        self._unlogged.clear()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self.flush(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint) -> None:
        self.flush(trainer)  # the logs never lag behind a checkpoint a run may resume from

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self.flush(trainer)

    def state_dict(self) -> dict:
        # Lightning asks for this before `on_save_checkpoint`: the checkpoint must already
        # hold the pending values, or a run resumed from it would lack them
        self._to_host()
        w0 = self.w0.cpu() if self.w0 is not None else None
        return {"w0": w0, "history": list(self.history)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.w0 = state_dict["w0"]
        self.history = list(state_dict.get("history", []))
