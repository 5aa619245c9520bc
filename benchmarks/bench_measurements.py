"""Overhead of each measurement, as a ratio to the same run without it (goals: weight and
angular distance <= 1% of step time, noise scale <= 2%, sharpness and batch sharpness <= 5%,
each at its default cadence; a measurement that is off costs nothing: it is not a callback
then).

    python benchmarks/bench_measurements.py [--repeats 3] [--steps 3750] [--only sharpness]

The MNIST-1D default trains its whole budget (3750 steps, no validation) without a
measurement and with each one alone, interleaved, `--repeats` times, and reports (a) the
median fit() time ratio and (b) the measurement's own hook time as a fraction of the run
without it, timed inside the run. (b) is the precise number: (a) carries the machine's
noise, which on small CPU runs exceeds the goals. ResNet-44 at batch 128 (CIFAR-shaped
random data: only the step cost matters) shows weight distance on a larger step.
"""

import argparse
import logging
import statistics
import tempfile
import time

import lightning as L
import torch

from lbtrain.config.command_line import compose_config
from lbtrain.data.in_memory import InMemoryLoader
from lbtrain.measure.angular_distance import AngularDistance
from lbtrain.measure.batch_sharpness import BatchSharpness
from lbtrain.measure.noise_scale_callback import NoiseScale
from lbtrain.measure.sharpness_callback import Sharpness
from lbtrain.measure.weight_distance import WeightDistance
from lbtrain.models import create_model
from lbtrain.train.fit import build
from lbtrain.train.module import Classifier
from lbtrain.train.optimizers import OptimizerSpec
from lbtrain.train.plan import make_plan

HOOKS = ("on_train_batch_start", "on_after_backward", "on_before_optimizer_step",
         "on_train_batch_end", "on_train_epoch_end", "on_train_end")  # fmt: skip


def timed(measurement: type) -> type:
    """The real callback, with the time spent in its training hooks added up."""

    def timing(hook: str):
        def run(self, *args) -> None:
            start = time.perf_counter()
            getattr(measurement, hook)(self, *args)
            self.hook_seconds += time.perf_counter() - start

        return run

    return type(measurement.__name__, (measurement,),
                {"hook_seconds": 0.0, **{hook: timing(hook) for hook in HOOKS}})  # fmt: skip


def at_each_step(measurement: type) -> type:
    """A weight series with its arithmetic at every step, as a model too large to keep copies
    of its weights until the flush gets it (lbtrain.measure.weight_distance.DEFER_BYTES)."""

    def track(self, named) -> None:
        measurement.track(self, named)
        self.deferred = False

    return type(measurement.__name__, (measurement,), {"track": track, "label": "at each step"})


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
    plan = make_plan(cfg, 1)
    module = Classifier(create_model("resnet44", 10, (3, 32, 32)), plan, 10,
                        OptimizerSpec.from_config(cfg.optim, plan))  # fmt: skip
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
    parser.add_argument("--only", help="the measurements whose name contains this")
    parser.add_argument(
        "--steps", type=int, default=3750, help="MNIST-1D steps (default: 30 epochs)"
    )
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lbtrain").setLevel(logging.WARNING)
    cases = {  # the ResNet-44 case trains from a plain loader: angular distance needs a
        # data module (its input shape, to trace which weights feed a BatchNorm)
        "MNIST-1D cnn1d, batch 32": (
            fit_mnist1d,
            args.steps,
            [
                WeightDistance,
                at_each_step(WeightDistance),
                AngularDistance,
                at_each_step(AngularDistance),
                NoiseScale,
                Sharpness,
                BatchSharpness,
            ],
        ),
        "ResNet-44, batch 128": (fit_resnet44, 8, [WeightDistance]),
    }
    print("| model | measurement | cadence | steps | step time | fit() with / without "
          "| hook time / run without |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (fit, steps, measurements) in cases.items():
            measurements = [m for m in measurements if (args.only or "") in m.name]
            if not measurements:
                continue
            fit(tmp, 2, [])  # warm-up: data generation, first-call allocations
            base, runs = [], {m: ([], []) for m in measurements}
            for _ in range(args.repeats):  # interleaved: drifts in the machine hit all alike
                base.append(fit(tmp, steps, []))
                for measurement, (times, hooks) in runs.items():
                    callback = timed(measurement)()
                    times.append(fit(tmp, steps, [callback]))
                    hooks.append(callback.hook_seconds)
            without = statistics.median(base)
            for measurement, (times, hooks) in runs.items():
                every = measurement().every_n_steps
                label = measurement.name
                if hasattr(measurement, "label"):
                    label += f" ({measurement.label})"
                print(f"| {name} | {label} | every {every} steps | {steps} | "
                      f"{without / steps * 1e3:.2f} ms | {statistics.median(times) / without:.3f}x"
                      f" | {statistics.median(hooks) / without:.2%} |")  # fmt: skip


if __name__ == "__main__":
    main()
