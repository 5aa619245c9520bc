"""Lightning calls only the per-batch hooks a callback defines (lbtrain.callbacks.dispatch):
every hook a callback defines, lbtrain's, Lightning's or a user's, is still called at every
step; the calls to the base class's no-ops are gone."""

from collections import Counter
from contextlib import contextmanager

import lightning as L
from lightning.pytorch.profilers import PassThroughProfiler

from lbtrain.callbacks.dispatch import PER_BATCH_HOOKS
from lbtrain.config import compose_config
from lbtrain.training import build


class CountHooks(L.Callback):
    """A user's callback, configured like any other (`+callbacks.count=...`)."""

    def __init__(self) -> None:
        self.calls = Counter()

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.calls["on_before_backward"] += 1

    def on_train_batch_end(self, trainer, *args) -> None:
        self.calls["on_train_batch_end"] += 1


class CountCallbackCalls(PassThroughProfiler):
    """Lightning wraps each callback hook call in `profiler.profile("[Callback]<key>.<hook>")`."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = Counter()

    @contextmanager
    def profile(self, action_name: str):
        self.calls[action_name] += 1
        yield


def test_only_the_per_batch_hooks_a_callback_defines_are_called(tmp_path, data_dir):
    cfg = compose_config(
        ["logger=csv", "trainer.max_epochs=1", "trainer.limit_train_batches=5",
         "trainer.limit_val_batches=2", f"paths.data_dir={data_dir}",
         "+callbacks.count._target_=test_dispatch.CountHooks"],
        str(tmp_path),
    )  # fmt: skip
    trainer, module, dm = build(cfg, tmp_path)
    trainer.profiler = counter = CountCallbackCalls()
    trainer.fit(module, datamodule=dm)

    user = next(c for c in trainer.callbacks if isinstance(c, CountHooks))
    assert user.calls == {"on_before_backward": 5, "on_train_batch_end": 5}
    by_key = {c.state_key: type(c).__name__ for c in trainer.callbacks}
    called = {}
    for action, count in counter.calls.items():
        key, _, hook = action.removeprefix("[Callback]").rpartition(".")
        if action.startswith("[Callback]") and hook in PER_BATCH_HOOKS:
            called[f"{by_key[key]}.{hook}"] = count
    # per batch, the default callbacks and the user's get the calls to what they define,
    # at every step, and nothing else (before: 8 callbacks x 6 hooks a step)
    assert called == {
        "Preemption.on_train_batch_start": 5, "LearningRateMonitor.on_train_batch_start": 5,
        "CountHooks.on_before_backward": 5, "CountHooks.on_train_batch_end": 5,
        "WeightDistance.on_train_batch_end": 5, "AngularDistance.on_train_batch_end": 5,
        "MeasurementLog.on_train_batch_end": 5, "ModelCheckpoint.on_train_batch_end": 5,
    }  # fmt: skip
    assert "val/acc" in trainer.callback_metrics  # validation ran through its hooks too
