"""Per-step framework overhead: lbtrain's default run against a bare Lightning Trainer and a
plain PyTorch loop doing the same training (network, data order, optimizer, per-step
schedule, one validation pass per epoch). Goals: the default run at most 1.05x the bare
Trainer and at most 1.5x the plain loop.

    python benchmarks/bench_loop.py [--epochs 4] [--repeats 5] [overrides ...]

Each repeat runs every loop once, in turn; a ratio is taken within a repeat and its median
over the repeats is reported (this machine's speed drifts by tens of percent within a
minute, which a ratio within a repeat cancels). Timings cover fit() only. One more default
run, timed from inside, says where its time goes: each callback's hooks and each logger's
calls (logger calls made from a callback count for the logger), as a share of its fit().
"""

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections import defaultdict

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from lbtrain.config.command_line import compose_config
from lbtrain.config.validate import validate
from lbtrain.train.fit import build
from lbtrain.train.plan import make_scheduler


def optimizer_and_schedule(module, cfg, parameters, steps_per_epoch: int):
    optimizer = torch.optim.SGD(
        parameters, lr=module.plan.lr, momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
    )  # fmt: skip
    return optimizer, make_scheduler(optimizer, module.plan, steps_per_epoch)


def plain_loop(cfg, run_dir: str) -> float:
    """The same work in plain PyTorch, built from the same pieces as the Trainer runs."""
    _, module, dm = build(cfg, run_dir)
    dm.prepare_data()
    dm.setup("fit")
    model = module.model
    train, val = dm.train_dataloader(), dm.val_dataloader()
    optimizer, scheduler = optimizer_and_schedule(module, cfg, model.parameters(), len(train))
    start = time.perf_counter()
    for epoch in range(module.plan.epochs):
        train.epoch = lambda e=epoch: e
        model.train()
        loss_sum, correct_sum = torch.zeros(()), torch.zeros((), dtype=torch.long)
        for x, y in train:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss_sum += loss.detach() * len(y)  # the epoch's train loss and accuracy,
            correct_sum += (logits.argmax(1) == y).sum()  # kept on the device as Lightning does
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum() for x, y in val)
        # the epoch's metrics reach the host once, as the Trainer's epoch-end log does
        float(correct), float(loss_sum), float(correct_sum)
    return time.perf_counter() - start


class BareModule(L.LightningModule):
    """The plain loop's step as a LightningModule: no metrics objects, no logging."""

    def __init__(self, module, cfg) -> None:
        super().__init__()
        self.model, self.module, self.cfg = module.model, [module], cfg  # [ ]: not a submodule

    def on_train_epoch_start(self) -> None:
        self.loss_sum, self.correct_sum = torch.zeros(()), torch.zeros((), dtype=torch.long)
        self.correct = torch.zeros((), dtype=torch.long)

    def training_step(self, batch, batch_idx: int):
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self.loss_sum += loss.detach() * len(y)
        self.correct_sum += (logits.argmax(1) == y).sum()
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.correct += (self.model(x).argmax(1) == y).sum()

    def on_validation_epoch_end(self) -> None:
        float(self.correct), float(self.loss_sum), float(self.correct_sum)

    def configure_optimizers(self):
        self.trainer.estimated_stepping_batches  # noqa: B018  sets num_training_batches
        steps = self.trainer.num_training_batches
        optimizer, scheduler = optimizer_and_schedule(
            self.module[0], self.cfg, self.parameters(), steps
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def bare_trainer(epochs: int, cfg, run_dir: str) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs, logger=False, callbacks=[], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        log_every_n_steps=cfg.trainer.log_every_n_steps, default_root_dir=run_dir,
    )  # fmt: skip


def bare_loop(cfg, run_dir: str, lbtrain_module: bool = False) -> float:
    _, module, dm = build(cfg, run_dir)
    dm.prepare_data()
    trainer = bare_trainer(module.plan.epochs, cfg, run_dir)
    start = time.perf_counter()
    trainer.fit(module if lbtrain_module else BareModule(module, cfg), datamodule=dm)
    return time.perf_counter() - start


def lightning_loop(cfg, run_dir: str, parts: dict | None = None) -> float:
    trainer, module, dm = build(cfg, run_dir)
    dm.prepare_data()  # the data set is generated once, outside the timings
    for logger in trainer.loggers:
        logger.experiment  # noqa: B018  W&B starts its run here, before fit(), as run.py does
    if parts is not None:
        time_parts(trainer, parts)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return time.perf_counter() - start


def time_parts(trainer: L.Trainer, spent: dict) -> None:
    """Wrap each hook a callback defines and each logger call with a timer adding its time,
    less the time of timed calls inside it, to `spent[<class name>]`."""
    running: list[str] = []

    def timed(name: str, fn):
        def call(*args, **kwargs):
            running.append(name)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                running.pop()
                spent[name] += elapsed
                if running:
                    spent[running[-1]] -= elapsed

        return call

    hooks = [h for h in vars(Callback) if h.startswith("on_") or h in ("setup", "teardown")]
    for callback in trainer.callbacks:
        for hook in hooks:
            fn = getattr(callback, hook)
            if callable(fn) and getattr(type(callback), hook) is not getattr(Callback, hook):
                setattr(callback, hook, timed(f"callback {type(callback).__name__}", fn))
    for logger in trainer.loggers:
        for method in (
            "log_metrics",
            "log_hyperparams",
            "save",
            "finalize",
            "after_save_checkpoint",
        ):
            name = f"logger {type(logger).__name__}"
            setattr(logger, method, timed(name, getattr(logger, method)))


def wandb_log_seconds(run_dir: str, calls: int = 500) -> float:
    """One `run.log` of a measurement row into an offline W&B run, outside any training,
    timed over `calls` calls (after as many for warm-up): what each row costs a step."""
    import wandb

    run = wandb.init(mode="offline", dir=run_dir, project="bench_loop")
    run.define_metric("trainer/global_step")  # as Lightning's WandbLogger defines them
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    row = {"weight_distance": 1.0, "angular_distance": 0.1}
    for step in range(calls):
        run.log({**row, "trainer/global_step": step})
    start = time.perf_counter()
    for step in range(calls, 2 * calls):
        run.log({**row, "trainer/global_step": step})
    seconds = (time.perf_counter() - start) / calls
    run.finish()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for lbtrain.run")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lbtrain").setLevel(logging.WARNING)

    loops = {  # name: (how, extra overrides)
        "plain PyTorch loop": (plain_loop, ["logger=none"]),
        "bare Trainer (same step, no metrics, loggers or callbacks)": (bare_loop, ["logger=none"]),
        "bare Trainer, lbtrain's module (torchmetrics, step logging)":
            (lambda c, d: bare_loop(c, d, lbtrain_module=True), ["logger=none"]),
        "default run, `logger=csv`": (lightning_loop, ["logger=csv"]),
        "default run (CSV + W&B offline, LR monitor, checkpoint, weight and angular distance, "
        "preemption)": (lightning_loop, []),
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in loops}
    spent: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory() as tmp:
        base = [
            f"trainer.max_epochs={args.epochs}",
            "trainer.enable_progress_bar=false",
            f"paths.data_dir={tmp}/data",
        ]

        def config(extra: list[str], run_dir: str):
            cfg = compose_config([*base, *extra, *args.overrides], run_dir)
            validate(cfg)
            return cfg

        for r in range(args.repeats):
            for i, (name, (loop, extra)) in enumerate(loops.items()):
                run_dir = f"{tmp}/{r}-{i}"
                times[name].append(loop(config(extra, run_dir), run_dir))
                if "wandb" in sys.modules:
                    sys.modules["wandb"].finish()
        fit = lightning_loop(config([], f"{tmp}/parts"), f"{tmp}/parts", spent)
        if "wandb" in sys.modules:
            sys.modules["wandb"].finish()
        wandb_call = wandb_log_seconds(f"{tmp}/wandb")

    plain, bare = times["plain PyTorch loop"], next(t for n, t in times.items() if "bare" in n)
    print(
        f"MNIST-1D default ({args.epochs} epochs, {args.repeats} repeats, "
        f"torch threads={torch.get_num_threads()}); ratios: median over repeats of the "
        "ratio within a repeat"
    )
    print("| loop | seconds (median) | vs plain loop | vs bare Trainer |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        vs_plain = statistics.median(t / p for t, p in zip(ts, plain, strict=True))
        vs_bare = statistics.median(t / b for t, b in zip(ts, bare, strict=True))
        print(f"| {name} | {statistics.median(ts):.2f} | {vs_plain:.2f}x | {vs_bare:.2f}x |")
    print(f"\nWhere one default run's fit() ({fit:.2f} s) goes, timed inside it:")
    print("| part | seconds | share of fit() |")
    print("|---|---|---|")
    for name, s in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {s:.3f} | {s / fit:.1%} |")
    rest = fit - sum(spent.values())
    rest_name = "the rest: Lightning's loop, lbtrain's module, the math"
    print(f"| {rest_name} | {rest:.3f} | {rest / fit:.1%} |")
    print(
        f"\nW&B `run.log` of one row, offline, outside training: {wandb_call * 1e3:.3f} ms a call"
    )


if __name__ == "__main__":
    main()
