"""Overhead of the per-step measurements, weight and angular distance (goal: <= 1% of
training-step time).

    python benchmarks/bench_weight_distance.py [--repeats 3]

For the MNIST-1D default (both measurements) and for ResNet-44 at batch 128 (CIFAR-shaped
random data: only the step cost matters here; weight distance), trains the same steps with
and without the callback, interleaved,
and reports (a) the median fit() time ratio and (b) the callback's own hook time as a
fraction of the step time, measured inside the run. (b) is the precise number: (a) carries
the machine's noise, which on small CPU runs exceeds 1%.
"""

import argparse
import logging
import statistics
import tempfile
import time

import lightning as L
import torch

from lbtrain.callbacks.angular_distance import AngularDistance
from lbtrain.callbacks.weight_distance import WeightDistance
from lbtrain.config import compose_config
from lbtrain.data.in_memory import InMemoryLoader
from lbtrain.models import create_model
from lbtrain.module import Classifier
from lbtrain.run import build
from lbtrain.scaling import make_plan


def timed(measurement: type) -> type:
    """The real callback, with its per-step hook timed."""

    class Timed(measurement):
        hook_seconds = 0.0

        def on_train_batch_end(self, *args) -> None:
            start = time.perf_counter()
            super().on_train_batch_end(*args)
            self.hook_seconds += time.perf_counter() - start

    return Timed


def fit_mnist1d(tmp: str, steps: int, callbacks: list) -> float:
    cfg = compose_config(
        ["logger=csv", "callbacks=none", f"paths.data_dir={tmp}/data",
         f"trainer.max_steps={steps}", "trainer.enable_progress_bar=false",
         "trainer.limit_val_batches=0"], tmp
    )  # fmt: skip
    trainer, module, dm = build(cfg, tmp)
    trainer.callbacks.extend(callbacks)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return time.perf_counter() - start


def fit_resnet44(tmp: str, steps: int, callbacks: list) -> float:
    cfg = compose_config(["optim=sgd", "batch_size=128"], tmp)
    torch.manual_seed(0)
    x, y = torch.randn(steps * 128, 3, 32, 32), torch.randint(0, 10, (steps * 128,))
    module = Classifier(create_model("resnet44", 10, (3, 32, 32)), make_plan(cfg, 1), 10)
    trainer = L.Trainer(
        max_epochs=1, logger=L.pytorch.loggers.CSVLogger(tmp, name="r44"), callbacks=callbacks,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, log_every_n_steps=25, accelerator="cpu",
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(module, InMemoryLoader(x, y, 128, shuffle=True))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lbtrain").setLevel(logging.WARNING)
    cases = {  # the ResNet-44 case trains from a plain loader: angular distance needs a
        # data module (its input shape, to trace which weights feed a BatchNorm)
        "MNIST-1D cnn1d, batch 32": (fit_mnist1d, 1000, [WeightDistance, AngularDistance]),
        "ResNet-44, batch 128": (fit_resnet44, 8, [WeightDistance]),
    }
    print("| model | measurement | steps | step time | fit() with / without | hook / step time |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (fit, steps, measurements) in cases.items():
            fit(tmp, 2, [])  # warm-up: data generation, first-call allocations
            for measurement in measurements:
                base, withcb, hook = [], [], []
                for _ in range(args.repeats):
                    base.append(fit(tmp, steps, []))
                    cb = timed(measurement)()
                    withcb.append(fit(tmp, steps, [cb]))
                    hook.append(cb.hook_seconds)
                step = statistics.median(base) / steps
                ratio = statistics.median(withcb) / statistics.median(base)
                share = statistics.median(hook) / statistics.median(base)
                print(f"| {name} | {measurement.name} | {steps} | {step * 1e3:.2f} ms | "
                      f"{ratio:.3f}x | {share:.2%} |")  # fmt: skip


if __name__ == "__main__":
    main()
