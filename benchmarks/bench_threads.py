"""How many torch threads a CPU run should take: the default run (MNIST-1D, 2 epochs) with one
thread and with every core this process may use, each on an idle machine and beside one busy
process (a pure-Python loop taking one core, as another run or a notebook would).

torch's own default takes every core. Its threads meet at barriers each op, so when another
process takes one core, the thread that waits for it stalls the others (seen: 4.7 s against
0.74 s with one thread). `threads=auto` (conf/train.yaml), lbtrain's default, takes half the
cores, at least one: slack for one busy neighbour. Each configuration runs in a fresh
interpreter; the training time is the run's own (`summary.json`'s train_seconds), the median
over `--repeats` interleaved rounds, with the range, and the ratio to one thread on an idle
machine in the same run.

    python benchmarks/bench_threads.py             # about 2 min on 2 CPU cores
    python benchmarks/bench_threads.py --quick     # one round, a smoke test
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CORES = len(os.sched_getaffinity(0))
RUN = [sys.executable, "-m", "lbtrain.run", "trainer.max_epochs=2", "logger=csv"]
THREADS = {"1 thread": "threads=1", f"all {CORES} cores (torch's default)": f"threads={CORES}",
           f"auto ({max(1, CORES // 2)}, lbtrain's default)": "threads=auto"}  # fmt: skip
BASELINE = ("1 thread", "idle")


def train_seconds(threads: str, work: Path, n: int) -> float:
    run_dir = work / f"run{n}"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LBTRAIN_RUN_ID")}
    done = subprocess.run([*RUN, threads, f"hydra.run.dir={run_dir}",
                           f"paths.data_dir={work / 'data'}"], cwd=work, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"bench_threads: {threads} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return json.loads((run_dir / "summary.json").read_text())["train_seconds"]


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    times = {(t, load): [] for t in THREADS for load in ("idle", "beside a busy process")}
    with tempfile.TemporaryDirectory() as scratch:
        work, n = Path(scratch), 0
        train_seconds("threads=1", work, -1)  # the data set's cache, made once
        for _ in range(repeats):
            for (name, load), seconds in times.items():
                busy = None
                if load != "idle":
                    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                try:
                    seconds.append(train_seconds(THREADS[name], work, n))
                finally:
                    if busy:
                        busy.kill()
                        busy.wait()
                n += 1
    base = statistics.median(times[BASELINE])
    print(f"{cpu_model()}, {CORES} cores, torch threads per run;"
          f" median of {repeats} (range), training time only")  # fmt: skip
    print("| threads | machine | train time (s) | vs 1 thread, idle |\n|---|---|---|---|")
    for (name, load), seconds in times.items():
        m = statistics.median(seconds)
        print(
            f"| {name} | {load} | {m:.2f} ({min(seconds):.2f}-{max(seconds):.2f}) | "
            f"{m / base:.2f}x |"
        )


if __name__ == "__main__":
    main()
