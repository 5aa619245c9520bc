"""Lightning calls only the per-batch hooks a callback defines.

Each training step Lightning calls six hooks (on_train_batch_start, on_before_backward,
on_after_backward, on_before_zero_grad, on_before_optimizer_step, on_train_batch_end) on
every callback, the base class's no-ops included, each inside a profiler context and after
building its name (a repr of ModelCheckpoint's settings): the default run's 7 callbacks
define 6 of those 42 calls. `_call_callback_hooks` skips a hook that is not callable, so a
per-batch hook a callback's class leaves as Callback's no-op is set to None on the instance.
Hooks called once per epoch or run stay as they are; so do callbacks added after the Trainer
is built (`configure_callbacks`), and any callback that defines a hook gets every call.
"""

from collections.abc import Iterable

from lightning.pytorch.callbacks import Callback

PER_BATCH_HOOKS = (
    "on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_zero_grad",
    "on_before_optimizer_step", "on_train_batch_end",
    *(f"on_{stage}_batch_{when}" for stage in ("validation", "test", "predict")
      for when in ("start", "end")),
)  # fmt: skip


def skip_undefined_batch_hooks(callbacks: Iterable[Callback]) -> None:
    for callback in callbacks:
        for name in PER_BATCH_HOOKS:
            if getattr(type(callback), name) is getattr(Callback, name):
                setattr(callback, name, None)
