"""Lightning overhead: the default `python -m lbtrain.run` training loop vs a plain PyTorch
loop doing the same work (same model, data order, optimizer, per-step schedule, one
validation pass per epoch). Goal: default run <= 1.2x the plain loop.

    python benchmarks/bench_loop.py [--epochs 4] [--repeats 3] [overrides ...]

Timings cover fit() only (after imports and set-up, which are paid once per run), repeated
and interleaved so that both loops see the same machine load; the median is reported.
"""

import argparse
import logging
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from lbtrain.config import compose_config, validate
from lbtrain.run import build


def plain_loop(cfg, run_dir: str) -> float:
    """The same work in plain PyTorch, built from the same pieces as the Trainer run."""
    _, module, dm = build(cfg, run_dir)
    dm.prepare_data()
    dm.setup("fit")
    model = module.model
    train, val = dm.train_dataloader(), dm.val_dataloader()
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=module.plan.lr,
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
    )
    from lbtrain.scaling import make_scheduler

    scheduler = make_scheduler(optimizer, module.plan, len(train))
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


def lightning_loop(cfg, run_dir: str) -> float:
    trainer, module, dm = build(cfg, run_dir)
    dm.prepare_data()  # the data set is generated once, outside the timings
    for logger in trainer.loggers:
        logger.experiment  # noqa: B018  W&B starts its run here, before fit(), as run.py does
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for lbtrain.run")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lbtrain").setLevel(logging.WARNING)

    variants = {
        "bare Trainer (no loggers, no callbacks)": ["logger=none", "callbacks=none"],
        "default run (CSV + W&B offline, LR monitor, checkpoint)": [],
    }
    times: dict[str, list[float]] = {"plain PyTorch loop": [], **{k: [] for k in variants}}
    with tempfile.TemporaryDirectory() as tmp:
        base = [
            f"trainer.max_epochs={args.epochs}",
            "trainer.enable_progress_bar=false",
            f"paths.data_dir={tmp}/data",
        ]
        for r in range(args.repeats):
            for name, extra in [("plain PyTorch loop", ["logger=none"]), *variants.items()]:
                cfg = compose_config([*base, *extra, *args.overrides], f"{tmp}/{r}-{len(name)}")
                validate(cfg)
                loop = plain_loop if name == "plain PyTorch loop" else lightning_loop
                times[name].append(loop(cfg, f"{tmp}/{r}-{len(name)}"))
            if "wandb" in __import__("sys").modules:
                __import__("wandb").finish()

    plain = statistics.median(times["plain PyTorch loop"])
    print(
        f"MNIST-1D default ({args.epochs} epochs, median of {args.repeats}, "
        f"torch threads={torch.get_num_threads()}):"
    )
    print("| loop | seconds | ratio vs plain |")
    print("|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.2f} | {statistics.median(ts) / plain:.2f}x |")


if __name__ == "__main__":
    main()
