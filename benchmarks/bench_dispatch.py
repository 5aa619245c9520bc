"""Lightning's per-step bookkeeping that lbtrain trims: the per-batch callback hooks of the
default run's callbacks, with and without `skip_undefined_batch_hooks`, and the setting of
the module's `_current_fx_name`, through `nn.Module.__setattr__` and through lbtrain's
Classifier. Microseconds, best of 5 loops of `--n` calls.

    python benchmarks/bench_dispatch.py [--n 2000]
"""

import argparse
import logging
import tempfile
import time

import lightning as L
from lightning.pytorch.trainer import call

import lbtrain.training
from lbtrain.config import compose_config, validate
from lbtrain.module import Classifier

PER_STEP = (("on_train_batch_start", (None, 0)), ("on_before_backward", (None,)),
            ("on_after_backward", ()), ("on_before_optimizer_step", (None,)),
            ("on_before_zero_grad", (None,)), ("on_train_batch_end", (None, None, 0)))  # fmt: skip


def best_of_5(fn, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def dispatch_us(skip: bool, n: int, tmp: str) -> float:
    """Lightning's dispatch of one step's per-batch hooks to the default run's callbacks,
    the hooks' own work left out (each callback's hooks are swapped for no-ops)."""
    cfg = compose_config(["logger=csv", f"paths.data_dir={tmp}/data"], tmp)
    validate(cfg)
    real = lbtrain.training.skip_undefined_batch_hooks
    lbtrain.training.skip_undefined_batch_hooks = real if skip else (lambda callbacks: None)
    try:
        trainer, module, _ = lbtrain.training.build(cfg, tmp)
    finally:
        lbtrain.training.skip_undefined_batch_hooks = real
    trainer.strategy.connect(module)
    for callback in trainer.callbacks:
        for hook, _ in PER_STEP:
            if callable(getattr(callback, hook)):
                setattr(callback, hook, lambda *args: None)

    def step() -> None:
        for hook, args in PER_STEP:
            call._call_callback_hooks(trainer, hook, *args)

    return best_of_5(step, n)


def setattr_us(module, n: int) -> float:
    def set_name() -> None:
        module._current_fx_name = "on_train_batch_start"

    return best_of_5(set_name, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lbtrain").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        every, defined = dispatch_us(False, args.n, tmp), dispatch_us(True, args.n, tmp)
    classifier = Classifier.__new__(Classifier)
    L.LightningModule.__init__(classifier)  # the class's __setattr__, without a model
    print("| what | us |")
    print("|---|---|")
    print(f"| one step's per-batch hooks, every hook of the 7 default callbacks | {every:.1f} |")
    print(f"| the same, only the hooks a callback defines | {defined:.1f} |")
    print(f"| `_current_fx_name` set, nn.Module.__setattr__ | "
          f"{setattr_us(L.LightningModule(), args.n * 50):.2f} |")  # fmt: skip
    print(f"| `_current_fx_name` set, lbtrain's Classifier | "
          f"{setattr_us(classifier, args.n * 50):.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
