"""lbtrain on one GPU: ResNet-44 images/s, Trainer.fit against a plain loop, Ghost BN on
CUDA, host syncs per step, achieved FLOP/s. Without CUDA it says so in one line, exit 0.

    make bench-gpu                                   # = python benchmarks/bench_gpu.py
    python benchmarks/bench_gpu.py --steps 30        # more timed steps per measurement
    python benchmarks/bench_gpu.py --device cpu --quick --no-compile   # a smoke test on CPU

What it measures (CIFAR-shaped synthetic uint8 data held on the device, random crop + flip
and normalisation on the device, SGD + momentum, forward + backward + step):
1. images/s of ResNet-44 at B = 128, and at B = 4096 with ghost batches of 128, for eager
   fp32, bf16 autocast + channels_last, and the same under torch.compile;
2. lbtrain's `Trainer.fit` (callbacks and CSV logger as `make train` has them) against a
   plain PyTorch loop doing the same steps, per step, after warm-up;
3. Ghost BN's fold and loop paths and nn.BatchNorm2d, forward + backward (bench_gbn.py);
4. host syncs per training step inside `Trainer.fit`, counted by
   torch.cuda.set_sync_debug_mode("warn");
5. model FLOP/s (torch.utils.flop_counter) against the card's dense bf16 peak.
"""

import argparse
import logging
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from lbtrain.config.command_line import compose_config
from lbtrain.config.validate import validate
from lbtrain.data import register_datamodule
from lbtrain.data.augment import BatchTransform
from lbtrain.data.in_memory import InMemoryLoader
from lbtrain.data.vision import CIFAR10DataModule
from lbtrain.models import create_model
from lbtrain.train.fit import build
from lbtrain.train.gbn import auto_implementation, convert_to_ghost_batchnorm
from lbtrain.train.plan import make_scheduler

sys.path.insert(0, str(Path(__file__).parent))
from bench_gbn import SHAPES, print_table, time_shape  # noqa: E402

# dense bf16 tensor-core peaks from the vendors' data sheets (SXM parts), FLOP/s
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}
CIFAR = (3, 32, 32)


@register_datamodule("synthetic_cifar")
class SyntheticCIFAR(CIFAR10DataModule):
    """CIFAR-10's data module (loader, on-device crop + flip) on random uint8 images."""

    def __init__(self, data_dir: str, batch_size: int, num_samples: int = 50_000, **kwargs):
        super().__init__(data_dir, batch_size, **kwargs)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 256, (num_samples, *CIFAR), dtype=torch.uint8, generator=g)
        self.y = torch.randint(0, 10, (num_samples,), generator=g)
        self.x_test, self.y_test = self.x[:1000], self.y[:1000]

    def check(self) -> None:
        pass

    def prepare_data(self) -> None:
        pass

    def setup(self, stage: str | None = None) -> None:
        pass


def timed_steps(step, warmup: int, steps: int, device: str) -> float:
    """Seconds for `steps` calls of step(i) after `warmup` untimed ones (compiles there)."""
    for i in range(warmup):
        step(i)
    sync(device)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    sync(device)
    return time.perf_counter() - start


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def throughput(batch: int, ghost, variant: str, args) -> tuple[float, float]:
    """(images/s, model FLOPs per step) of plain-PyTorch training steps."""
    torch.manual_seed(0)
    device = args.device
    model = convert_to_ghost_batchnorm(create_model("resnet44", 10, CIFAR), ghost).to(device)
    bf16, compiled = variant != "eager fp32", "compile" in variant
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    n = max(4 * batch, 10_000)
    x_all = torch.randint(0, 256, (n, *CIFAR), dtype=torch.uint8, device=device)
    y_all = torch.randint(0, 10, (n,), device=device)
    transform = BatchTransform(CIFAR10DataModule.mean, CIFAR10DataModule.std, augment=True)

    def step(i: int) -> None:
        idx = torch.randint(0, n, (batch,), device=device)
        x = transform(x_all[idx], 0, 0, i)
        if bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x), y_all[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    flops = 0.0
    if variant == "eager fp32":  # the model's arithmetic, whatever runs it
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            step(0)
        flops = counter.get_total_flops()
    seconds = timed_steps(step, args.warmup, args.steps, device)
    return batch * args.steps / seconds, flops


class StepClock(L.Callback):
    """Times steps [warmup, warmup + steps) of a fit and counts the host syncs in them."""

    def __init__(self, warmup: int, steps: int, device: str) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.seconds, self.syncs, self._record = 0.0, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            sync(self.device)
            self._start = time.perf_counter()
            if self.device == "cuda":
                self._record = warnings.catch_warnings(record=True)
                self.syncs = self._record.__enter__()
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.warmup + self.steps - 1:
            if self._record is not None:
                torch.cuda.set_sync_debug_mode("default")
                self._record.__exit__(None, None, None)
            sync(self.device)
            self.seconds = time.perf_counter() - self._start


def fit_against_plain(args, tmp: str) -> dict[str, float]:
    """Per-step seconds of lbtrain's Trainer.fit and of a plain loop on the same work."""
    total = args.warmup + args.steps
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    overrides = [
        "model=resnet44", "data=cifar10", "data.name=synthetic_cifar", "optim=resnet_cifar",
        f"batch_size={args.batches[0]}", "logger=csv", f"trainer.accelerator={accelerator}",
        "trainer.max_epochs=1", f"trainer.limit_train_batches={total}",
        "trainer.limit_val_batches=0", f"paths.data_dir={tmp}/data",
    ]  # fmt: skip
    cfg = compose_config(overrides, f"{tmp}/fit")
    validate(cfg)
    trainer, module, dm = build(cfg, f"{tmp}/fit")
    clock = StepClock(args.warmup, args.steps, args.device)
    trainer.callbacks.append(clock)
    trainer.fit(module, datamodule=dm)

    _, module, dm = build(cfg, f"{tmp}/plain")
    model = module.model.to(args.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=module.plan.lr, momentum=0.9,
                                weight_decay=cfg.optim.weight_decay)  # fmt: skip
    scheduler = make_scheduler(optimizer, module.plan, total)
    transform = BatchTransform(dm.mean, dm.std, augment=True)
    loader = InMemoryLoader(dm.x.to(args.device), dm.y.to(args.device), dm.batch_size,
                            shuffle=True, transform=transform)  # fmt: skip
    batches = iter(loader)

    def step(i: int) -> None:
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

    plain = timed_steps(step, args.warmup, args.steps, args.device)
    # the mode's own notice ("... is a prototype feature ...") is not a sync
    syncs = [w for w in clock.syncs if "called a synchronizing" in str(w.message)]
    sites = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
    return {
        "fit": clock.seconds / args.steps,
        "plain": plain / args.steps,
        "syncs per step": len(syncs) / args.steps,
        "sites": ", ".join(f"{site} x{n}" for site, n in sites.most_common(5)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--quick", action="store_true", help="tiny batches, 2 steps: smoke test")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: skipped: no CUDA device on this machine (run it where there is one)")
        return 0
    args.batches = [(8, None), (32, 8)] if args.quick else [(128, None), (4096, 128)]
    if args.quick:
        args.steps, args.warmup = 2, 1
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lbtrain"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")

    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    print(f"{name}, torch {torch.__version__}, {args.steps} timed steps after {args.warmup}\n")

    variants = ["eager fp32", "bf16 + channels_last"]
    variants += [] if args.no_compile else ["bf16 + channels_last + compile"]
    print("| ResNet-44 training step | batch | ghost | images/s | TFLOP/s | of bf16 peak |")
    print("|---|---|---|---|---|---|")
    for batch, ghost in args.batches:
        flops = 0.0
        for variant in variants:
            rate, counted = throughput(batch, ghost, variant, args)
            flops = counted or flops
            tflops = flops / batch * rate / 1e12
            share = f"{tflops * 1e12 / peak:.1%}" if peak else "n/a"
            print(
                f"| {variant} | {batch} | {ghost or '-'} | {rate:,.0f} | {tflops:.1f} | {share} |"
            )

    with tempfile.TemporaryDirectory() as tmp:
        args.batches = [b for b, _ in args.batches]
        r = fit_against_plain(args, tmp)
    print(
        f"\nTrainer.fit vs plain loop (ResNet-44, batch {args.batches[0]}, eager fp32): "
        f"{r['fit'] * 1e3:.2f} ms vs {r['plain'] * 1e3:.2f} ms per step = "
        f"{r['fit'] / r['plain']:.3f}x"
    )
    if args.device == "cuda":
        print(f"host syncs per training step in Trainer.fit: {r['syncs per step']:.2f}")
        if r["sites"]:
            print(f"  where: {r['sites']}")

    picked = auto_implementation(torch.device(args.device))
    rounds, min_run_time = (1, 0.05) if args.quick else (3, 0.2)
    shapes = SHAPES[-1:] if args.quick else SHAPES
    print(f"\nGhost BN, forward + backward, fp32 ('auto' picks {picked} here):")
    print_table({s: time_shape(s, picked, rounds, min_run_time, args.device) for s in shapes}, 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
