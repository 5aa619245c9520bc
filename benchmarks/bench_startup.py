"""How long `python -m lbtrain.run` takes to answer when it trains nothing: a misspelt
option, a bad value, `--help`, against `python -c "import lightning"` (the floor of any
command that imports Lightning, as lbtrain did before it validated first).

Each command runs in a fresh interpreter, from a scratch working dir; the commands are
interleaved over `--repeats` rounds so that load on a shared machine hits them alike. The
median wall time is reported, with the range, and each command's ratio to the median of
`import lightning` in the same run. A last row times a real run up to its first trained
step's refusal point (a good config whose data is missing), which pays the imports once.

    python benchmarks/bench_startup.py             # about 1 min on 2 CPU cores
    python benchmarks/bench_startup.py --quick     # one round, a smoke test
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

RUN = [sys.executable, "-m", "lbtrain.run"]
COMMANDS = {
    'python -c "import lightning"': ([sys.executable, "-c", "import lightning"], 0),
    "lbtrain.run model=mpl (misspelt option)": ([*RUN, "model=mpl"], 2),
    "lbtrain.run optim.lr=fast (bad value)": ([*RUN, "optim.lr=fast"], 2),
    "lbtrain.run trainer.max_epochs=0 (out of range)": ([*RUN, "trainer.max_epochs=0"], 2),
    "lbtrain.run --help": ([*RUN, "--help"], 0),
    "lbtrain.run data=mnist, no files (good config)": ([*RUN, "data=mnist"], 2),
}
BASELINE = 'python -c "import lightning"'


def timed(command: list[str], expected: int, cwd: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != expected:
        sys.exit(f"bench_startup: {command} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one round")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as cwd:
        os.makedirs(f"{cwd}/data")  # data=mnist finds no files here: refused after building
        for _ in range(repeats):
            for name, (command, expected) in COMMANDS.items():
                times[name].append(timed(command, expected, cwd))
    base = statistics.median(times[BASELINE])
    print(f"startup, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"median of {repeats} (fresh interpreter each)")  # fmt: skip
    print("| command | median s | range s | x import lightning |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"| {name} | {median:.2f} | {min(ts):.2f}-{max(ts):.2f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
